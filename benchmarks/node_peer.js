// The Node peer: a minimal token proxy of the kind the popular samples are, written for the
// benchmarks (not a product). Built-in http for the server and https.request with a keep-alive
// agent for Direct Line (what axios and node-fetch do underneath); no validation, identity, rate
// limits or audit.
//
// Not fetch: Node 20's fetch (undici) cost 530 µs of CPU a call on the benchmark machine against
// 180 µs for https.request, which held the peer to about half of what 64 connections over a 20 ms
// Direct Line allow: the peer then measured the machine, and the comparison flattered serve.
//
//   DIRECT_LINE_ENDPOINT=https://… DIRECT_LINE_SECRET=… NODE_EXTRA_CA_CERTS=ca.pem \
//     node benchmarks/node_peer.js <port>
'use strict';

const http = require('node:http');
const https = require('node:https');
const crypto = require('node:crypto');

const generate = new URL(process.env.DIRECT_LINE_ENDPOINT + '/tokens/generate');
const secret = process.env.DIRECT_LINE_SECRET;
const port = Number(process.argv[2]);
const client = generate.protocol === 'https:' ? https : http;
const agent = new client.Agent({ keepAlive: true, maxSockets: 256 });

function mint(user) {
  return new Promise((resolve, reject) => {
    const body = JSON.stringify({ user });
    const request = client.request(generate, {
      method: 'POST',
      agent,
      timeout: 5000,
      headers: {
        Authorization: 'Bearer ' + secret,
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body)
      }
    }, (answer) => {
      const chunks = [];
      answer.on('data', (chunk) => chunks.push(chunk));
      answer.on('end', () => {
        try {
          resolve({ ok: answer.statusCode === 200, json: JSON.parse(Buffer.concat(chunks).toString()) });
        } catch (error) {
          reject(error);
        }
      });
      answer.on('error', reject);
    });
    request.on('timeout', () => request.destroy(new Error('timeout')));
    request.on('error', reject);
    request.end(body);
  });
}

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
      const answer = await mint(user);
      const payload = JSON.stringify({ ...answer.json, userId: user.id });
      res.writeHead(answer.ok ? 200 : 502, { 'Content-Type': 'application/json' }).end(payload);
    } catch (error) {
      res.writeHead(502, { 'Content-Type': 'application/json' }).end('{"error":{"code":"upstream_error"}}');
    }
  });
});
server.keepAliveTimeout = 65000;
server.listen(port, '127.0.0.1');
