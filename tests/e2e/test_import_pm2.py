"""`agent import-pm2`: seed 004's pm2.json (examples/from-pm2/pm2.json) becomes an agent.toml that
`agent check` accepts, with a comment on every PM2 key not carried over; and that config, with
only its paths, ports and source filled in, runs the two unmodified Node apps."""
import os
import re
import subprocess
import unittest

from harness import AGENT, REPO, AgentTest, Load, free_port, http_get, wait_until

SEED = os.path.join(REPO, "examples", "from-pm2", "pm2.json")

# An unmodified app as PM2 runs it: it listens on $PORT and knows nothing of the agent.
APP_JS = """const http = require('http');
const pkg = require('./package.json');
http.createServer((req, res) => res.end(`${pkg.name} ${pkg.version} ${process.pid}\\n`)).listen(Number(process.env.PORT));
"""


def run(*args, **kw):
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=30, **kw)


class ImportPm2(AgentTest):
    def test_seed_pm2_json_becomes_a_config_that_checks_and_runs(self):
        r = run("import-pm2", SEED)
        self.assertEqual(r.returncode, 0, r.stderr)
        toml = r.stdout
        self.assertIn("PM2 keys not carried over", r.stderr)
        for line in ('name = "nuomi"', 'name = "h5"', 'command = ["node", "app.js"]', "instances = 14", "instances = 10",
                     'max_memory = "500M"', 'shim = "node"', 'listen = ["0.0.0.0:8197"]', 'listen = ["0.0.0.0:8198"]',
                     'NODE_ENV = "production"', 'PORT = "8197"'):
            self.assertIn(line, toml)
        for key in ("exec_mode", "merge_logs", "ignoreWatch", "env_dev", "env_test"):
            self.assertRegex(toml, rf'# pm2 "{key}"', f"{key} has no comment")
        self.assertIn("not needed", toml[toml.index('# pm2 "exec_mode"'):][:200])

        agent = self.agent([])
        path = os.path.join(agent.dir, "imported.toml")
        with open(path, "w") as f:
            f.write(toml)
        r = run("check", "-c", path)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("ok (2 apps: nuomi, h5)", r.stdout)

        # Filled in as the header says: where it runs, its source; here also loopback ports and
        # fewer workers for a 2-core test machine.
        ports = {"8197": free_port(), "8198": free_port()}
        text = toml
        for key, value in (("state_dir", agent.state), ("log_dir", agent.logs), ("control_socket", agent.socket)):
            text = re.sub(rf'^{key} = ".*"$', f'{key} = "{value}"', text, flags=re.M)
        for pm2_port, port in ports.items():
            text = text.replace(f'"0.0.0.0:{pm2_port}"', f'"127.0.0.1:{port}"').replace(f'PORT = "{pm2_port}"', f'PORT = "{port}"')
        text = text.replace("instances = 14", "instances = 2").replace("instances = 10", "instances = 2")
        for name in ("nuomi", "h5"):
            src = os.path.join(agent.dir, "src", name)
            os.makedirs(src)
            with open(os.path.join(src, "app.js"), "w") as f:
                f.write(APP_JS)
            with open(os.path.join(src, "package.json"), "w") as f:
                f.write(f'{{"name": "{name}", "version": "1.0.0"}}\n')
            text = text.replace(f'# source = "/opt/{name}"', f'source = "{src}"')
        with open(agent.config, "w") as f:
            f.write(text)
        agent.apps = [{"name": "nuomi", "instances": 2}, {"name": "h5", "instances": 2}]
        agent.start(wait_ready=False)
        for name in ("nuomi", "h5"):
            r = agent.cli("deploy", name)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(http_get(ports["8197"]).startswith("nuomi 1.0.0"))
        self.assertTrue(http_get(ports["8198"]).startswith("h5 1.0.0"))
        # Reloaded with the drain signal PM2 used (SIGINT): no request fails.
        load = Load(ports["8197"])
        self.assertEqual(agent.cli("reload", "nuomi").returncode, 0)
        self.assertNoFailures(load.stop())

    def test_json5_and_bad_input(self):
        agent = self.agent([])
        path = os.path.join(agent.dir, "ecosystem.json5")
        with open(path, "w") as f:
            f.write("// PM2, the JSON5 way\n{apps: [{name: 'api', script: 'server.js', instances: 2,"
                    " env: {PORT: 3000,},},],}\n")
        r = run("import-pm2", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('name = "api"', r.stdout)
        self.assertIn('listen = ["0.0.0.0:3000"]', r.stdout)
        with open(path, "w") as f:
            f.write('{"apps": [{"name": "api"\n  "script": "x.js"}]}\n')
        r = run("import-pm2", path)
        self.assertEqual(r.returncode, 1)
        self.assertRegex(r.stderr, rf"^agent: {re.escape(path)}:2:3: ")
        self.assertEqual(r.stdout, "")
        r = run("import-pm2", os.path.join(agent.dir, "missing.json"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing.json", r.stderr)
        self.assertEqual(run("import-pm2").returncode, 2)


if __name__ == "__main__":
    unittest.main()
