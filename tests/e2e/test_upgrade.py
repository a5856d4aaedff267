"""agent upgrade (issue 19): the daemon executes its binary again from disk, in the same pid,
with the same workers. The binary is replaced as a package manager does it (a new file renamed
over the old: a new inode), under load. Then: what a draining worker's timers become, what a
bad new binary gets, what a busy agent does, and what happens when the new image dies while
taking over (the next agent takes the workers over as after a crash)."""
import json
import os
import shutil
import stat
import time
import unittest

from harness import AGENT, AgentTest, Load, free_port, process_alive, wait_until
from test_systemd import Launcher


class UpgradeTest(AgentTest):
    def make(self, instances=2, **extra):
        self.port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": instances,
                         "listen": [f"127.0.0.1:{self.port}"], **extra}])
        a.apps[0]["source"] = a.make_release("1.0.0")
        a.write_config()
        bindir = os.path.join(a.dir, "bin")
        os.makedirs(bindir)
        a.binary = os.path.join(bindir, "agent")
        shutil.copy(AGENT, a.binary)
        return a

    def replace_binary(self, a, source=AGENT, mode=0o755):
        """A new file renamed over the binary, as dpkg and rpm do: the running image's file is
        unlinked, the path names a new inode."""
        tmp = a.binary + ".new"
        shutil.copy(source, tmp)
        os.chmod(tmp, mode)
        os.rename(tmp, a.binary)
        return os.stat(a.binary).st_ino

    def script(self, a, body):
        path = os.path.join(a.dir, "fake-agent.sh")
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body.replace("REAL", AGENT) + "\n")
        os.chmod(path, 0o755)
        return path

    def exe_inode(self, pid):
        return os.stat(f"/proc/{pid}/exe").st_ino

    def pids(self, a):
        return sorted(w["pid"] for w in a.serving("web"))

    def history(self, a, op):
        r = a.cli("history", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        data = json.loads(r.stdout)
        return [e for e in (data["entries"] if isinstance(data, dict) else data) if e["op"] == op]


class Upgrade(UpgradeTest):
    def test_under_load_the_same_pid_and_workers_run_the_new_binary(self):
        a = self.make(instances=2)
        a.start()
        pid, workers = a.proc.pid, self.pids(a)
        old_ino = self.exe_inode(pid)
        load = Load(self.port)
        wait_until(lambda: load.answered() > 50, 10, "load to be answered")
        new_ino = self.replace_binary(a)
        self.assertNotEqual(new_ino, old_ino)
        r = a.cli("upgrade")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("checked: agent ", r.stdout)
        self.assertIn(f"in pid {pid} (", r.stdout)
        self.assertIn("2 of 2 worker(s) kept", r.stdout)
        st = a.try_status()
        self.assertEqual(st["pid"], pid)
        self.assertEqual(st["generation"], 1)
        self.assertEqual(self.exe_inode(pid), new_ino)  # the new file runs
        self.assertEqual(self.pids(a), workers)        # not one worker restarted
        for w in workers:
            with open(f"/proc/{w}/stat") as f:
                self.assertEqual(int(f.read().rsplit(")", 1)[1].split()[1]), pid, "the worker is still the agent's child")
        before = load.answered()
        wait_until(lambda: load.answered() > before + 50, 10, "requests answered after the upgrade")
        # The workers' output still reaches app.log through the pipes the new image took over.
        r = a.cli("deploy", "web", "--from", a.make_release("1.1.0", {"print_lines": 2}))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual({w["release"] for w in a.serving("web")}, {a.current("web")})
        self.assertNoFailures(load.stop())
        # Again: the second image hands over to a third as the first did.
        self.replace_binary(a)
        r = a.cli("upgrade")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(a.try_status()["generation"], 2)
        self.assertEqual(a.try_status()["pid"], pid)
        ups = self.history(a, "agent_upgrade")
        self.assertEqual(len(ups), 2, ups)
        self.assertIn("2 worker(s) kept", ups[0]["detail"])
        # Only what the agent hands over crosses execve: no fd of the daemon is left open that
        # it does not know (the listening, control and metrics sockets, pidfds, pipes, its own).
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        self.replace_binary(a)
        self.assertEqual(a.cli("upgrade").returncode, 0)
        self.assertLessEqual(len(os.listdir(f"/proc/{pid}/fd")), fds, "fds pile up upgrade after upgrade")
        self.assertEqual(a.stop(), 0)
        for w in workers:
            self.assertFalse(process_alive(w))

    def test_a_draining_workers_kill_timeout_still_fires_after_the_upgrade(self):
        a = self.make(instances=1, drain_timeout="1s", kill_timeout="5s")
        a.apps[0]["source"] = a.make_release("1.0.0", {"ignore_term": True})
        a.write_config()
        a.start()
        stubborn = self.pids(a)[0]
        r = a.cli("deploy", "web", "--from", a.make_release("1.1.0"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        drain_began = time.time()  # within the deploy's last moments: the drain starts as it commits
        wait_until(lambda: a.alerts("drain_stalled"), 5, "the drain_stalled alert of the old worker")
        time.sleep(max(0, drain_began + 2.5 - time.time()))  # let the drain get 2.5 s old
        self.replace_binary(a)
        r = a.cli("upgrade")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("2 of 2 worker(s) kept", r.stdout)  # the serving one and the draining one
        killed = wait_until(lambda: a.alerts("worker_killed"), 10, "kill_timeout's SIGKILL after the upgrade")
        # The alert follows the SIGKILL at once; the kernel ends the process a moment later.
        wait_until(lambda: not process_alive(stubborn), 5, "the worker SIGKILLed at kill_timeout to be gone")
        # kill_timeout counts from the drain's start, not from the upgrade (that would be 7.5 s).
        self.assertLess(killed[0]["time_ms"] / 1000 - drain_began, 6.5, killed)
        self.assertEqual(len(a.alerts("drain_stalled")), 1, "drain_timeout's alert is not raised again by the new image")
        self.assertEqual(a.stop(), 0)

    def test_under_systemd_reloading_then_ready_from_the_same_main_pid(self):
        a = self.make(instances=1)
        launcher = Launcher(a, self.port)
        self.addCleanup(launcher.close)
        launcher.start()
        launcher.wait_for("READY=1")
        launcher.messages.clear()
        self.replace_binary(a)
        r = a.cli("upgrade")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        launcher.wait_for("RELOADING=1")
        launcher.wait_for("READY=1")
        self.assertEqual(a.try_status()["pid"], a.proc.pid)
        self.assertEqual(a.stop(), 0)
        launcher.wait_for("STOPPING=1", 5)


class Refused(UpgradeTest):
    def assertStillServing(self, a, pid, ino, workers):
        st = a.try_status()
        self.assertEqual((st["pid"], st["generation"]), (pid, 0))
        self.assertEqual(self.exe_inode(pid), ino)
        self.assertEqual(self.pids(a), workers)

    def test_a_binary_that_is_not_executable_or_fails_check_is_refused_and_the_old_one_serves(self):
        a = self.make(instances=2)
        a.start()
        pid, workers = a.proc.pid, self.pids(a)
        ino = self.exe_inode(pid)
        load = Load(self.port)
        self.replace_binary(a, mode=0o644)
        r = a.cli("upgrade")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn(f"{a.binary} is not executable", r.stderr)
        self.assertIn("this agent keeps running", r.stderr)
        self.assertStillServing(a, pid, ino, workers)
        # A binary that runs but rejects the config (an older agent that lacks a key, say).
        fails_check = self.script(a, 'case "$1" in check) echo "agent.toml:3:1: unknown key" >&2; exit 1;; esac\nexec REAL "$@"')
        self.replace_binary(a, source=fails_check)
        r = a.cli("upgrade")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("check of " + a.config + " failed: agent.toml:3:1: unknown key", r.stderr)
        self.assertStillServing(a, pid, ino, workers)
        self.assertNoFailures(load.stop())
        self.assertEqual(a.stop(), 0)

    def test_an_execve_that_fails_leaves_the_old_image_serving(self):
        a = self.make(instances=2)
        a.start()
        pid, workers = a.proc.pid, self.pids(a)
        ino = self.exe_inode(pid)
        load = Load(self.port)
        # It passes its checks, then is no longer executable when the daemon executes it.
        vanishing = self.script(a, 'case "$1" in check) chmod 644 "$0";; esac\nexec REAL "$@"')
        self.replace_binary(a, source=vanishing)
        r = a.cli("upgrade")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("upgrade failed: execve " + a.binary, r.stderr)
        self.assertIn("this agent keeps running", r.stderr)
        self.assertStillServing(a, pid, ino, workers)
        before = load.answered()
        wait_until(lambda: load.answered() > before + 50, 10, "requests answered after the failed execve")
        r = a.cli("deploy", "web", "--from", a.make_release("1.1.0"))  # the old image works on
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNoFailures(load.stop())
        self.assertEqual(a.stop(), 0)

    def test_a_config_edited_while_the_binary_is_checked_is_refused(self):
        a = self.make(instances=1)
        a.start()
        slow = self.script(a, 'case "$1" in check) echo checking > "$(dirname "$0")/checking"; '
                              'while [ ! -e "$(dirname "$0")/edited" ]; do sleep 0.05; done;; esac\nexec REAL "$@"')
        self.replace_binary(a, source=slow)
        upgrade = a.cli_async("upgrade")
        wait_until(lambda: os.path.exists(os.path.join(a.dir, "bin", "checking")), 10, "the check to run")
        a.apps[0]["instances"] = 2
        a.write_config()
        open(os.path.join(a.dir, "bin", "edited"), "w").close()
        out, err = upgrade.communicate(timeout=30)
        self.assertEqual(upgrade.returncode, 1, out + err)
        self.assertIn("changed while the new binary was checked: reload it, then upgrade again", err)
        self.assertEqual(a.try_status()["generation"], 0)
        self.assertEqual(a.stop(), 0)

    def test_a_busy_agent_is_waited_for_up_to_wait(self):
        a = self.make(instances=1)
        a.start()
        self.replace_binary(a)
        slow = a.make_release("1.1.0", {"listen_delay_ms": 4000})
        deploy = a.cli_async("deploy", "web", "--from", slow)
        wait_until(lambda: a.app_status("web")["operation"] == "deploy", 10, "the deploy to run")
        r = a.cli("upgrade", "--wait", "1s")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("busy: web: deploy in progress", r.stderr)
        self.assertIn("(still, after --wait)", r.stderr)
        self.assertEqual(a.try_status()["generation"], 0)
        r = a.cli("upgrade", "--wait", "30s")  # waits for the deploy, then upgrades
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("waiting: busy: web: deploy in progress", r.stdout)
        out, err = deploy.communicate(timeout=30)
        self.assertEqual(deploy.returncode, 0, out + err)
        self.assertEqual(a.try_status()["generation"], 1)
        self.assertEqual(a.stop(), 0)

    def test_a_new_image_that_dies_taking_over_leaves_the_workers_to_the_next_agent(self):
        a = self.make(instances=2)
        a.start()
        workers = self.pids(a)
        load = Load(self.port)
        # The real binary, given a handoff it cannot read: it fails taking over, as a new image
        # that does not understand the old one's state would.
        dies = self.script(a, 'case "$1" in run) AGENT_HANDOFF_FD=999 exec REAL "$@";; esac\nexec REAL "$@"')
        self.replace_binary(a, source=dies)
        r = a.cli("upgrade")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("the new image exited while taking over", r.stderr)
        self.assertEqual(a.proc.wait(10), 1)
        self.assertIn("cannot start: the previous image's handoff is not JSON", a.output())
        a.expect_clean_exit = False  # this image died: what follows is the crash path
        for w in workers:
            self.assertTrue(process_alive(w), "the workers outlive the image that died")
        before = load.answered()
        wait_until(lambda: load.answered() > before + 20, 10, "the orphaned workers to keep answering")
        # The next agent (the real binary again) takes them over as after a crash.
        shutil.copy(AGENT, a.binary)
        a.start()
        self.assertIn("worker(s) of a previous agent still running", a.output())
        wait_until(lambda: not any(process_alive(w) for w in workers), 20, "the previous workers to be drained")
        self.assertNoFailures(load.stop())
        a.expect_clean_exit = True
        self.assertEqual(a.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
