"""The git trigger: `git push` to the app's bare repository (created by the agent, with its
post-receive hook) puts the commit live with zero failed requests, and the pusher sees the
rollout as remote: lines. Other branches are ignored, a commit without package.json is
refused, force pushes work, pushes during a rollout queue with the latest winning, and the
build step runs in the release before any worker does."""
import json
import os
import pwd
import shutil
import subprocess
import unittest

from harness import FIXTURE, AgentTest, Load, free_port, http_get, wait_until


class GitApp(AgentTest):
    build = None

    def setUp(self):
        super().setUp()
        self.port = free_port()
        app = {"name": "web", "command": ["node", "server.js"], "instances": 2,
               "listen": [f"127.0.0.1:{self.port}"], "ready_timeout": "20s"}
        self.a = self.agent([app])
        self.bare = os.path.join(self.a.dir, "web.git")
        app["git"] = self.bare
        app["branch"] = "main"
        if self.build:
            app.update(self.build)
        self.a.write_config()
        self.a.start(wait_ready=False)
        wait_until(lambda: os.access(os.path.join(self.bare, "hooks", "post-receive"), os.X_OK), 10,
                   "the agent to create the repository and its hook")
        self.work = os.path.join(self.a.dir, "work")
        self.git("clone", "-q", self.bare, self.work, cwd=self.a.dir)
        self.git("checkout", "-q", "-b", "main")
        shutil.copy(FIXTURE, self.work)
        out = self.commit_and_push("1.0.0")
        self.assertIn("remote: agent: live: ", out)
        self.a.wait_serving("web", 2)

    def git(self, *args, cwd=None, check=True):
        r = subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd or self.work,
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        if check and r.returncode != 0:
            raise AssertionError(f"git {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def commit(self, version, knobs=None, extra=None):
        with open(os.path.join(self.work, "package.json"), "w") as f:
            json.dump({"name": "fixture", "version": version, "knobs": knobs or {}}, f)
        for name, text in (extra or {}).items():
            with open(os.path.join(self.work, name), "w") as f:
                f.write(text)
        self.git("add", "-A")
        self.git("commit", "-qm", f"version {version}")
        return self.git("rev-parse", "HEAD").stdout.strip()

    def push(self, *args):
        r = self.git("push", *args, check=False)
        return r.stdout + r.stderr  # git shows the hook's output ("remote: ...") on stderr

    def commit_and_push(self, version, knobs=None):
        self.commit(version, knobs)
        return self.push("origin", "main")

    def push_async(self, sha):
        # A push by commit id to the repository's path: no remote-tracking ref to fight over
        # when several pushes run at once.
        return subprocess.Popen(["git", "push", self.bare, f"{sha}:refs/heads/main"], cwd=self.work,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)

    def version_live(self):
        return http_get(self.port).split("version=")[1].split()[0]


class Push(GitApp):
    def test_a_push_goes_live_under_load_and_the_journal_has_the_commit(self):
        load = Load(self.port)
        sha = self.commit("1.0.1")
        out = self.push("origin", "main")
        load_summary = load.stop()
        self.assertNoFailures(load_summary)
        lines = [l for l in out.splitlines() if l.startswith("remote: agent: ")]
        self.assertIn(f"pushed to refs/heads/main", lines[0])
        self.assertTrue(any("exporting commit " + sha[:7] in l for l in lines), out)
        self.assertRegex(lines[-1], r"remote: agent: live: \S+-1\.0\.1\+" + sha[:7] + " ", out)
        self.assertEqual(self.version_live(), "1.0.1")
        last = [e for e in self.a.journal("web") if e["event"] == "activated"][-1]
        self.assertEqual((last["source"], last["revision"], last["version"]), ("git", sha, "1.0.1+" + sha[:7]))
        self.assertTrue(self.a.current("web").endswith("-1.0.1+" + sha[:7]))

    def test_other_branches_are_ignored_and_a_commit_without_package_json_is_refused(self):
        before = self.a.current("web")
        self.git("checkout", "-q", "-b", "feature")
        self.commit("9.9.9")
        out = self.push("origin", "feature")
        self.assertIn("remote: agent: ignored: web deploys pushes to main, not feature; nothing changed", out)

        self.git("checkout", "-q", "main")
        self.git("rm", "-q", "package.json")
        self.git("commit", "-qm", "drop package.json")
        sha = self.git("rev-parse", "HEAD").stdout.strip()
        out = self.push("origin", "main")
        self.assertIn(f"remote: agent: NOT deployed: refused: commit {sha[:7]} has no package.json at the top of "
                      "its tree: nothing to deploy", out)
        self.assertEqual(self.a.current("web"), before)
        self.assertEqual(self.version_live(), "1.0.0")
        refused = [e for e in self.a.journal("web") if e["event"] == "refused"]
        self.assertEqual(len(refused), 1)
        self.assertEqual((refused[0]["source"], refused[0]["revision"]), ("git", sha))
        r = self.a.cli("releases", "web")
        self.assertIn("refused", r.stdout)
        self.assertIn("has no package.json", r.stdout)

    def test_a_force_push_deploys_the_rewritten_branch(self):
        self.commit("1.0.1")
        self.assertIn("remote: agent: live:", self.push("origin", "main"))
        self.git("reset", "-q", "--hard", "HEAD~1")
        sha = self.commit("1.0.2")
        out = self.push("-f", "origin", "main")
        self.assertIn("forced update", out)
        self.assertRegex(out, r"remote: agent: live: \S+-1\.0\.2\+" + sha[:7])
        self.assertEqual(self.version_live(), "1.0.2")

    def test_pushes_during_a_rollout_queue_and_only_the_latest_runs(self):
        # 1.0.1's workers take 1.5 s each to listen: its rollout is still running when the
        # next two pushes arrive.
        slow = self.commit("1.0.1", {"listen_delay_ms": 1500})
        p1 = self.push_async(slow)
        wait_until(lambda: self.a.app_status("web")["operation"], 10, "the first push's rollout to start")
        second = self.commit("1.0.2")
        p2 = self.push_async(second)
        wait_until(lambda: self.a.output().count("deploy requested by") >= 3, 10, "the second push to reach the agent")
        third = self.commit("1.0.3")
        p3 = self.push_async(third)
        outs = [p.communicate(timeout=60)[0] for p in (p1, p2, p3)]
        self.assertIn("remote: agent: live:", outs[0])
        self.assertIn("queued: waiting for the running deploy of web", outs[1])
        self.assertIn("remote: agent: NOT deployed: superseded by a newer request (deploy)", outs[1])
        self.assertIn("remote: agent: live:", outs[2])
        self.assertEqual(self.version_live(), "1.0.3")
        staged = [e["version"] for e in self.a.journal("web") if e["event"] == "staged"]
        self.assertEqual([v.split("+")[0] for v in staged], ["1.0.0", "1.0.1", "1.0.3"])

    def test_a_push_while_the_agent_is_down_is_kept_and_deployable(self):
        before = self.a.current("web")
        self.assertEqual(self.a.stop(), 0)
        sha = self.commit("1.0.1")
        out = self.push("origin", "main")
        self.assertIn("remote: agent: NOT deployed: ", out)
        self.assertIn(f"(the push is stored; deploy it with: agent deploy web --rev {sha[:7]})", out)
        self.a.start()  # what was live comes back; the push waits for the operator
        self.assertEqual(self.a.current("web"), before)
        r = self.a.cli("deploy", "web", "--rev", sha[:7])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.version_live(), "1.0.1")
        # With nothing deployed at all (a new host, state lost), start deploys the branch.
        self.assertEqual(self.a.stop(), 0)
        shutil.rmtree(self.a.state)
        self.a.start()
        self.assertTrue(self.a.current("web").endswith("-1.0.1+" + sha[:7]))

    def test_deploy_rev_from_the_cli(self):
        first = self.git("rev-parse", "HEAD").stdout.strip()
        self.commit_and_push("1.0.1")
        r = self.a.cli("deploy", "web", "--rev", first[:10])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.version_live(), "1.0.0")
        self.assertRegex(self.a.current("web"), r"-1\.0\.0\+" + first[:7] + r"(_\d+)?$")
        r = self.a.cli("deploy", "web", "--rev", "no-such-branch")
        self.assertEqual(r.returncode, 1)
        self.assertIn("no-such-branch", r.stderr)


