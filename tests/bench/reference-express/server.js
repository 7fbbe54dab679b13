// Benchmark reference: what Kustomer's sample chat login server does.
//
// POST /login with a JSON body {"externalId": "...", "email": "..."} (either
// or both) answers {"token": "<JWT>"}: HS256, header {"alg":"HS256","typ":"JWT"},
// claims externalId and/or email plus an integer iat, signed with the secret
// in $KUSTOMER_SECRET (UTF-8 bytes, as TokenService uses its Vault secret).
//
// Listens on 127.0.0.1:$PORT (0 or unset: a free port) and prints one JSON
// line {"port": N} on stdout once it listens. Node is single-threaded: this
// is one process on one core, as the sample runs.
'use strict';

const express = require('express');
const jwt = require('jsonwebtoken');

const secret = process.env.KUSTOMER_SECRET;
if (!secret) {
  console.error('reference-express: set KUSTOMER_SECRET to the HMAC signing secret');
  process.exit(2);
}

const app = express();
app.disable('x-powered-by');
app.disable('etag');
app.use(express.json({ limit: '4kb' }));

app.post('/login', (req, res) => {
  const body = req.body || {};
  const claims = {};
  if (typeof body.externalId === 'string' && body.externalId) claims.externalId = body.externalId;
  if (typeof body.email === 'string' && body.email) claims.email = body.email;
  if (!claims.externalId && !claims.email) {
    res.status(400).json({ error: 'email or externalId is required' });
    return;
  }
  claims.iat = Math.floor(Date.now() / 1000);
  const token = jwt.sign(claims, secret, { algorithm: 'HS256', header: { alg: 'HS256', typ: 'JWT' } });
  res.json({ token });
});

const server = app.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n');
});
server.keepAliveTimeout = 60000;

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
