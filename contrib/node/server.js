// An HTTP server in Node under baton: it listens on the socket baton passes as
// fd 3 and says READY=1 on its NOTIFY_SOCKET. Node has no unix datagram
// sockets of its own; unix-dgram (npm) provides them.
//
//   baton run --workers 4 -- node server.js
//
// On SIGTERM it stops accepting (the shared socket keeps its queue for the
// other workers), answers what is left with "Connection: close", closes idle
// kept-alive connections and exits when none is left.
'use strict';
const http = require('http');
const unix = require('unix-dgram');

function sdNotify(state) {
  let addr = process.env.NOTIFY_SOCKET;
  if (!addr) return;
  if (addr[0] === '@') addr = '\0' + addr.slice(1);
  const sock = unix.createSocket('unix_dgram');
  sock.on('error', (err) => console.error('notify:', err.message));
  sock.send(Buffer.from(state), 0, state.length, addr, () => sock.close());
}

let draining = false;
const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  res.end(`node slot ${process.env.BATON_WORKER} pid ${process.pid}\n`);
});

if (!process.env.LISTEN_FDS || process.env.LISTEN_PID !== String(process.pid)) {
  console.error('no sockets for me: run under baton or systemd socket activation');
  process.exit(1);
}
server.listen({ fd: 3 }, () => {
  console.log(`slot ${process.env.BATON_WORKER} pid ${process.pid} serving`);
  sdNotify('READY=1\nSTATUS=node serving');
});

const usec = Number(process.env.WATCHDOG_USEC || 0);
if (usec > 0) setInterval(() => sdNotify('WATCHDOG=1'), usec / 2000).unref();

process.on('SIGTERM', () => {
  draining = true;
  sdNotify('STOPPING=1');
  server.close(() => process.exit(0)); // also closes idle kept-alive connections (Node >= 19)
});
