"""The agent's own packages (issue 19), built by cpack from this build tree: lintian on the .deb;
the .rpm's files, config files and scriptlets, and an install into a throwaway root; then the
.deb for real on this machine (as root): installed, its agent running workers under load,
upgraded to a second build (its postinst runs `agent upgrade`: the same daemon and worker pids,
no failed request), removed and purged (the state directory stays)."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import AGENT, AgentTest, Load, free_port, process_alive, wait_until

BUILD = os.path.dirname(os.path.abspath(AGENT))


def run(*cmd, env=None, timeout=300, cwd=None):
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL, cwd=cwd)


class Packages(AgentTest):
    @classmethod
    def setUpClass(cls):
        cls.out = tempfile.mkdtemp(prefix="agent-pkg-")
        # Two builds of the package: the second one's files are new inodes, as an upgrade's are.
        for name, extra in (("one", []), ("two", ["-D", "CPACK_PACKAGE_VERSION=0.1.0+test2"])):
            d = os.path.join(cls.out, name)
            r = run("cpack", "-G", "DEB;RPM", "-B", d, *extra, timeout=600, cwd=BUILD)
            assert r.returncode == 0, r.stdout + r.stderr
        cls.deb = [os.path.join(cls.out, "one", f) for f in os.listdir(os.path.join(cls.out, "one")) if f.endswith(".deb")][0]
        cls.deb2 = [os.path.join(cls.out, "two", f) for f in os.listdir(os.path.join(cls.out, "two")) if f.endswith(".deb")][0]
        cls.rpm = [os.path.join(cls.out, "one", f) for f in os.listdir(os.path.join(cls.out, "one")) if f.endswith(".rpm")][0]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.out, ignore_errors=True)

    def test_lintian_is_clean_on_the_deb(self):
        r = run("lintian", "--fail-on", "error,warning", self.deb)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        tags = [l for l in r.stdout.splitlines() if l[:2] in ("E:", "W:")]
        self.assertEqual(tags, [])
        info = run("dpkg-deb", "-I", self.deb).stdout
        self.assertIn("Depends: libgit2-", info)  # loaded by name at run time, so named by hand
        self.assertIn("libcurl4", info)
        files = run("dpkg-deb", "-c", self.deb).stdout
        for f in ("./usr/bin/agent", "./usr/share/man/man1/agent.1.gz", "./usr/share/man/man5/agent.toml.5.gz",
                  "./usr/share/bash-completion/completions/agent", "./usr/share/deploy-agent/shims/node/shim.js",
                  "./usr/lib/systemd/system/agent.service", "./etc/agent/agent.toml.example"):
            self.assertIn(f, files)
        self.assertNotIn("./etc/agent/agent.toml\n", files)
        conffiles = run("sh", "-c", f"dpkg-deb --ctrl-tarfile {self.deb} | tar -xO ./conffiles").stdout
        self.assertEqual(conffiles.split(), ["/etc/agent/agent.toml.example"])

    def test_the_rpm_files_scriptlets_and_an_install_into_a_throwaway_root(self):
        scripts = run("rpm", "-qp", "--scripts", self.rpm).stdout
        self.assertIn("posttrans scriptlet", scripts)
        self.assertIn("agent upgrade", scripts.split("posttrans scriptlet")[1])
        self.assertIn("systemctl stop agent.socket agent.service", scripts.split("preuninstall scriptlet")[1])
        self.assertNotIn("systemctl start", scripts)
        self.assertNotIn("systemctl enable", scripts)
        self.assertEqual(run("rpm", "-qp", "--configfiles", self.rpm).stdout.split(), ["/etc/agent/agent.toml.example"])
        requires = run("rpm", "-qp", "--requires", self.rpm).stdout
        self.assertIn("libgit2.so.", requires)
        root = tempfile.mkdtemp(prefix="agent-rpmroot-")
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        self.assertEqual(run("rpm", "--root", root, "--initdb").returncode, 0)
        r = run("rpm", "--root", root, "-i", "--nodeps", "--noscripts", self.rpm)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("deploy-agent-0.1.0", run("rpm", "--root", root, "-q", "deploy-agent").stdout)
        binary = os.path.join(root, "usr/bin/agent")
        self.assertTrue(os.access(binary, os.X_OK))
        # Stripped: no debug sections in the shipped binary.
        self.assertNotIn(".debug_info", run("readelf", "-S", binary).stdout)
        self.assertEqual(run(binary, "--version").returncode, 0)
        # The installed binary finds the installed shim.
        self.assertTrue(os.path.exists(os.path.join(root, "usr/share/deploy-agent/shims/node/shim.js")))

    def test_the_deb_installed_upgraded_under_load_keeping_every_worker_and_removed(self):
        if os.geteuid() != 0:
            self.skipTest("installing a .deb needs root")
        if run("dpkg-query", "-W", "deploy-agent").returncode == 0 or os.path.exists("/usr/bin/agent"):
            self.fail("/usr/bin/agent or deploy-agent is already on this machine: this test installs its own")
        self.addCleanup(lambda: run("dpkg", "--purge", "deploy-agent"))
        r = run("dpkg", "-i", self.deb)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(run("man", "-w", "agent.toml").returncode, 0)
        port = free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{port}"],
                         "shim": "node"}])
        a.apps[0]["source"] = a.make_release("1.0.0")
        a.write_config()
        a.binary = "/usr/bin/agent"
        a.start()
        self.assertIn('--require "/usr/share/deploy-agent/shims/node/shim.js"', run("/usr/bin/agent", "env", "web", "-c", a.config).stdout)
        pid, workers = a.proc.pid, sorted(w["pid"] for w in a.serving("web"))
        load = Load(port)
        wait_until(lambda: load.answered() > 50, 10, "load to be answered")
        # The upgrade: dpkg replaces /usr/bin/agent, and postinst runs `agent upgrade` (the agent
        # is found through $AGENT_CONFIG, as an operator's shell would have it).
        r = run("dpkg", "-i", self.deb2, env=dict(os.environ, AGENT_CONFIG=a.config))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("2 of 2 worker(s) kept", r.stdout)
        st = a.try_status()
        self.assertEqual((st["pid"], st["generation"]), (pid, 1))
        self.assertEqual(os.stat(f"/proc/{pid}/exe").st_ino, os.stat("/usr/bin/agent").st_ino)
        self.assertEqual(sorted(w["pid"] for w in a.serving("web")), workers)
        before = load.answered()
        wait_until(lambda: load.answered() > before + 50, 10, "requests answered after the upgrade")
        self.assertNoFailures(load.stop())
        # Removal: the binary goes, the conffile stays until purge, the state directory stays.
        self.assertEqual(a.stop(), 0)
        r = run("dpkg", "-r", "deploy-agent")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertFalse(os.path.exists("/usr/bin/agent"))
        self.assertTrue(os.path.exists("/etc/agent/agent.toml.example"))
        r = run("dpkg", "--purge", "deploy-agent")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("/var/lib/agent (the releases: your data)", r.stdout + r.stderr)
        self.assertFalse(os.path.exists("/etc/agent/agent.toml.example"))
        self.assertTrue(os.path.isdir(os.path.join(a.state, "web", "releases")))
        for w in workers:
            self.assertFalse(process_alive(w))


if __name__ == "__main__":
    unittest.main(verbosity=2)
