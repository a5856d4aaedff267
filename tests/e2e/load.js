'use strict';
// Load for the zero-downtime tests: keep-alive clients and new-connection-per-request clients,
// each a loop of sequential requests, until SIGTERM. Then it writes a JSON summary.
//
//   node load.js PORT SUMMARY_FILE [KEEPALIVE_LOOPS=4] [FRESH_LOOPS=2] [PAUSE_MS=5] [PATH=/]
//
// Every failure counts: a refused or reset connection, a timeout, a status other than 200.
// One exception, and it is counted apart: a request written to a *reused* keep-alive socket
// that the server closed at that same instant fails before any byte of answer. HTTP/1.1
// allows a client to retry such an idempotent request (RFC 9112 9.3.1); browsers and Go do.
// It is retried once on a new connection, and counted as `retried`; if that fails, it fails.
//
// SIGUSR2 marks a point: from then on every request started must be answered by the release
// named in the file SUMMARY_FILE.expect, or it is counted as `stale`.
const fs = require('fs');
const http = require('http');
const [port, summaryFile, keepLoops = 4, freshLoops = 2, pauseMs = 5, path = '/'] = process.argv.slice(2);
const keep = new http.Agent({ keepAlive: true, maxSockets: Number(keepLoops) });
const fresh = new http.Agent({ keepAlive: false });
const s = { ok: 0, failed: 0, retried: 0, stale: 0, errors: [], releases: {}, stale_examples: [] };
let running = true;
let expect = null;

function once(agent) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port: Number(port), path, agent, timeout: 10000 }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body }));
      res.on('error', (e) => resolve({ error: e.message, reused: false }));
    });
    req.on('timeout', () => req.destroy(new Error('timeout after 10s')));
    req.on('error', (e) => resolve({ error: `${e.code || ''} ${e.message}`.trim(), reused: req.reusedSocket }));
  });
}

async function loop(agent) {
  while (running) {
    const wanted = expect;
    let r = await once(agent);
    if (r.error && r.reused) {
      s.retried++;
      r = await once(fresh);
    }
    if (r.error || r.status !== 200) {
      s.failed++;
      if (s.errors.length < 20) s.errors.push(r.error || `status ${r.status}`);
    } else {
      s.ok++;
      const m = /release=(\S+)/.exec(r.body);
      const rel = m ? m[1] : '?';
      s.releases[rel] = (s.releases[rel] || 0) + 1;
      if (wanted && rel !== wanted) {
        s.stale++;
        if (s.stale_examples.length < 5) s.stale_examples.push(rel);
      }
    }
    if (Number(pauseMs) > 0) await new Promise((r) => setTimeout(r, Number(pauseMs)));
  }
}

process.on('SIGUSR2', () => {
  expect = fs.readFileSync(summaryFile + '.expect', 'utf8').trim();
  fs.writeFileSync(summaryFile + '.marked', '1');
});
const loops = [];
for (let i = 0; i < Number(keepLoops); i++) loops.push(loop(keep));
for (let i = 0; i < Number(freshLoops); i++) loops.push(loop(fresh));
fs.writeFileSync(summaryFile + '.started', '1');
// How many answered so far, for a test that wants a minimum of traffic before it stops us.
setInterval(() => fs.writeFileSync(summaryFile + '.progress', String(s.ok + s.failed)), 50).unref();
process.on('SIGTERM', async () => {
  running = false;
  await Promise.all(loops);
  fs.writeFileSync(summaryFile, JSON.stringify(s));
  process.exit(0);
});
