// An ordinary express app: app.listen(PORT), no signal handling.
const express = require('express');
const version = require('./package.json').version;

const app = express();
app.get('/', (req, res) => res.send(`release=${process.env.APP_RELEASE} version=${version} pid=${process.pid}\n`));
app.get('/work', (req, res) => setTimeout(() => res.send(`release=${process.env.APP_RELEASE} version=${version}\n`), Number(req.query.ms || 0)));
app.listen(process.env.PORT || 3000, () => console.log('express listening'));
