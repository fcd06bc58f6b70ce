'use strict';
// Fastify 5 + @fastify/reply-from (undici, keep-alive pool to the upstream), stripped to the
// plain proxy path like ../express/proxy.js: no auth, no limiter, no logging.
// Env: PORT (listen port on 127.0.0.1), UPSTREAM (e.g. http://127.0.0.1:8080).
// SIGUSR2 prints "WORKERREQS <pid> <requests served so far>" (bench/proxybench/workers.py).
const fastify = require('fastify');
const replyFrom = require('@fastify/reply-from');

const port = Number(process.env.PORT);
const upstream = process.env.UPSTREAM;
if (!port || !upstream) {
  console.error('proxy.js: PORT and UPSTREAM must be set');
  process.exit(2);
}

const app = fastify({ logger: false });
app.register(replyFrom, { base: upstream });
// GET /api/x reaches the upstream as GET /api/x, as on gw.
app.get('/api/*', (request, reply) => reply.from(request.url));

let served = 0;
app.server.on('request', () => {
  served += 1;
});
process.on('SIGUSR2', () => {
  process.stdout.write(`WORKERREQS ${process.pid} ${served}\n`);
});

app.listen({ port, host: '127.0.0.1' }).then(() => {
  console.log(`fastify proxy ${process.pid} listening on 127.0.0.1:${port} -> ${upstream}`);
});
