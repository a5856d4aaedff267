"""`agent history`: every operation journaled, with who asked and how long it took: deploys,
reloads, stop/start/restart, rollbacks, crash restarts, memory replacements, config reloads
(with the keys that changed) and the agent's own start and stop."""
import calendar
import json
import os
import pwd
import signal
import time
import unittest

from harness import AgentTest, free_port, http_get, wait_until


class History(AgentTest):
    def history(self, a, *args):
        r = a.cli("history", *args, "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def test_every_operation_is_journaled_with_who_and_how_long(self):
        port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{port}"], "instances": 2,
                         "max_memory": "150M"}])
        a.start(wait_ready=False)
        for version in ("1.0.0", "1.1.0"):
            self.assertEqual(a.cli("deploy", "web", "--from", a.make_release(version)).returncode, 0)
        for verb in ("reload", "restart", "stop", "start"):
            self.assertEqual(a.cli(verb, "web").returncode, 0, verb)
        self.assertEqual(a.cli("rollback", "1", "web").returncode, 0)

        # A crash: the worker is restarted, and the history says so.
        victim = a.serving("web")[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda: any(e["op"] == "crash" for e in self.history(a, "web")), 15, "the crash in the history")
        st = a.wait_serving("web", 2)
        exits = [w.get("last_exit", "") for w in st["workers"]]
        self.assertTrue(any("killed by SIGKILL" in e or "SIGKILL" in e for e in exits), exits)  # status: why the slot last ended
        # A worker over max_memory: replaced.
        http_get(port, "/grow?mb=200")
        wait_until(lambda: any(e["op"] == "replace" for e in self.history(a, "web")), 20, "the replacement in the history")

        # A config reload that changes a key, and one that is refused.
        a.apps[0]["instances"] = 3
        a.write_config()
        self.assertIn("config reloaded", a.sighup())
        with open(a.config, "a") as f:
            f.write("\n[[app]]\nname = \"broken\"\n")  # no command: refused
        self.assertIn("keeping the running config", a.sighup())

        entries = self.history(a)
        ops = [e["op"] for e in entries]
        self.assertEqual(ops[:9], ["agent_start", "deploy", "deploy", "reload", "restart", "stop", "start", "rollback", "crash"], ops)
        self.assertIn("replace", ops)
        by_op = {}
        for e in entries:
            by_op.setdefault(e["op"], []).append(e)
        for op in ("deploy", "reload", "restart", "stop", "start", "rollback"):
            e = by_op[op][0]
            self.assertTrue(e["ok"], e)
            self.assertEqual(e["uid"], os.getuid(), e)  # from SO_PEERCRED
            self.assertEqual(e["user"], pwd.getpwuid(os.getuid()).pw_name)
            self.assertEqual(e["source"], "cli")
            self.assertGreater(e["seconds"], 0, e)
        self.assertRegex(by_op["deploy"][1]["release"], r"^\d{8}T\d{6}Z-1\.1\.0")
        self.assertIn("live", by_op["deploy"][0]["detail"])
        crash = by_op["crash"][0]
        self.assertFalse(crash["ok"])
        self.assertEqual(crash["uid"], -1)
        self.assertEqual(crash["user"], "agent")
        self.assertIn(str(victim), crash["detail"])
        self.assertIn("SIGKILL", crash["detail"])
        self.assertIn("restarting in", crash["detail"])
        self.assertEqual(by_op["replace"][0]["source"], "max_memory")
        reloads = by_op["config_reload"]
        self.assertEqual(len(reloads), 2)
        self.assertTrue(reloads[0]["ok"])
        self.assertEqual(reloads[0]["detail"], "changed: app.web.instances")
        self.assertEqual(reloads[0]["uid"], os.getuid())  # who sent the SIGHUP
        self.assertFalse(reloads[1]["ok"])
        self.assertIn("refused", reloads[1]["detail"])

        # The table for people, and one app, and --since.
        r = a.cli("history", "web")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertTrue(lines[0].startswith("TIME"), lines[0])
        self.assertIn("WHO", lines[0])
        self.assertTrue(any(" rollback " in l and " ok " in l for l in lines), r.stdout)
        self.assertFalse(any("config_reload" in l for l in lines), "an app's history shows only that app")
        newest = entries[-1]["time"]
        written = calendar.timegm(time.strptime(newest[:19], "%Y-%m-%dT%H:%M:%S"))
        wait_until(lambda: time.time() - written > 2.5, 10, "the entries to age")
        self.assertEqual(self.history(a, "--since", "1s"), [])
        self.assertEqual(len(self.history(a, "--since", "1h")), len(entries))

        # The agent's own stop, by SIGTERM, is journaled too, and history needs no daemon.
        self.assertEqual(a.stop(), 0)
        last = self.history(a)[-1]
        self.assertEqual(last["op"], "agent_stop")
        self.assertIn("SIGTERM", last["detail"])
        self.assertEqual(last["uid"], os.getuid())


if __name__ == "__main__":
    unittest.main()
