# A twisted.web resource served by Debian's twistd under baton:
#
#   baton run --workers 2 --ready listening -- twistd3 --nodaemon --pidfile= -y /srv/twisted/serve.tac
#
# or, as plain `twistd web` (which loses the odd just-accepted connection at
# its stop, see serve.tac):
#
#   baton run --workers 2 --ready listening -- twistd3 --nodaemon --pidfile= web --listen systemd:domain=INET:index=0 --path /srv/twisted
#
# twistd takes systemd's socket through its systemd: endpoint and sends no
# READY=1: --ready listening. SIGTERM is its stop; under load it sometimes
# never finishes (reproduced without baton), which --drain-timeout bounds.
import os

from twisted.web.resource import Resource


class Page(Resource):
    isLeaf = True

    def render_GET(self, request):
        request.setHeader(b"content-type", b"text/plain")
        return ("twisted slot %s pid %d\n" % (os.environ.get("BATON_WORKER", "?"), os.getpid())).encode()


resource = Page()
