"""Readiness modes other than fd: sd_notify (sender pid checked) and a fixed delay; and a
worker that is not Node at all."""
import re
import unittest

from harness import AgentTest, free_port, http_get


class Ready(AgentTest):
    def python_app(self, args, ready, **extra):
        port = free_port()
        app = {"name": "py", "command": ["python3", "notify_worker.py", *args], "instances": 2, "watch": "VERSION",
               "listen": [f"127.0.0.1:{port}"], "ready": ready, "ready_timeout": "3s", **extra}
        a = self.agent([app])
        a.start(wait_ready=False)
        return a, port, a.make_python_release("7.0.0")

    def test_notify_ready(self):
        a, port, src = self.python_app([], "notify")
        r = a.cli("deploy", "py", "--from", src)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertTrue(a.current("py").endswith("-7.0.0"))
        self.assertIn("release=" + a.current("py"), http_get(port))

    def test_notify_from_another_pid_is_not_ready(self):
        a, port, src = self.python_app(["from-child"], "notify")
        r = a.cli("deploy", "py", "--from", src)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not ready within 3s: it never sent READY=1 to $NOTIFY_SOCKET", r.stderr)
        self.assertRegex(a.output(), r"ignored \d+ READY=1 message\(s\) on .*notify.sock from processes that are not its workers")

    def test_delay_ready(self):
        a, port, src = self.python_app(["no-notify-needed"], "delay", ready_delay="300ms")
        r = a.cli("deploy", "py", "--from", src)
        self.assertEqual(r.returncode, 0, r.stderr)
        delays = [int(m) for m in re.findall(r"ready in (\d+)ms", r.stdout)]
        self.assertEqual(len(delays), 2, r.stdout)
        for d in delays:
            self.assertGreaterEqual(d, 300)  # never before ready_delay
            self.assertLess(d, 600)


if __name__ == "__main__":
    unittest.main()
