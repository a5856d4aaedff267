"""Crashes: a killed worker is replaced with backoff; a crash-looping release raises the alert."""
import os
import shutil
import signal
import unittest

from harness import AgentTest, free_port, http_get, wait_until


class Crash(AgentTest):
    def test_kill_9_is_replaced_and_counted(self):
        port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{port}"]}])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        victim = next(w for w in a.serving("web") if w["slot"] == 0)
        os.kill(victim["pid"], signal.SIGKILL)
        st = wait_until(lambda: (lambda ws: ws if len(ws) == 2 and victim["pid"] not in [w["pid"] for w in ws] else None)(a.serving("web")),
                        10, "slot 0 to be replaced")
        slot0 = next(w for w in st if w["slot"] == 0)
        self.assertEqual(slot0["restarts"], 1)
        self.assertIn("killed by SIGKILL; restarting in 100ms", a.output())
        self.assertIn("release=", http_get(port))
        self.assertEqual(a.alerts("crash_loop"), [])

    def test_crash_loop_raises_the_alert_and_backs_off(self):
        port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{port}"]}])
        a.start(wait_ready=False)
        # Ready, then dead 200ms later, every time.
        r = a.cli("deploy", "web", "--from", a.make_release("1.0.0", {"exit_after_ready_ms": 200}))
        self.assertEqual(r.returncode, 0, r.stderr)
        alert = wait_until(lambda: a.alerts("crash_loop"), 20, "the crash_loop alert")[0]
        self.assertEqual(alert["app"], "web")
        self.assertIn("crashed 5 times in a row", alert["summary"])
        self.assertIn("exited with status 3", alert["summary"])
        self.assertIn("backoff, now 1.6s", alert["detail"])
        delays = [l.rsplit("restarting in ", 1)[1] for l in a.output().splitlines() if "restarting in " in l]
        self.assertEqual(delays[:5], ["100ms", "200ms", "400ms", "800ms", "1.6s"])
        self.assertEqual(len(a.alerts("crash_loop")), 1, "one alert per loop, not one per crash")


    def test_a_start_that_cannot_hold_does_not_block_the_queue(self):
        port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 3, "listen": [f"127.0.0.1:{port}"]}])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        # Worker 2 is ready at once and dies 5ms later; workers 0 and 1 take 800ms to listen. The
        # three are never ready at the same moment: the start must fail, not wait forever.
        knobs = {"listen_delay_ms": 800, "per_worker": {"2": {"listen_delay_ms": 0, "exit_after_ready_ms": 5}}}
        bad = a.make_release("1.0.2", knobs)
        # A restart starts every slot at once (a rolling deploy would promote worker 2 alone). Put
        # the bad release in place as current by hand, as a plain copy, then restart.
        rel = os.path.join(a.state, "web", "releases", "20990101T000000Z-1.0.2")
        shutil.copytree(bad, rel)
        os.symlink("releases/20990101T000000Z-1.0.2", os.path.join(a.state, "web", "current.new"))
        os.rename(os.path.join(a.state, "web", "current.new"), os.path.join(a.state, "web", "current"))
        r = a.cli("restart", "web", timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("exited after ready", r.stderr)
        fixed = a.cli("deploy", "web", "--from", a.make_release("1.0.3"), timeout=30)
        self.assertEqual(fixed.returncode, 0, fixed.stdout + fixed.stderr)
        a.wait_serving("web", 3, release=a.current("web"))


if __name__ == "__main__":
    unittest.main()