class PushOverSsh(GitApp):
    """The same push through a real sshd on loopback: the hook then runs in sshd's clean
    environment, as a real server's would."""

    def setUp(self):
        super().setUp()
        sshd = shutil.which("sshd") or "/usr/sbin/sshd"
        if os.geteuid() != 0 or not os.path.exists(sshd):
            self.skipTest("needs root and openssh-server (scripts/setup.sh installs it)")
        d = os.path.join(self.a.dir, "ssh")
        os.makedirs(d, mode=0o700)
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, name)], check=True)
        shutil.copy(os.path.join(d, "client.pub"), os.path.join(d, "authorized_keys"))
        self.ssh_port = free_port()
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write(f"Port {self.ssh_port}\nListenAddress 127.0.0.1\nHostKey {d}/host\n"
                    f"AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                    f"PidFile {d}/sshd.pid\nStrictModes no\n")
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        self.sshd = subprocess.Popen([sshd, "-D", "-e", "-f", os.path.join(d, "sshd_config")],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "sshd.log"), "w"))
        self.addCleanup(lambda: (self.sshd.kill(), self.sshd.wait()))
        wait_until(lambda: self.port_open(self.ssh_port), 10, "sshd to listen")
        self.ssh_env = dict(os.environ, GIT_SSH_COMMAND=f"ssh -p {self.ssh_port} -i {d}/client -o BatchMode=yes "
                            "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR")

    @staticmethod
    def port_open(port):
        import socket
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    def test_a_push_over_ssh_goes_live_under_load(self):
        load = Load(self.port)
        sha = self.commit("1.0.1")
        r = subprocess.run(["git", "push", f"ssh://root@127.0.0.1:{self.ssh_port}{self.bare}", "HEAD:main"],
                           cwd=self.work, env=self.ssh_env, capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        out = r.stdout + r.stderr
        self.assertEqual(r.returncode, 0, out)
        self.assertNoFailures(load.stop())
        self.assertRegex(out, r"remote: agent: live: \S+-1\.0\.1\+" + sha[:7], out)
        self.assertEqual(self.version_live(), "1.0.1")


class Build(GitApp):
    build = {"build": "echo building $APP_VERSION in $PWD; test -f ok-to-build || { echo 'missing ok-to-build' >&2; exit 2; };"
                      " echo done > BUILT", "build_timeout": "20s"}

    def commit(self, version, knobs=None, extra=None):
        extra = dict(extra or {})
        if version != "2.0.0":
            extra.setdefault("ok-to-build", "yes\n")
        return super().commit(version, knobs, extra)

    def test_the_build_runs_in_the_release_and_a_failed_build_touches_nothing(self):
        cur = self.a.current("web")
        self.assertTrue(os.path.exists(os.path.join(self.a.state, "web", "releases", cur, "BUILT")))
        log = open(os.path.join(self.a.logs, "web", "app.log")).read()
        self.assertIn(f"build building 1.0.0 in {os.path.join(self.a.state, 'web', 'releases', cur)}", log)

        # 2.0.0 lacks ok-to-build: the build fails, the release is marked failed, 1.0.0 keeps serving.
        os.remove(os.path.join(self.work, "ok-to-build"))
        load = Load(self.port)
        out = self.commit_and_push("2.0.0")
        self.assertNoFailures(load.stop())
        self.assertIn("remote: agent: build: missing ok-to-build", out)
        self.assertIn("remote: agent: NOT deployed: refused: build failed: exited with status 2; last output: "
                      "building 2.0.0", out)
        self.assertEqual(self.a.current("web"), cur)
        self.assertEqual(self.version_live(), "1.0.0")
        failed = [e for e in self.a.journal("web") if e["event"] == "failed"]
        self.assertEqual(len(failed), 1)
        self.assertIn("missing ok-to-build", failed[0]["reason"])
        self.assertTrue(self.a.alerts("deploy_refused"))
        r = self.a.cli("releases", "web")
        self.assertRegex(r.stdout, r"2\.0\.0\+\w+ +git +failed +build failed: exited with status 2")


@unittest.skipUnless(os.geteuid() == 0, "creating a user needs root")
class BuildAsUser(GitApp):
    """With `user`, the build runs as that account and may write anywhere in its release,
    tracked subdirectories included (the export made them root's)."""
    user = f"agtbld{os.getpid()}"
    build = {"build": "id -un > built-by && echo generated > lib/generated.js", "user": user}

    def setUp(self):
        subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", self.user], check=True)
        self.addCleanup(subprocess.run, ["userdel", self.user], check=False)
        super().setUp()

    def commit(self, version, knobs=None, extra=None):
        os.makedirs(os.path.join(self.work, "lib"), exist_ok=True)
        return super().commit(version, knobs, dict(extra or {}, **{"lib/tracked.js": "// tracked\n"}))

    def test_the_build_runs_as_the_user_and_writes_into_tracked_directories(self):
        rel = os.path.join(self.a.state, "web", "releases", self.a.current("web"))
        with open(os.path.join(rel, "built-by")) as f:
            self.assertEqual(f.read().strip(), self.user)
        with open(os.path.join(rel, "lib", "generated.js")) as f:
            self.assertEqual(f.read(), "generated\n")
        self.assertEqual({w["pid"] for w in self.a.serving("web")} and
                         {os.stat(f"/proc/{w['pid']}").st_uid for w in self.a.serving("web")},
                         {pwd.getpwnam(self.user).pw_uid})


if __name__ == "__main__":
    unittest.main(verbosity=2)
