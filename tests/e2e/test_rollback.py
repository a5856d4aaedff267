"""agent rollback 1, twice, under load: back two releases, not back and forth."""
import unittest

from harness import AgentTest, Load, free_port, http_get


class Rollback(AgentTest):
    def test_rollback_twice_goes_two_releases_back_without_failed_requests(self):
        port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{port}"]}])
        a.start(wait_ready=False)
        ids = []
        for v in ("1.0.0", "1.1.0", "1.2.0"):
            self.assertEqual(a.cli("deploy", "web", "--from", a.make_release(v)).returncode, 0)
            ids.append(a.current("web"))

        load = Load(port)
        r = a.cli("rollback", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("rolling back to " + ids[1], r.stdout)
        self.assertEqual(a.current("web"), ids[1])
        a.wait_drained("web")
        load.expect_only(ids[1])
        for _ in range(50):
            self.assertIn("release=" + ids[1], http_get(port))
        s = load.stop()
        self.assertNoFailures(s)
        self.assertEqual(s["stale"], 0, s)

        load = Load(port)
        r = a.cli("rollback", "1", "web")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(a.current("web"), ids[0])
        a.wait_drained("web")  # an old worker signaled a moment ago may still take one connection
        self.assertIn("release=" + ids[0], http_get(port))
        self.assertNoFailures(load.stop())

        r = a.cli("rollback", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("only 0 earlier releases", r.stderr)
        states = {x["id"]: x["state"] for x in __import__("json").loads(a.cli("releases", "web", "--json").stdout)["releases"]}
        self.assertEqual(states, {ids[0]: "active", ids[1]: "rolled_back", ids[2]: "rolled_back"})

        r = a.cli("rollback", "--to", ids[2])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(a.current("web"), ids[2])
        r = a.cli("rollback", "--to", "../../etc")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no release ../../etc", r.stderr)


if __name__ == "__main__":
    unittest.main()
