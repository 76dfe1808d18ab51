#!/usr/bin/env python3
"""A socket-activated HTTP worker using only Python's standard library.

It follows systemd's protocols exactly, the way libsystemd does, so it runs
unmodified under systemd or under baton:

- the sockets are on fds 3.. and only if LISTEN_PID is this process's pid
  (sd_listen_fds(3)); anything else is refused;
- READY=1 goes to NOTIFY_SOCKET (a path, or "@name" for an abstract socket);
- SIGTERM stops accepting; the request in progress is finished first.
"""
import http.server
import os
import signal
import socket
import sys
import threading

SD_LISTEN_FDS_START = 3


def listen_fds():
    if os.environ.get("LISTEN_PID") != str(os.getpid()):
        sys.exit("LISTEN_PID=%r is not my pid %d: these sockets are not mine"
                 % (os.environ.get("LISTEN_PID"), os.getpid()))
    n = int(os.environ.get("LISTEN_FDS", "0"))
    if n < 1:
        sys.exit("no sockets in LISTEN_FDS")
    return [socket.socket(fileno=SD_LISTEN_FDS_START + i) for i in range(n)]


def sd_notify(state):
    addr = os.environ.get("NOTIFY_SOCKET")
    if not addr:
        return
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), addr)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("python worker slot %s pid %d\n"
                % (os.environ.get("BATON_WORKER", "?"), os.getpid())).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt, *args):
        pass


def main():
    sock = listen_fds()[0]
    server = http.server.HTTPServer(sock.getsockname(), Handler, bind_and_activate=False)
    server.socket.close()
    server.socket = sock

    def stop(signum, frame):
        threading.Thread(target=server.shutdown).start()

    signal.signal(signal.SIGTERM, stop)
    sd_notify("READY=1\nSTATUS=python worker serving")
    server.serve_forever()


if __name__ == "__main__":
    main()
