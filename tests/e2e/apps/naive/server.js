// The seed-003 server: a plain listen, no signal handling, nothing about the agent.
// (/work?ms=N answers after N ms, so a test can have requests in flight.)
const http = require('http');
const version = require('./package.json').version;

http.createServer((req, res) => {
  const reply = () => res.end(`release=${process.env.APP_RELEASE} version=${version} pid=${process.pid}\n`);
  const m = /^\/work\?ms=(\d+)/.exec(req.url);
  if (m) return setTimeout(reply, Number(m[1]));
  reply();
}).listen(process.env.PORT || 4000);
