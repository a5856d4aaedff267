// The same, with the port written in the code and a host and callback, as many apps do.
const http = require('http');
const version = require('./package.json').version;

http.createServer((req, res) => {
  res.end(`release=${process.env.APP_RELEASE} version=${version} pid=${process.pid}\n`);
}).listen(4000, '0.0.0.0', () => console.log('listening on 4000'));
