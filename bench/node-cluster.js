'use strict';
// A proxy under node's cluster module: WORKERS processes (default 2) sharing one listen port,
// connections handed out round-robin by the primary (node's default on Linux). Each peer's
// cluster.js calls this with its name and its proxy module.
const cluster = require('node:cluster');

module.exports = function runCluster(name, proxyModule) {
  const workers = Number(process.env.WORKERS || 2);
  if (!cluster.isPrimary) {
    require(proxyModule);
    return;
  }
  for (let i = 0; i < workers; i += 1) {
    cluster.fork();
  }
  cluster.on('exit', (worker, code, signal) => {
    // No respawn: a worker that dies mid-benchmark must show up as a failure, not be hidden.
    console.error(`${name} worker ${worker.process.pid} exited (code ${code}, signal ${signal})`);
  });
};
