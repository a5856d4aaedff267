'use strict';
// hello-node: the example app deploy-agent runs. It answers every request with its version,
// release and worker, so you can watch a rollout move from one release to the next.
//
// It speaks the agent's protocol itself (no shim needed): it serves on the socket the agent
// hands it at fd 3 (LISTEN_FDS), says it is ready by writing a newline to $READY_FD, and on
// SIGTERM stops accepting, answers what is in flight with `Connection: close`, and exits when
// no connection is left. Run by hand, it listens on $PORT (default 4000).
const fs = require('fs');
const http = require('http');
const net = require('net');

const version = require('./package.json').version;
const release = process.env.APP_RELEASE || 'dev';
let draining = false;

const server = http.createServer((req, res) => {
  if (draining) res.setHeader('Connection', 'close');
  res.setHeader('Content-Type', 'text/plain');
  res.end(`hello from ${version} release=${release} worker=${process.env.APP_WORKER || '-'} pid=${process.pid}\n`);
});

const inherited = Number(process.env.LISTEN_FDS || 0) > 0 && Number(process.env.LISTEN_PID) === process.pid;
server.listen(inherited ? { fd: 3 } : Number(process.env.PORT || 4000), () => {
  const fd = Number(process.env.READY_FD);
  if (fd > 0) {
    fs.writeSync(fd, '\n');
    fs.closeSync(fd);
  }
});

process.on('SIGTERM', () => {
  draining = true;  // from now on every response says Connection: close
  // Stop accepting, and exit once the last connection is gone. net's close, not http's: since
  // Node 19 http's also drops idle keep-alive connections at once, racing a client that is just
  // sending its next request. An idle client gets a moment to send it (and be told to close).
  net.Server.prototype.close.call(server, () => process.exit(0));
  setTimeout(() => server.closeIdleConnections(), 250).unref();
});
