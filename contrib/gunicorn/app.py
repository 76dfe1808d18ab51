"""A WSGI app served by gunicorn under baton, unmodified.

gunicorn takes systemd's sockets itself (LISTEN_FDS, checked against
LISTEN_PID, which baton's shim sets to gunicorn's own pid) and its arbiter
sends READY=1 to NOTIFY_SOCKET once booted. SIGTERM is gunicorn's graceful
stop: workers finish their requests, the shared socket keeps its queue for
the next generation. --preload makes READY=1 mean the app imported (without
it a release whose app fails at import looks ready: docs/workers.md).

    baton run --workers 2 -- gunicorn --preload --workers 2 --chdir /srv/app app:app
"""
import os


def app(environ, start_response):
    body = ("gunicorn slot %s pid %d\n" % (os.environ.get("BATON_WORKER", "?"), os.getppid())).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
