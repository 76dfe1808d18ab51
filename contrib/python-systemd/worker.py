#!/usr/bin/python3
"""An HTTP worker using Debian's python3-systemd, the way a systemd service would.

systemd.daemon.listen_fds() returns the sockets only when LISTEN_PID is this
process (baton's shim makes it so); systemd.daemon.notify() sends READY=1 and
WATCHDOG=1 to the NOTIFY_SOCKET baton gave this worker. On SIGTERM it stops
accepting, finishes the requests in progress and exits.

    baton run --workers 4 --watchdog 10s -- /usr/bin/python3 worker.py
"""
import http.server
import os
import signal
import socket
import threading

from systemd import daemon


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("python-systemd slot %s pid %d\n" % (os.environ.get("BATON_WORKER", "?"), os.getpid())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def watchdog(stop):
    usec = int(os.environ.get("WATCHDOG_USEC", "0"))
    while usec and not stop.wait(usec / 2e6):
        daemon.notify("WATCHDOG=1")


def main():
    fds = daemon.listen_fds()
    if not fds:
        raise SystemExit("no sockets: run under baton or systemd socket activation")
    sock = socket.socket(fileno=fds[0])
    server = http.server.ThreadingHTTPServer(sock.getsockname()[:2], Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock
    server.daemon_threads = False  # shutdown waits for requests in progress
    stop = threading.Event()
    threading.Thread(target=watchdog, args=(stop,), daemon=True).start()

    def on_term(signum, frame):
        daemon.notify("STOPPING=1")
        stop.set()
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, on_term)
    daemon.notify("READY=1\nSTATUS=serving")
    server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
