"""shim = "node": unmodified Node apps (a plain listen, no signal handling; express) reload with
zero failed requests; without the shim's drain, the same app loses requests."""
import json
import os
import shutil
import subprocess
import unittest

from harness import AGENT, HERE, AgentTest, Load, free_port, http_get, wait_until

NAIVE = os.path.join(HERE, "apps", "naive")


def express_tree():
    """apps/express with express installed from npm, once, cached beside the build."""
    cache = os.path.join(os.path.dirname(os.path.abspath(AGENT)), "e2e-cache", "express-app")
    if not os.path.exists(os.path.join(cache, "node_modules", "express", "package.json")):
        shutil.rmtree(cache, ignore_errors=True)
        shutil.copytree(os.path.join(HERE, "apps", "express"), cache)
        with open(os.path.join(cache, "package.json"), "w") as f:
            json.dump({"name": "express-fixture", "version": "0.0.0", "dependencies": {"express": "^4.21.0"}}, f)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"], cwd=cache, check=True,
                       timeout=300, stdin=subprocess.DEVNULL)
    return cache


class Shim(AgentTest):
    def app(self, tree, command, port, **extra):
        a = self.agent([{"name": "web", "command": command, "instances": 4, "listen": [f"127.0.0.1:{port}"],
                         "shim": "node", **extra}])
        a.start(wait_ready=False)
        r = a.cli("deploy", "web", "--from", a.make_release("1.0.0", tree=tree))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return a

    def reloads_under_load(self, a, port, tree, path, reloads=10):
        """reloads-1 reloads and a deploy of 2.0.0 under load; returns the load summary."""
        load = Load(port, path=path)
        for _ in range(reloads - 1):
            r = a.cli("reload", "web")
            self.assertEqual(r.returncode, 0, r.stderr)
        r = a.cli("deploy", "web", "--from", a.make_release("2.0.0", tree=tree))
        self.assertEqual(r.returncode, 0, r.stderr)
        new = a.current("web")
        a.wait_drained("web")
        load.expect_only(new)
        for _ in range(100):
            self.assertIn("release=" + new, http_get(port))
        s = load.stop()
        print(f"load: {s}")
        self.assertEqual(s["stale"], 0, s)
        return s

    def test_naive_app_ten_reloads_zero_failures(self):
        port = free_port()
        a = self.app(NAIVE, ["node", "server.js"], port)
        self.assertIn("version=1.0.0", http_get(port))
        env = {v["name"]: v for v in json.loads(a.cli("env", "web", "--json").stdout)["env"]}
        self.assertIn("--require", env["NODE_OPTIONS"]["value"])
        self.assertEqual(env["PORT"]["value"], str(port))
        s = self.reloads_under_load(a, port, NAIVE, "/work?ms=20")
        self.assertNoFailures(s, min_ok=300)

    def test_express_app_ten_reloads_zero_failures(self):
        tree = express_tree()
        port = free_port()
        a = self.app(tree, ["node", "server.js"], port)
        s = self.reloads_under_load(a, port, tree, "/work?ms=20")
        self.assertNoFailures(s, min_ok=300)

    def test_long_request_in_flight_completes(self):
        port = free_port()
        a = self.app(NAIVE, ["node", "server.js"], port)
        import threading
        result = {}

        def slow():
            try:
                result["body"] = http_get(port, "/work?ms=3000", timeout=15)
            except Exception as e:  # noqa: BLE001 - reported below
                result["error"] = repr(e)
        t = threading.Thread(target=slow)
        t.start()
        wait_until(lambda: t.is_alive(), 2, "the slow request to start")
        r = a.cli("reload", "web")
        self.assertEqual(r.returncode, 0, r.stderr)
        t.join(20)
        self.assertNotIn("error", result, result)
        self.assertIn("version=1.0.0", result["body"])

    def test_fixed_port_in_code_with_host_and_callback(self):
        try:
            self.app(NAIVE, ["node", "fixed-port.js"], 4000)
        except OSError:
            self.skipTest("port 4000 is in use on this machine")
        self.assertIn("version=1.0.0", http_get(4000))

    def test_without_the_drain_the_same_app_loses_requests(self):
        port = free_port()
        a = self.app(NAIVE, ["node", "server.js"], port, env={"AGENT_SHIM_DRAIN": "0"})
        load = Load(port, path="/work?ms=20")
        for _ in range(3):
            self.assertEqual(a.cli("reload", "web").returncode, 0)
        s = load.stop()
        print(f"without drain: {s}")
        self.assertGreater(s["failed"], 0, f"expected lost requests without the drain: {s}")


if __name__ == "__main__":
    unittest.main()
