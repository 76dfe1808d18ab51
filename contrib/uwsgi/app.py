"""A WSGI app served by Debian's uwsgi (master and processes) under baton.

uwsgi takes systemd's sockets itself ("SystemD socket activation
detected") and its master sends READY=1 on NOTIFY_SOCKET. Its SIGTERM is
not a graceful stop: see uwsgi.ini for the two settings that make it one.

    baton run --workers 2 -- uwsgi --ini /srv/uwsgi/uwsgi.ini
"""
import os


def application(environ, start_response):
    # The pid baton lists is uwsgi's master, the parent of this process.
    body = ("uwsgi slot %s pid %d\n" % (os.environ.get("BATON_WORKER", "?"), os.getppid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
