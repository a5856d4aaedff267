"""Worker output goes to log_dir/<app>/app.log, rotated by the agent with no line lost."""
import glob
import os
import re
import unittest

from harness import AgentTest, free_port, wait_until


class Logs(AgentTest):
    def test_rotation_loses_no_line(self):
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{free_port()}"]}],
                       log_max_size="64K", log_max_files=50)
        a.start(wait_ready=False)
        n = 20000  # ~1 MiB of stamped lines: many rotations
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0", {"print_lines": n})).returncode, 0)
        base = os.path.join(a.logs, "web", "app.log")

        def all_lines():
            files = sorted(glob.glob(base + ".*"), key=lambda p: -int(p.rsplit(".", 1)[1])) + [base]
            out = []
            for p in files:
                with open(p) as f:
                    out += f.read().splitlines()
            return out
        lines = wait_until(lambda: (lambda l: l if sum(" out line " in x for x in l) >= n else None)(all_lines()), 20,
                           "every line in the logs")
        numbers = [int(m.group(1)) for m in (re.search(r" out line (\d+)$", l) for l in lines) if m]
        self.assertEqual(numbers, list(range(n)), "lines lost, duplicated or out of order across rotations")
        self.assertGreater(len(glob.glob(base + ".*")), 5)
        for p in glob.glob(base + "*"):
            self.assertLessEqual(os.path.getsize(p), 64 * 1024)
        self.assertRegex(lines[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z 0/\d+ out line 0$")
        r = a.cli("logs", "web", "-n", "3")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([l.rsplit(" ", 1)[1] for l in r.stdout.splitlines()], [str(n - 3), str(n - 2), str(n - 1)])

    def test_rotation_keeps_at_most_log_max_files(self):
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{free_port()}"]}],
                       log_max_size="16K", log_max_files=2)
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0", {"print_lines": 5000})).returncode, 0)
        base = os.path.join(a.logs, "web", "app.log")
        # A rotation renames .1 to .2, then app.log to .1: between the two, .1 is briefly absent.
        # What must hold is the end state, and never a third rotated file.
        listing = lambda: sorted(os.listdir(os.path.dirname(base)))  # noqa: E731
        wait_until(lambda: listing() == ["app.log", "app.log.1", "app.log.2"], 10, "two rotated files")
        self.assertFalse(os.path.exists(base + ".3"))


if __name__ == "__main__":
    unittest.main()
