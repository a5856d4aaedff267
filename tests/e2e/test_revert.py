"""A release that cannot start is reverted: no failed request, current unmoved, journal says why."""
import os
import unittest

from harness import AgentTest, Load, free_port, http_get, wait_until


class Revert(AgentTest):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 4,
                              "listen": [f"127.0.0.1:{self.port}"], "ready_timeout": "3s"}])
        self.a.start(wait_ready=False)
        r = self.a.cli("deploy", "web", "--from", self.a.make_release("1.0.0"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.good = self.a.current("web")

    def deploy_broken(self, knobs, expect_in_error):
        load = Load(self.port)
        r = self.a.cli("deploy", "web", "--from", self.a.make_release("2.0.0", knobs))
        s = load.stop()
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("reverted", r.stderr)
        self.assertIn(expect_in_error, r.stderr)
        self.assertNoFailures(s)
        self.assertEqual(self.a.current("web"), self.good)
        st = self.a.wait_serving("web", 4, release=self.good)
        self.assertEqual(st["state"], "running")
        self.a.wait_drained("web")
        self.assertIn("release=" + self.good, http_get(self.port))
        last = self.a.journal("web")[-1]
        self.assertEqual(last["event"], "failed")
        self.assertTrue(last["release"].endswith("-2.0.0"))
        self.assertIn(expect_in_error, last["reason"])
        self.assertEqual(self.a.alerts("rollout_failed")[-1]["release"], last["release"])
        return r

    def test_half_swapped_release_is_swapped_back(self):
        # Workers 0 and 1 start fine on 2.0.0, worker 2 throws: two slots must be swapped back.
        r = self.deploy_broken({"throw_at_start_from_worker": 2}, "exited before ready: exited with status 1")
        self.assertIn("swapping 2 slots back", r.stdout)
        self.assertIn("last output: ", r.stderr)  # the worker's own words: the exception it threw
        self.assertIn("Error: release 2.0.0 is broken for worker 2 (test knob)", r.stderr)
        self.assertIn("reverting: starting slot 1", r.stdout)
        self.assertIn("reverting: starting slot 0", r.stdout)
        rel = os.path.join(self.a.state, "web", "releases")
        self.assertEqual(len([d for d in os.listdir(rel) if d.endswith("-2.0.0")]), 1)  # kept, marked failed

    def test_release_never_ready_is_reverted_at_ready_timeout(self):
        self.deploy_broken({"listen_delay_ms": 60000}, "not ready within 3s: it never wrote a newline to $READY_FD")

    def test_exec_failure_names_the_step(self):
        # A command whose interpreter is missing passes the PATH check but cannot be exec'd.
        src = self.a.make_release("3.0.0")
        os.rename(os.path.join(src, "server.js"), os.path.join(src, "real.js"))
        with open(os.path.join(src, "start"), "w") as f:
            f.write("#!/nonexistent/interpreter\n")
        os.chmod(os.path.join(src, "start"), 0o755)
        self.a.apps[0]["command"] = ["./start"]
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        r = self.a.cli("deploy", "web", "--from", src)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("could not start: exec", r.stderr)
        self.assertIn("No such file or directory", r.stderr)
        self.assertEqual(self.a.current("web"), self.good)

    def test_command_not_on_path_is_refused_before_anything_starts(self):
        self.a.apps[0]["command"] = ["no-such-runtime", "server.js"]
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        pids = {w["pid"] for w in self.a.serving("web")}
        r = self.a.cli("deploy", "web", "--from", self.a.make_release("4.0.0"))
        self.assertEqual(r.returncode, 1)
        self.assertIn('refused: preflight of', r.stderr)
        self.assertIn('command "no-such-runtime" is not on the launch PATH', r.stderr)
        self.assertEqual({w["pid"] for w in self.a.serving("web")}, pids)  # nothing was touched
        self.assertEqual(self.a.alerts("deploy_refused")[-1]["app"], "web")


class FirstDeploy(AgentTest):
    def test_failed_first_deploy_leaves_nothing_running(self):
        port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{port}"]}])
        a.start(wait_ready=False)
        r = a.cli("deploy", "web", "--from", a.make_release("1.0.0", {"throw_at_start_from_worker": 1}))
        self.assertEqual(r.returncode, 1)
        self.assertIn("nothing to go back to", r.stdout)
        wait_until(lambda: a.app_status("web")["workers"] == [], 10, "the half-started release to be gone")
        self.assertIsNone(a.current("web"))
        self.assertEqual(a.journal("web")[-1]["event"], "failed")
        # And the next, good deploy simply works.
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.1")).returncode, 0)
        self.assertIn("version=1.0.1", http_get(port))


if __name__ == "__main__":
    unittest.main()
