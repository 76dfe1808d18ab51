// The benchmark's HTTP worker in Node, for the scenarios that only run Node:
// PM2 cluster mode and the Node cluster rolling-restart pattern. It behaves
// as the Go example worker does: START_MS of start-up before it listens,
// WORK_MS per request, and on its stop signal it stops accepting, answers
// what is left with "Connection: close" and exits once its connections are
// gone (server.close also closes idle kept-alive ones, Node >= 19).
//
//   node app.js cluster   the Node cluster pattern: a primary forks WORKERS
//                         workers; on SIGHUP it replaces them one at a time
//                         (fork, wait for 'listening', disconnect the old,
//                         which drains on its own) and prints "rolled".
//   pm2 start app.js ...  under PM2 cluster mode: process.send('ready') once
//                         listening (wait_ready), drains on SIGINT.
//
// LEAK_BYTES (default 0: none) is the Go worker's --leak: every request keeps
// that many bytes more for good, every byte written so that it is resident.
'use strict';
const cluster = require('cluster');
const http = require('http');

const port = Number(process.env.PORT || 18080);
const workMs = Number(process.env.WORK_MS || 5);
const startMs = Number(process.env.START_MS || 200);
const leakBytes = Number(process.env.LEAK_BYTES || 0);
const leaked = []; // what LEAK_BYTES keeps: never freed

if (process.argv[2] === 'cluster' && cluster.isPrimary) {
  primary(Number(process.env.WORKERS || 4));
} else {
  serve();
}

function serve() {
  let draining = false;
  const server = http.createServer((req, res) => {
    if (leakBytes > 0) leaked.push(Buffer.alloc(leakBytes, 1));
    setTimeout(() => {
      if (draining) res.setHeader('Connection', 'close');
      res.end(`hello from pid ${process.pid}\n`);
    }, workMs);
  });
  const drain = () => {
    draining = true;
    server.close(() => process.exit(0));
  };
  process.on('SIGINT', drain); // PM2's stop signal
  process.on('SIGTERM', drain);
  process.on('message', (m) => { // the cluster primary's, before disconnect()
    if (m === 'drain') draining = true;
  });
  setTimeout(() => {
    server.listen(port, '127.0.0.1', () => {
      if (process.send) process.send('ready');
    });
  }, startMs);
}

function primary(n) {
  for (let i = 0; i < n; i++) cluster.fork();
  let rolling = false;
  process.on('SIGHUP', async () => {
    if (rolling) return;
    rolling = true;
    for (const old of Object.values(cluster.workers)) {
      const fresh = cluster.fork();
      await new Promise((resolve) => fresh.once('listening', resolve));
      old.send('drain'); // its responses now say "Connection: close"
      old.disconnect(); // closes its server: it finishes what it holds
    }
    rolling = false;
    console.log('rolled');
  });
  process.on('SIGTERM', () => {
    for (const w of Object.values(cluster.workers)) w.disconnect();
    cluster.on('exit', () => {
      if (Object.keys(cluster.workers).length === 0) process.exit(0);
    });
  });
  let listening = 0;
  cluster.on('listening', () => {
    if (++listening === n) console.log('serving');
  });
}
