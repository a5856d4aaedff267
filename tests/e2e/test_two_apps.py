"""Apps are independent: one app's stuck drain or stuck rollout never delays another's reload."""
import time
import unittest

from harness import AgentTest, Load, free_port, http_get, wait_until


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


if __name__ == "__main__":
    unittest.main()
