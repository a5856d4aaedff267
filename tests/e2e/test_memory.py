"""A worker over max_memory is replaced by the zero-downtime swap, not by a hard restart."""
import unittest

from harness import AgentTest, Load, free_port, http_get, wait_until


class Memory(AgentTest):
    def test_worker_over_max_memory_is_replaced_without_a_failed_request(self):
        port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{port}"],
                         "max_memory": "150M"}])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        before = {w["pid"] for w in a.serving("web")}
        load = Load(port)
        hog = int(http_get(port, "/grow?mb=200").split("pid=")[1])
        self.assertIn(hog, before)
        alert = wait_until(lambda: a.alerts("memory_replaced"), 15, "the memory_replaced alert")[0]
        self.assertEqual(alert["pid"], hog)
        self.assertIn("over max_memory 150M", alert["summary"])
        wait_until(lambda: hog not in {w["pid"] for w in a.app_status("web")["workers"]}, 15, "the big worker to be gone")
        after = a.wait_serving("web", 2)
        s = load.stop()
        self.assertNoFailures(s)
        pids = {w["pid"] for w in after["workers"]}
        self.assertEqual(len(pids & before), 1, "only the big worker was replaced")
        self.assertIn("replace done: replaced slot", a.output())


if __name__ == "__main__":
    unittest.main()
