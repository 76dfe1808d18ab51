// What `pm2 jlist` says, on demand and cheaply, for the leak benchmark: one
// Node process connected to the PM2 daemon of PM2_HOME through PM2's own
// API (what jlist calls), answering each line on stdin with one line on
// stdout, "list " and a JSON array of the listed processes: id, pid, status
// (online, launching, stopping...) and restarts. A `pm2 jlist` per sample
// would start a Node CLI each time, a third of a second of CPU here.
//
//   PM2_MODULE=.../node_modules/pm2 PM2_HOME=... node pm2list.js
'use strict';
const readline = require('readline');
const pm2 = require(process.env.PM2_MODULE);

pm2.connect((err) => {
  if (err) {
    console.error(err);
    process.exit(1);
  }
  const rl = readline.createInterface({ input: process.stdin });
  rl.on('line', () => {
    pm2.list((err, list) => {
      if (err) {
        console.log('error ' + JSON.stringify(String(err)));
        return;
      }
      console.log('list ' + JSON.stringify(list.map((p) => ({
        id: p.pm_id,
        pid: p.pid,
        status: p.pm2_env.status,
        restarts: p.pm2_env.restart_time,
      }))));
    });
  });
  rl.on('close', () => pm2.disconnect());
});
