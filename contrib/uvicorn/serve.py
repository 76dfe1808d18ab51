"""uvicorn, with a graceful stop that answers what it has already accepted.

Run it in place of `python3 -m uvicorn`, with the same arguments:

    baton run --workers 4 -- python3 /srv/uvicorn/serve.py --fd 3 --app-dir /srv/uvicorn app:app

uvicorn's own shutdown (Server.shutdown, 0.17 and later) closes its listeners
and then, at once, closes every connection that has not delivered a whole
request yet. A connection the kernel handed over an instant before SIGTERM,
its request not read yet, is closed unanswered: the client sees a reset.
Measured under baton (compat/): one fresh request in a few rollouts.

This runner changes only that step: after closing the listeners it lets the
event loop go on reading, for up to GRACE seconds, while any connection has
no request yet. A request that arrives meanwhile is served, with keep-alive
off (uvicorn's shutdown sees a request in progress); a connection that sends
nothing in GRACE is closed as before. Then uvicorn's own shutdown runs.

GRACE is UVICORN_SHUTDOWN_GRACE in the environment (seconds, default 1).
"""
import asyncio
import importlib
import logging
import os

from uvicorn.server import Server

GRACE = float(os.environ.get("UVICORN_SHUTDOWN_GRACE", "1"))


class GracefulServer(Server):
    async def shutdown(self, sockets=None):
        for server in self.servers:
            server.close()  # no new connections; uvicorn's close below is then a no-op
        # A connection with no request cycle has not delivered a request yet.
        # Connections accepted just before the close join the set as the
        # loop runs their connection_made, so look again each round.
        loop = asyncio.get_running_loop()
        start = loop.time()
        seen = set()
        while True:
            pending = unread(self.server_state.connections)
            seen |= pending
            if not pending or loop.time() - start >= GRACE:
                break
            await asyncio.sleep(0.01)
        logging.getLogger("uvicorn.error").info(
            "Graceful stop: %d connection(s) without a request yet at the stop, %d still without one after %.0f ms",
            len(seen), len(pending), (loop.time() - start) * 1000)
        await super().shutdown(sockets)


def unread(connections):
    """The connections that have not delivered a whole request yet."""
    return {c for c in connections if getattr(c, "cycle", None) is None}


# The command line (uvicorn.main's click command) builds the Server named in
# its module: make that ours. The module, not `uvicorn.main`, which is the
# command itself (uvicorn/__init__.py imports it over the module's name).
cli = importlib.import_module("uvicorn.main")
cli.Server = GracefulServer

if __name__ == "__main__":
    cli.main()
