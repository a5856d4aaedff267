'use strict';
// deploy-agent's shim for unmodified Node apps, preloaded with NODE_OPTIONS=--require.
//
// An app that does `http.createServer(h).listen(process.env.PORT || 4000)` and dies on SIGTERM
// gets, without a line changed:
//   1. its listen on one of the agent's ports served from the socket the agent holds (fd 3..),
//      so every worker shares one accept queue and a restart queues connections instead of
//      refusing them;
//   2. readiness: a newline on $READY_FD once that listen is done;
//   3. a drain on the drain signal: stop accepting, answer requests already in flight with
//      `Connection: close`, close idle keep-alive sockets, let the app's own handlers for the
//      signal run, and exit once no connection remains. A request that never ends is left to
//      the agent's drain_timeout / kill_timeout.
// Nothing but Node itself. Active only in the process the agent started (LISTEN_PID matches):
// a child process that inherits NODE_OPTIONS is left alone.

const net = require('net');
const fs = require('fs');

const env = process.env;
const active = Number(env.LISTEN_PID) === process.pid && Number(env.LISTEN_FDS) > 0;
if (active) install();

function install() {
  // AGENT_LISTEN: the address of each inherited fd, in order: "127.0.0.1:8197 [::1]:8198 unix:/x".
  const inherited = (env.AGENT_LISTEN || '').split(' ').filter(Boolean).map((addr, i) => {
    const fd = 3 + i;
    if (addr.startsWith('unix:')) return { fd, path: addr.slice(5) };
    return { fd, port: Number(addr.slice(addr.lastIndexOf(':') + 1)) };
  });
  const signal = env.AGENT_DRAIN_SIGNAL || 'SIGTERM';
  const drainEnabled = env.AGENT_SHIM_DRAIN !== '0';  // 0: for tests that show what the drain is worth
  const exitGraceMs = Number(env.AGENT_SHIM_EXIT_GRACE_MS || 1000);
  // An idle keep-alive socket is not closed at once: a client under load sends its next request
  // within milliseconds, and that request is better answered (with Connection: close) than
  // raced by our FIN. Idle past this, it is closed.
  const idleGraceMs = Number(env.AGENT_SHIM_IDLE_GRACE_MS || 250);
  // A connection that has carried no request yet was accepted just before the drain, and its
  // first request is on its way (late, on a loaded machine): closing it would reset that
  // request. It gets longer; it is answered with Connection: close when its request comes.
  const firstRequestGraceMs = Number(env.AGENT_SHIM_FIRST_REQUEST_GRACE_MS || 5000);
  // stdout and stderr are pipes to the agent. If the agent dies (kill -9), a write fails with
  // EPIPE, and Node turns that into an uncaught error that kills the worker, though the next
  // agent would have taken it over and drained it gently (agent/orphans.h). Lost output it is.
  for (const stream of [process.stdout, process.stderr])
    stream.on('error', (e) => { if (e.code !== 'EPIPE') throw e; });
  const servers = new Set();  // servers listening on an inherited fd
  let readySent = false;
  let draining = false;

  // Which inherited fd a listen(...) call means, if any.
  function match(args) {
    let a0 = args[0];
    if (a0 && typeof a0 === 'object' && !Array.isArray(a0)) {
      if (a0.fd !== undefined || a0.handle !== undefined || a0._handle !== undefined) return null;
      if (a0.path !== undefined) return inherited.find((s) => s.path === a0.path) || null;
      a0 = a0.port;
    }
    if (typeof a0 === 'string' && !/^\d+$/.test(a0)) return inherited.find((s) => s.path === a0) || null;
    const port = Number(a0);
    if (!Number.isInteger(port) || port <= 0) return null;
    return inherited.find((s) => s.port === port) || null;
  }

  const originalListen = net.Server.prototype.listen;
  net.Server.prototype.listen = function (...args) {
    const target = match(args);
    if (!target || target.used) return originalListen.apply(this, args);
    target.used = true;
    // Keep the caller's callback (last function argument) and drop host/backlog: the socket is bound.
    const cb = args.reverse().find((a) => typeof a === 'function');
    servers.add(this);
    track(this);
    originalListen.call(this, { fd: target.fd }, () => {
      if (!readySent) {
        readySent = true;
        const fd = Number(env.READY_FD);
        if (fd > 0) {
          try { fs.writeSync(fd, '\n'); fs.closeSync(fd); } catch (e) { /* the agent will time out and say so */ }
        }
      }
    });
    if (cb) this.once('listening', cb);
    return this;
  };

  // Per server: its open connections, and which of them have a request in flight.
  function track(server) {
    server.__agentSockets = new Set();
    server.on('connection', (socket) => {
      server.__agentSockets.add(socket);
      socket.__agentBusy = 0;
      socket.__agentServed = 0;
      socket.on('close', () => {
        server.__agentSockets.delete(socket);
        maybeExit();
      });
    });
    // Before the app's handler: during a drain the response must say Connection: close before
    // the app writes it (a handler that answers at once sends its headers synchronously).
    server.prependListener('request', (req, res) => {
      const socket = req.socket;
      socket.__agentBusy++;
      socket.__agentServed = (socket.__agentServed || 0) + 1;
      if (draining) closeAfter(res);
      res.on('finish', () => {
        socket.__agentBusy--;
        // A response that went out before the drain began did not say Connection: close, so the
        // client will send its next request here: treat the socket as idle, not as done.
        if (draining && socket.__agentBusy === 0) closeWhenIdle(socket);
      });
    });
  }

  // Answer the next request on `socket` with Connection: close, or close it if none comes soon.
  function closeWhenIdle(socket) {
    const grace = socket.__agentServed > 0 ? idleGraceMs : firstRequestGraceMs;
    const timer = setTimeout(() => {
      if (socket.__agentBusy > 0 || socket.destroyed) return;
      // A first request that came meanwhile and is answered already: idle again, short grace.
      if (grace === firstRequestGraceMs && socket.__agentServed > 0) return closeWhenIdle(socket);
      socket.end();
    }, grace);
    timer.unref();
  }

  // Make `res` the connection's last response. Too late once its headers are out: then the
  // client expects to go on, and the socket is treated as idle when the response is done.
  function closeAfter(res) {
    if (res.headersSent) return;
    res.setHeader('Connection', 'close');
    res.shouldKeepAlive = false;
  }

  function openConnections() {
    let n = 0;
    for (const s of servers) n += s.__agentSockets.size;
    return n;
  }

  function maybeExit() {
    if (!draining || openConnections() > 0) return;
    // Give the app's own handlers for the signal a moment to finish; an unref'd timer does not
    // keep the process alive, so if nothing else does, Node exits by itself sooner.
    setTimeout(() => process.exit(0), exitGraceMs).unref();
  }

  if (!drainEnabled) return;
  process.on(signal, () => {
    if (draining) return;
    draining = true;
    for (const server of servers) {
      // Stop accepting. net's close, not http's: since Node 19 http's also drops idle
      // connections at once. The agent still holds the socket, so nothing queued is lost.
      net.Server.prototype.close.call(server);
      for (const socket of server.__agentSockets) {
        if (socket.__agentBusy > 0) {
          // In flight: its response says Connection: close (requests from now on get it in the
          // 'request' hook), and the socket ends when the response is done.
          if (socket._httpMessage) closeAfter(socket._httpMessage);
        } else {
          closeWhenIdle(socket);
        }
      }
    }
    maybeExit();
  });
  // Registering a handler replaced Node's default "exit on SIGTERM". If the app has its own
  // handler that exits, it still does; if not, we exit when the drain is done.
}
