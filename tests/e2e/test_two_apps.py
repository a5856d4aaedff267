"""Apps are independent: one app's stuck drain or stuck rollout never delays another's reload."""
import os
import time
import tomllib
import unittest

from harness import FIXTURE, REPO, AgentTest, Load, free_port, http_get, wait_until


class TwoApps(AgentTest):
    def test_stuck_app_does_not_delay_the_other(self):
        pa, pb = free_port(), free_port()
        a = self.agent([
            {"name": "nuomi", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{pa}"],
             "drain_timeout": "1s", "kill_timeout": "5s", "ready_timeout": "20s"},
            {"name": "h5", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{pb}"]},
        ])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "nuomi", "--from", a.make_release("1.0.0", {"ignore_term": True})).returncode, 0)
        self.assertEqual(a.cli("deploy", "h5", "--from", a.make_release("2.0.0")).returncode, 0)

        # nuomi: old workers stuck draining, and a new release that takes 15s to become ready.
        self.assertEqual(a.cli("reload", "nuomi").returncode, 0)
        slow = a.cli_async("deploy", "nuomi", "--from", a.make_release("1.1.0", {"listen_delay_ms": 15000}))
        wait_until(lambda: a.app_status("nuomi")["state"] == "rolling", 10, "nuomi's slow rollout to begin")

        load = Load(pb)
        t0 = time.monotonic()
        r = a.cli("reload", "h5")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(took, 3.0, f"h5's reload took {took:.1f}s: it waited on nuomi")
        self.assertNoFailures(load.stop(), min_ok=10)
        self.assertEqual(a.app_status("nuomi")["state"], "rolling")  # still stuck, as it should be
        self.assertIn("version=1.0.0", http_get(pa))  # and nuomi's old workers keep serving
        slow.kill()
        slow.wait()
        # A queued request behind nuomi's rollout is superseded by a newer one: the latest wins.
        q1 = a.cli_async("reload", "nuomi")
        wait_until(lambda: a.app_status("nuomi")["queued"] == "reload", 10, "the first reload to be queued")
        q2 = a.cli_async("reload", "nuomi")
        out1, err1 = q1.communicate(timeout=10)
        self.assertEqual(q1.returncode, 1)
        self.assertIn("superseded by a newer request (reload)", err1)
        q2.kill()
        q2.wait()


class TwoAppsExample(AgentTest):
    def test_the_shipped_two_apps_config_scaled_down_each_app_reloads_alone(self):
        # examples/two-apps/agent.toml as shipped, with its paths and ports moved into the test's
        # directory and the instance counts scaled down (14 -> 3, 10 -> 2); every other key kept.
        with open(os.path.join(REPO, "examples", "two-apps", "agent.toml"), "rb") as f:
            example = tomllib.load(f)
        apps = example["app"]
        self.assertEqual([(x["name"], x["instances"], x["listen"], x["max_memory"]) for x in apps],
                         [("nuomi", 14, ["0.0.0.0:8197"], "500M"), ("h5", 10, ["0.0.0.0:8198"], "500M")])
        ports = {}
        a = self.agent(apps)
        for app, n in zip(apps, (3, 2)):
            ports[app["name"]] = free_port()
            app["instances"] = n
            app["listen"] = [f"127.0.0.1:{ports[app['name']]}"]
            app["command"] = ["node", "server.js"]
            app["max_surge"] = 1
            src = a.make_release("1.0.0")
            if app["watch"] != "package.json":  # a version marker: its first line is the version
                with open(os.path.join(src, app["watch"]), "w") as f:
                    f.write("1.0.0-1\n")
            app["source"] = src
        a.write_config()
        self.assertEqual(a.cli("check").returncode, 0)
        a.start()

        def pids(name):
            return {w["pid"] for w in a.serving(name)}
        for name, other in (("h5", "nuomi"), ("nuomi", "h5")):
            before_other, before = pids(other), pids(name)
            load = Load(ports[name])
            r = a.cli("reload", name)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertNoFailures(load.stop())
            a.wait_serving(name, len(before))
            self.assertEqual(pids(name) & before, set(), f"{name} was not reloaded")
            self.assertEqual(pids(other), before_other, f"reloading {name} touched {other}")


if __name__ == "__main__":
    unittest.main()
