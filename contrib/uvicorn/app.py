"""An ASGI app served by uvicorn on baton's socket: `serve.py --fd 3 app:app`.

uvicorn takes fd 3 as is (it does not read LISTEN_FDS) and has no sd_notify
of its own, so the app says READY=1 from its lifespan startup, in uvicorn's
own process (the pid baton accepts it from). Connections that arrive before
uvicorn accepts wait in the socket's queue. SIGTERM is uvicorn's graceful
shutdown; serve.py, next to this file, is uvicorn with a shutdown that answers
the connections it already accepted (plain uvicorn resets those).

    baton run --workers 4 -- python3 /srv/uvicorn/serve.py --fd 3 --app-dir /srv/uvicorn app:app
"""
import os
import socket


def sd_notify(state):
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                sd_notify("READY=1\nSTATUS=uvicorn serving")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                sd_notify("STOPPING=1")
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = ("uvicorn slot %s pid %d\n" % (os.environ.get("BATON_WORKER", "?"), os.getpid())).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
