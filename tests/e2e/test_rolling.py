"""Zero failed requests through reloads and a deploy, under keep-alive and new-connection load."""
import unittest

from harness import AgentTest, Load, free_port, http_get


class RollingSwap(AgentTest):
    def test_five_reloads_and_a_deploy_lose_nothing(self):
        port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 4, "listen": [f"127.0.0.1:{port}"],
                         "source": "", "ready_timeout": "10s"}])
        a.apps[0]["source"] = a.make_release("1.0.0")
        a.write_config()
        a.start()
        first = a.current("web")
        self.assertIn("release=" + first, http_get(port))

        load = Load(port)
        for i in range(5):
            r = a.cli("reload", "web")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("live: " + first, r.stdout)
            self.assertIn("batch 4/4", r.stdout)
        r = a.cli("deploy", "web", "--from", a.make_release("1.1.0"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        new = a.current("web")
        self.assertNotEqual(new, first)
        self.assertTrue(new.endswith("-1.1.0"))
        a.wait_serving("web", 4, release=new)
        a.wait_drained("web")  # an old worker answers the last request on each of its connections
        load.expect_only(new)
        # The load keeps running while we ask 100 more times: only the new release may answer.
        for _ in range(100):
            self.assertIn("release=" + new, http_get(port))
        s = load.stop()
        self.assertNoFailures(s, min_ok=200)
        self.assertEqual(s["stale"], 0, s)
        self.assertGreater(s["releases"].get(new, 0), 0, s)
        print(f"load: {s['ok']} ok, {s['failed']} failed, {s['retried']} retried on a reused socket, releases {s['releases']}")

        events = [(e["event"], e["release"]) for e in a.journal("web")]
        self.assertIn(("activated", new), events)
        self.assertEqual(a.stop(), 0)


if __name__ == "__main__":
    unittest.main()
