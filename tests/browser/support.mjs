// Helpers shared by the Node-driven checks: a loopback echo server, a loopback static file
// server, a free-port probe, and pushing bytes through a tunnel until they come back.

import http from 'node:http';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

/** The value of an environment variable that must be set. */
export function need(name) {
  const v = process.env[name];
  if (!v) {
    console.error(`${name} is not set`);
    process.exit(2);
  }
  return v;
}

/** A TCP echo server on 127.0.0.1:0. */
export async function startEcho() {
  const server = net.createServer((s) => {
    s.on('error', () => {});
    s.pipe(s);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: server.address().port };
}

/** A port that was free on 127.0.0.1 a moment ago (an instance URL must name it up front). */
export async function freePort() {
  const s = net.createServer();
  await new Promise((r) => s.listen(0, '127.0.0.1', r));
  const { port } = s.address();
  await new Promise((r) => s.close(r));
  return port;
}

/**
 * Send `len` random bytes to 127.0.0.1:`port` and read until as many came back, without
 * half-closing first (NodePass closes both directions on a half-close). True when every byte
 * came back intact within 10 s.
 */
export function pushThrough(port, len) {
  const data = crypto.randomBytes(len);
  return new Promise((resolve) => {
    const chunks = [];
    let got = 0;
    const s = net.connect(port, '127.0.0.1');
    const done = (ok) => { clearTimeout(timer); s.destroy(); resolve(ok); };
    const timer = setTimeout(() => done(false), 10_000);
    s.on('connect', () => s.write(data));
    s.on('data', (c) => {
      chunks.push(c);
      got += c.length;
      if (got >= len) done(Buffer.concat(chunks).subarray(0, len).equals(data));
    });
    s.on('error', () => done(false));
    s.on('close', () => done(false));
  });
}

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.css': 'text/css',
  '.svg': 'image/svg+xml', '.txt': 'text/plain', '.json': 'application/json',
  '.png': 'image/png', '.ico': 'image/x-icon', '.woff2': 'font/woff2',
};

/** Serve `root` on 127.0.0.1:0 (`/x` falls back to `/x.html`, as a static Next.js export wants). */
export async function serveStatic(root) {
  const base = path.resolve(root);
  const server = http.createServer((req, res) => {
    let p = decodeURIComponent(new URL(req.url, 'http://localhost').pathname);
    if (p.endsWith('/')) p += 'index.html';
    let f = path.join(base, p);
    if (!fs.existsSync(f) && fs.existsSync(`${f}.html`)) f += '.html';
    if (!f.startsWith(base) || !fs.existsSync(f) || fs.statSync(f).isDirectory()) {
      res.writeHead(404);
      res.end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(f)] || 'application/octet-stream' });
    fs.createReadStream(f).pipe(res);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { server, url: `http://127.0.0.1:${server.address().port}` };
}
