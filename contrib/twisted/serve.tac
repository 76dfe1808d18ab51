# twistd's web server with a graceful stop: run it in place of `twistd web`.
#
#   baton run --workers 2 --ready listening -- twistd3 --nodaemon --pidfile= -y /srv/twisted/serve.tac
#
# It serves this directory as `twistd web --path` does (index.rpy) on
# systemd's socket. twistd's own stop (SIGTERM) stops listening and then
# closes every connection: one accepted an instant before, its request
# still on the way, is closed unanswered (compat/: the odd fresh request
# lost at a rollout). Here the stop waits first: a connection that has not
# sent a request yet gets up to GRACE seconds to send one, which is
# answered; a request in progress is finished; an answered or idle
# kept-alive connection is closed once its answer is written. Then twistd's
# shutdown goes on as before. GRACE is
# TWISTED_SHUTDOWN_GRACE in the environment (seconds, default 1); baton's
# --drain-timeout bounds the whole stop.
import os

from twisted.application import service, strports
from twisted.internet import defer, reactor, task
from twisted.logger import Logger
from twisted.web import http, script, server, static

GRACE = float(os.environ.get("TWISTED_SHUTDOWN_GRACE", "1"))
log = Logger(namespace="serve.tac")
channels = set()


class Channel(http.HTTPChannel):
    """An HTTP connection that counts the requests it answered."""

    served = 0

    def connectionMade(self):
        super().connectionMade()
        channels.add(self)

    def requestDone(self, request):
        self.served += 1
        super().requestDone(request)

    def connectionLost(self, reason):
        channels.discard(self)
        super().connectionLost(reason)


class Drain(service.Service):
    """Stops after the listener: until each connection is answered or idle."""

    def stopService(self):
        super().stopService()
        start, fresh = reactor.seconds(), set()
        done = defer.Deferred()

        def look():
            waiting = False
            for ch in list(channels):
                if ch.requests:  # a request in progress: let it finish
                    waiting = True
                elif ch.served:
                    # Answered, and idle if kept alive: close it, as twistd
                    # would, and wait until it is closed. Its last answer
                    # may still be in twisted's write buffer (written at the
                    # reactor's next turn): the shutdown after the drain
                    # drops the connections left, unsent answers and all,
                    # which a client reads as EOF (one fresh request in a
                    # few runs of 12 rollouts on a loaded machine).
                    ch.transport.loseConnection()
                    waiting = True
                elif reactor.seconds() - start < GRACE:  # no request yet
                    fresh.add(ch)
                    waiting = True
            if not waiting:
                loop.stop()
                log.info("Graceful stop: {fresh} connection(s) without a request yet at the stop, "
                         "{left} still without one after {ms:.0f} ms",
                         fresh=len(fresh), left=sum(1 for ch in channels if not ch.served and not ch.requests),
                         ms=(reactor.seconds() - start) * 1000)
                done.callback(None)

        loop = task.LoopingCall(look)
        loop.start(0.01)
        return done


here = os.path.dirname(os.path.abspath(__file__))
root = static.File(here)
root.processors = {".rpy": script.ResourceScript}
root.indexNames = ["index.rpy"]
site = server.Site(root)
site.protocol = Channel  # plain HTTP/1.1 (no TLS, so no HTTP/2 to negotiate)

application = service.Application("web")
# A MultiService stops its children in reverse order: the drain is added
# first so that it starts once the listener has stopped accepting (its
# stopListening takes the socket out of the reactor at once). Added after
# it, the drain ran while the listener still accepted, and a connection
# accepted after the drain's last look was closed unanswered (one fresh
# request in 12 rollouts under load, in compat/).
Drain().setServiceParent(application)
strports.service("systemd:domain=INET:index=0", site).setServiceParent(application)
