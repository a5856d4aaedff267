"""Faults the agent must survive with the serving workers untouched: a full disk while staging,
a state directory that turns read-only, a storm of triggers. Each gives one clear line; the
agent keeps running and the workers keep serving."""
import os
import subprocess
import threading
import unittest

from harness import AgentTest, Load, free_port, http_get, wait_until


class Faults(AgentTest):
    def app(self, port, **more):
        return dict({"name": "web", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{port}"]},
                    **more)

    def mount_tmpfs(self, path, size):
        os.makedirs(path, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", path],
                           capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        self.addCleanup(subprocess.run, ["umount", "-l", path], check=False)

    def releases(self, a):
        return sorted(os.listdir(os.path.join(a.state, "web", "releases")))

    @unittest.skipUnless(os.geteuid() == 0, "mounting a tmpfs needs root")
    def test_a_full_disk_while_staging_refuses_the_deploy_and_leaves_nothing_half_written(self):
        port = free_port()
        a = self.agent([self.app(port)])
        self.mount_tmpfs(a.state, "6m")
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        v1 = a.current("web")
        big = a.make_release("2.0.0")
        for i in range(10):  # 10 MB: more than the 6 MB the state directory has
            with open(os.path.join(big, f"blob{i}.bin"), "wb") as f:
                f.write(b"x" * (1 << 20))
        load = Load(port)
        r = a.cli("deploy", "web", "--from", big)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("No space left on device", r.stderr)
        self.assertEqual(self.releases(a), [v1], "a half-written release is visible")
        self.assertEqual(a.current("web"), v1)
        refused = a.alerts("deploy_refused")
        self.assertTrue(refused and "No space left on device" in refused[-1]["summary"], refused)
        self.assertNoFailures(load.stop())
        # The space is back: the next deploy goes through.
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("3.0.0")).returncode, 0)
        self.assertIn("version=3.0.0", http_get(port))

    @unittest.skipUnless(os.geteuid() == 0, "mounting a tmpfs needs root")
    def test_a_read_only_state_directory_refuses_deploys_and_keeps_serving(self):
        port = free_port()
        a = self.agent([self.app(port)])
        self.mount_tmpfs(a.state, "64m")
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        v1 = a.current("web")
        load = Load(port)
        subprocess.run(["mount", "-o", "remount,ro", a.state], check=True)
        r = a.cli("deploy", "web", "--from", a.make_release("2.0.0"))
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("Read-only file system", r.stderr)
        # Workers can still be replaced; the record of them cannot be written, which is said once.
        r = a.cli("reload", "web")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(a.output().count("cannot record the workers"), 1, a.output()[-3000:])
        self.assertNoFailures(load.stop())
        self.assertEqual(a.current("web"), v1)
        subprocess.run(["mount", "-o", "remount,rw", a.state], check=True)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("3.0.0")).returncode, 0)
        self.assertIn("version=3.0.0", http_get(port))

    def test_a_storm_of_marker_writes_is_one_deploy_of_the_last_version(self):
        port = free_port()
        a = self.agent([self.app(port, source="", settle="2s")])
        src = a.make_release("1.0.0")
        a.apps[0]["source"] = src
        a.write_config()
        a.start()
        pkg = os.path.join(src, "package.json")
        for i in range(300):  # 300 writes in well under a second
            with open(pkg, "w") as f:
                f.write('{"name": "fixture", "version": "2.0.%d"}' % i)
        wait_until(lambda: "version=2.0.299" in http_get(port) and not a.app_status("web")["operation"], 30,
                   "the last version to go live")
        staged = [e for e in a.journal("web") if e["event"] == "staged"]
        self.assertEqual([e["version"] for e in staged], ["1.0.0", "2.0.299"], staged)

    def test_requests_during_a_rollout_queue_one_and_the_latest_wins(self):
        port = free_port()
        a = self.agent([self.app(port, instances=3, ready_timeout="30s")])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        slow = a.cli_async("deploy", "web", "--from", a.make_release("2.0.0", {"listen_delay_ms": 5000}))
        wait_until(lambda: a.app_status("web")["operation"] == "deploy", 10, "the slow deploy to run")
        dirs = [a.make_release(f"3.0.{i}") for i in range(40)]
        results = [None] * len(dirs)

        def ask(i):
            results[i] = a.cli("deploy", "web", "--from", dirs[i])
        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(dirs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(slow.wait(60), 0)
        won = [i for i, r in enumerate(results) if r.returncode == 0]
        # One slot for a waiting request: only the last to arrive ran, every other was told.
        self.assertEqual(len(won), 1, [(r.returncode, r.stderr[-200:]) for r in results])
        for i, r in enumerate(results):
            if i not in won:
                self.assertIn("superseded by a newer request", r.stderr)
        staged = [e["version"] for e in a.journal("web") if e["event"] == "staged"]
        self.assertEqual(staged, ["1.0.0", "2.0.0", f"3.0.{won[0]}"], "every superseded request was staged")
        self.assertIn(f"version=3.0.{won[0]}", http_get(port))


if __name__ == "__main__":
    unittest.main()
