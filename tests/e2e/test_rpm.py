"""RPM end to end: the real rpmbuild builds examples/rpm/hello-node.spec, the real rpm -U
installs each package into the watched source directory (relocated, with a private rpm
database), and the agent rolls to it under load with no command typed. Broken packages are
refused or reverted while the old version keeps serving, and the journal and `agent releases`
say why."""
import os
import shutil
import subprocess
import tempfile
import unittest

from harness import REPO, AgentTest, Load, free_port, http_get, wait_until

SPEC_DIR = os.path.join(REPO, "examples", "rpm")
PACKAGES = {}  # name -> .rpm path, built once for every test


def build(name, version, *defines):
    out = os.path.join(BUILD_DIR, name)
    r = subprocess.run(["sh", os.path.join(SPEC_DIR, "build.sh"), version, out, *defines],
                       capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"rpmbuild of {name} failed:\n{r.stdout}\n{r.stderr}"
    PACKAGES[name] = r.stdout.strip().splitlines()[-1]


def setUpModule():
    global BUILD_DIR
    for tool in ("rpmbuild", "rpm"):
        assert shutil.which(tool), f"{tool} not found: scripts/setup.sh installs Debian's rpm package"
    BUILD_DIR = tempfile.mkdtemp(prefix="agent-rpm-")
    build("v100", "1.0.0")
    build("v101", "1.0.1")
    build("noversion", "1.0.2", "--define", "broken_noversion 1")
    build("crash", "1.0.3", "--define", "broken_crash 1")


def tearDownModule():
    shutil.rmtree(BUILD_DIR, ignore_errors=True)


class Rpm(AgentTest):
    watch = "REVISION"

    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.a = self.agent([{"name": "hello", "command": ["node", "server.js"], "instances": 2,
                              "listen": [f"127.0.0.1:{self.port}"], "watch": self.watch, "settle": "500ms",
                              "ready_timeout": "10s"}])
        self.src = os.path.join(self.a.dir, "opt", "hello-node")
        self.db = os.path.join(self.a.dir, "rpmdb")
        self.a.apps[0]["source"] = self.src
        self.a.write_config()
        self.rpm_install("v100")
        self.a.start()  # boot stages what the package installed
        self.assertIn("hello from 1.0.0 ", http_get(self.port))

    def rpm_install(self, name):
        r = subprocess.run(["sh", os.path.join(SPEC_DIR, "install.sh"), PACKAGES[name], self.src, self.db],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, f"rpm -U {name}: {r.stdout}{r.stderr}")
        # A failing %posttrans is only a warning to rpm: the recipe must have run cleanly.
        self.assertNotIn("scriptlet failed", r.stdout + r.stderr)

    def wait_for_event(self, event, count, timeout=30):
        def entries():
            found = [e for e in self.a.journal("hello") if e["event"] == event]
            return found if len(found) >= count else None
        return wait_until(entries, timeout, f"{count} '{event}' journal entries")


class Upgrade(Rpm):
    def test_rpm_upgrade_goes_live_under_load_with_no_command_typed(self):
        first = self.a.current("hello")
        self.assertTrue(first.endswith("-1.0.0-1"), first)
        self.assertTrue(os.path.exists(os.path.join(self.a.state, "hello", "releases", first, "lib", "legacy.js")))
        load = Load(self.port)
        self.rpm_install("v101")
        wait_until(lambda: (self.a.current("hello") or "").endswith("-1.0.1-1"), 30, "1.0.1 to go live")
        self.a.wait_serving("hello", 2, release=self.a.current("hello"))
        self.assertNoFailures(load.stop())
        self.assertIn("hello from 1.0.1 ", http_get(self.port))
        rel = os.path.join(self.a.state, "hello", "releases", self.a.current("hello"))
        # The release is the complete 1.0.1 tree: the file only 1.0.0 shipped is gone.
        self.assertFalse(os.path.exists(os.path.join(rel, "lib", "legacy.js")))
        with open(os.path.join(rel, "lib", "build-info.json")) as f:
            self.assertIn('"1.0.1"', f.read())
        last = [e for e in self.a.journal("hello") if e["event"] == "activated"][-1]
        self.assertEqual((last["source"], last["version"]), ("rpm", "1.0.1-1"))
        self.assertEqual(len([e for e in self.a.journal("hello") if e["event"] == "activated"]), 2)


class Broken(Rpm):
    # The plain package.json watch: a package.json without a version must be refused.
    watch = "package.json"

    def test_broken_packages_are_refused_or_reverted_and_the_old_version_keeps_serving(self):
        self.rpm_install("v101")
        wait_until(lambda: (self.a.current("hello") or "").endswith("-1.0.1"), 30, "1.0.1 to go live")
        self.a.wait_serving("hello", 2, release=self.a.current("hello"))
        good = self.a.current("hello")
        load = Load(self.port)

        self.rpm_install("noversion")
        refused = self.wait_for_event("refused", 1)
        self.assertIn('no "version" field', refused[-1]["reason"])
        self.assertEqual(refused[-1]["source"], "rpm")

        self.rpm_install("crash")
        self.wait_for_event("failed", 1)
        self.a.wait_serving("hello", 2, release=good)
        self.assertNoFailures(load.stop())
        self.assertEqual(self.a.current("hello"), good)
        self.assertIn("hello from 1.0.1 ", http_get(self.port))
        failed = [e for e in self.a.journal("hello") if e["event"] == "failed"][-1]
        self.assertEqual(failed["version"], "1.0.3")
        self.assertIn("built with broken_crash, fails on purpose", failed["reason"])

        r = self.a.cli("releases", "hello")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r"\* +\S+ \S+ +\S+-1\.0\.1 +1\.0\.1 +rpm +active")
        self.assertRegex(r.stdout, r"1\.0\.3 +rpm +failed +.*fails on purpose")
        self.assertRegex(r.stdout, r"\d\d:\d\d:\d\d +\(refused\) +- +rpm +refused +.*no \"version\" field")
        self.assertTrue(self.a.alerts("rollout_failed") or self.a.alerts("deploy_refused"))


if __name__ == "__main__":
    unittest.main(verbosity=2)
