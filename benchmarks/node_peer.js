// The Node peer: a minimal token proxy of the kind the popular samples are, written for the
// benchmarks (not a product). Built-in http for the server and fetch (undici, kept-alive
// connections) for Direct Line; no validation, identity, rate limits or audit.
//
//   DIRECT_LINE_ENDPOINT=https://… DIRECT_LINE_SECRET=… NODE_EXTRA_CA_CERTS=ca.pem \
//     node benchmarks/node_peer.js <port>
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');

const endpoint = process.env.DIRECT_LINE_ENDPOINT;
const secret = process.env.DIRECT_LINE_SECRET;
const port = Number(process.argv[2]);

const server = http.createServer((req, res) => {
  if (req.method !== 'POST' || req.url !== '/api/directline/token') {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on('data', (chunk) => chunks.push(chunk));
  req.on('end', async () => {
    try {
      const body = JSON.parse(Buffer.concat(chunks).toString() || '{}');
      const user = { id: 'dl_' + crypto.randomBytes(16).toString('hex') };
      if (typeof body.userName === 'string') user.name = body.userName;
      const answer = await fetch(endpoint + '/tokens/generate', {
        method: 'POST',
        headers: { Authorization: 'Bearer ' + secret, 'Content-Type': 'application/json' },
        body: JSON.stringify({ user }),
        signal: AbortSignal.timeout(5000)
      });
      const payload = JSON.stringify({ ...(await answer.json()), userId: user.id });
      res.writeHead(answer.ok ? 200 : 502, { 'Content-Type': 'application/json' }).end(payload);
    } catch (error) {
      res.writeHead(502, { 'Content-Type': 'application/json' }).end('{"error":{"code":"upstream_error"}}');
    }
  });
});
server.keepAliveTimeout = 65000;
server.listen(port, '127.0.0.1');
