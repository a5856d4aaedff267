"""kill -9 of the agent, while a rollout is half done and while it stages a release. The
workers it leaves keep serving; the next agent takes the listening socket over from them
(agent/process/orphans.h), so no connection is refused across the restart, runs `current` (a complete
release) and drains the orphans, whatever release they ran."""
import json
import os
import signal
import unittest

from harness import AgentTest, Load, free_port, http_get, wait_until


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class KillNine(AgentTest):
    def app(self, port, **more):
        return dict({"name": "web", "command": ["node", "server.js"], "instances": 3, "listen": [f"127.0.0.1:{port}"],
                     "ready_timeout": "30s"}, **more)

    def kill_9(self, a):
        # The serving ones: a worker already draining may exit on its own any moment.
        pids = [w["pid"] for w in a.app_status("web")["workers"] if w["role"] == "serving"]
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(10)
        return pids

    def test_kill_9_mid_rollout_then_restart_refuses_nothing(self):
        port, port2 = free_port(), free_port()
        # Two addresses (the fixture serves the first; the old workers hold both open): each is
        # found among their fds and taken over, else binding it would fail.
        a = self.agent([self.app(port, listen=[f"127.0.0.1:{port}", f"127.0.0.1:{port2}"])])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        v1 = a.current("web")
        load = Load(port)
        # v2's workers take 1.5 s to listen: kill the agent once the first of them serves.
        deploy = a.cli_async("deploy", "web", "--from", a.make_release("2.0.0", {"listen_delay_ms": 1500}))
        wait_until(lambda: any(w["release"] != v1 and w["state"] == "ready" for w in a.app_status("web")["workers"]),
                   30, "the first batch of 2.0.0 to be ready")
        left = self.kill_9(a)
        deploy.wait(10)
        self.assertTrue(all(alive(p) for p in left), "the workers outlive a killed agent (and keep serving)")
        for _ in range(20):
            self.assertIn("release=", http_get(port))

        a.start(wait_ready=False)
        # current never moved to 2.0.0: the new agent runs 1.0.0 and the orphans, half of them on
        # the unrecorded 2.0.0, are drained once its own workers serve.
        a.wait_serving("web", 3, release=v1, timeout=30)
        wait_until(lambda: not a.app_status("web")["orphans"] and not any(alive(p) for p in left), 30,
                   "the previous agent's workers to be drained")
        load.expect_only(v1)
        s = load.stop()
        self.assertNoFailures(s)  # not one refused connection across the kill and the restart
        self.assertEqual(s["stale"], 0, s)
        self.assertEqual(a.current("web"), v1)
        out = a.output()
        self.assertEqual(out.count("socket taken over from pid"), 2, out[-3000:])
        self.assertIn("worker(s) of a previous agent still running", out)
        events = [e["event"] for e in a.journal("web")]
        self.assertEqual(events.count("activated"), 1, events)  # 2.0.0 was staged, never activated
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("3.0.0")).returncode, 0)
        self.assertIn("version=3.0.0", http_get(port))

    def test_kill_9_while_staging_leaves_no_half_release(self):
        port = free_port()
        a = self.agent([self.app(port, instances=2)])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        v1 = a.current("web")
        big = a.make_heavy_release("2.0.0", 100, 100, 2048)
        releases = os.path.join(a.state, "web", "releases")
        load = Load(port)
        deploy = a.cli_async("deploy", "web", "--from", big)
        wait_until(lambda: any(n.endswith(".tmp") for n in os.listdir(releases)), 30, "staging to begin")
        left = self.kill_9(a)
        deploy.wait(10)
        a.start(wait_ready=False)
        a.wait_serving("web", 2, release=v1, timeout=30)
        wait_until(lambda: not any(alive(p) for p in left), 30, "the previous agent's workers to be drained")
        self.assertNoFailures(load.stop())
        self.assertEqual(a.current("web"), v1)
        self.assertEqual([n for n in os.listdir(releases) if n.endswith(".tmp")], [], "a half-staged release is left")
        self.assertTrue(os.path.isfile(os.path.join(releases, v1, "package.json")))
        rows = json.loads(a.cli("releases", "web", "--json").stdout)["releases"]
        self.assertEqual([r["id"] for r in rows if r["current"]], [v1], rows)


if __name__ == "__main__":
    unittest.main()
