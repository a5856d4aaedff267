"""Worker output goes to log_dir/<app>/app.log, rotated by the agent with no line lost."""
import calendar
import glob
import os
import re
import subprocess
import threading
import time
import unittest

from harness import AGENT, AgentTest, free_port, wait_until

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z) (\d+)/\d+ (out|err) ")


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

    def test_n_reaches_into_rotated_files(self):
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{free_port()}"]}],
                       log_max_size="64K", log_max_files=50)
        a.start(wait_ready=False)
        n = 6000
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0", {"print_lines": n})).returncode, 0)
        base = os.path.join(a.logs, "web", "app.log")
        def last_line_written():
            with open(base) as f:
                return f" out line {n - 1}\n" in f.read()
        wait_until(last_line_written, 20, "the last line")
        self.assertGreater(len(glob.glob(base + ".*")), 2)
        r = a.cli("logs", "web", "-n", "5000")
        self.assertEqual(r.returncode, 0, r.stderr)
        numbers = [int(m.group(1)) for m in (re.search(r" out line (\d+)$", l) for l in r.stdout.splitlines()) if m]
        self.assertEqual(numbers, list(range(n - len(numbers), n)))
        self.assertGreater(len(numbers), 4900)  # the rest are the agent's own lines (build, ready)
        self.assertEqual(len(r.stdout.splitlines()), 5000)


class LogsCli(AgentTest):
    """`agent logs` as an operator uses it: every app at once, by stream, slot and age, and
    followed across rotation."""

    def test_all_apps_streams_slots_and_a_broken_config(self):
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{free_port()}"], "instances": 2},
                        {"name": "api", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{free_port()}"]}])
        a.start(wait_ready=False)
        knobs = {"print_lines": 4, "print_err_lines": 3}
        for app in ("web", "api"):
            self.assertEqual(a.cli("deploy", app, "--from", a.make_release("1.0.0", knobs)).returncode, 0)

        r = a.cli("logs", "-n", "1000")
        self.assertEqual(r.returncode, 0, r.stderr)
        lines = r.stdout.splitlines()
        self.assertTrue(all(l.startswith(("web | ", "api | ")) for l in lines), lines)
        self.assertEqual(sum(l.startswith("api | ") and l.endswith(" err problem 2") for l in lines), 1)
        self.assertEqual(sum(l.startswith("web | ") and l.endswith(" err problem 2") for l in lines), 2)
        times = [m.group(1) for m in (STAMP.match(l[6:]) for l in lines) if m]
        self.assertEqual(times, sorted(times), "apps merged out of time order")

        r = a.cli("logs", "web", "--stream", "err")
        self.assertEqual(r.returncode, 0, r.stderr)
        err = r.stdout.splitlines()
        self.assertEqual(len(err), 6, err)
        self.assertTrue(all(STAMP.match(l).group(3) == "err" for l in err), err)

        r = a.cli("logs", "web", "--slot", "1", "--stream", "out")
        out = r.stdout.splitlines()
        self.assertEqual(len(out), 4, out)
        self.assertTrue(all(STAMP.match(l).group(2) == "1" for l in out), out)

        self.assertEqual(a.cli("logs", "web", "--since", "1h", "--stream", "err").stdout.splitlines(), err)
        # Lines older than --since are left out: the log's first line is now over 1 s old.
        written = calendar.timegm(time.strptime(STAMP.match(err[0]).group(1)[:19], "%Y-%m-%dT%H:%M:%S"))
        wait_until(lambda: time.time() - written >= 2.5, 10, "the lines to age")
        self.assertEqual(a.cli("logs", "web", "--since", "1s").stdout.strip(), "")

        # A semantic error in the config (not a syntax error): logs still reads.
        broken = a.config + ".broken.toml"
        with open(a.config) as f, open(broken, "w") as g:
            g.write(f.read().replace("instances = 2", "instances = 0"))
        r = subprocess.run([AGENT, "logs", "web", "--stream", "err", "-c", broken], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("see agent check", r.stderr)
        self.assertEqual(r.stdout.splitlines(), err)

    def test_follow_across_rotation_loses_and_repeats_nothing(self):
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{free_port()}"]}],
                       log_max_size="16K", log_max_files=3)
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0", {"tick_ms": 1, "tick_bytes": 200})).returncode, 0)
        follower = subprocess.Popen([AGENT, "logs", "web", "-f", "-n", "0", "-c", a.config], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True)
        seen = []
        reader = threading.Thread(target=lambda: [seen.append(l) for l in follower.stdout], daemon=True)
        reader.start()
        base = os.path.join(a.logs, "web", "app.log")
        inode = os.stat(base).st_ino
        rotations = [0]

        def enough():
            nonlocal inode
            now = os.stat(base).st_ino if os.path.exists(base) else inode
            if now != inode:
                inode, rotations[0] = now, rotations[0] + 1
            return len(seen) >= 3000 and rotations[0] >= 5
        wait_until(enough, 60, "3000 lines followed across 5 rotations")
        follower.terminate()
        follower.wait(10)
        reader.join(10)
        follower.stdout.close()
        follower.stderr.close()
        ticks = [int(m.group(1)) for m in (re.search(r" out tick (\d+) ", l) for l in seen) if m]
        self.assertGreater(len(ticks), 2900)
        self.assertEqual(ticks, list(range(ticks[0], ticks[0] + len(ticks))), "a line lost or repeated while following")


if __name__ == "__main__":
    unittest.main()
