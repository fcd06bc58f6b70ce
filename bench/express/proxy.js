'use strict';
// The seeds' own gateway approach, stripped to its plain proxy path: Express with
// http-proxy-middleware and a keep-alive agent to the upstream (no auth, no limiter, no logging).
// Env: PORT (listen port on 127.0.0.1), UPSTREAM (e.g. http://127.0.0.1:8080).
// SIGUSR2 prints "WORKERREQS <pid> <requests served so far>" (bench/proxybench/workers.py).
const http = require('node:http');
const express = require('express');
const { createProxyMiddleware } = require('http-proxy-middleware');

const port = Number(process.env.PORT);
const upstream = process.env.UPSTREAM;
if (!port || !upstream) {
  console.error('proxy.js: PORT and UPSTREAM must be set');
  process.exit(2);
}

const agent = new http.Agent({ keepAlive: true });
const app = express();
app.disable('x-powered-by');
// pathFilter (not a mount path) so that GET /api/x reaches the upstream as GET /api/x, as on gw.
app.use(createProxyMiddleware({ target: upstream, agent, pathFilter: '/api' }));

const server = app.listen(port, '127.0.0.1', () => {
  console.log(`express proxy ${process.pid} listening on 127.0.0.1:${port} -> ${upstream}`);
});

let served = 0;
server.on('request', () => {
  served += 1;
});
process.on('SIGUSR2', () => {
  process.stdout.write(`WORKERREQS ${process.pid} ${served}\n`);
});
