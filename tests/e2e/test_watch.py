"""The file-watch trigger: new code dropped into `source` (an RPM/yum install) goes live with no
command typed, once it settles; a touch that changes nothing deploys nothing; bursts coalesce."""
import json
import os
import shutil
import time
import unittest

from harness import AgentTest, Load, free_port, http_get, wait_until


def set_version(src, version, atomic=False):
    path = os.path.join(src, "package.json")
    with open(path) as f:
        pkg = json.load(f)
    pkg["version"] = version
    if atomic:  # how most installers replace a file: write aside, rename over
        with open(path + ".rpmnew", "w") as f:
            json.dump(pkg, f)
        os.rename(path + ".rpmnew", path)
    else:
        with open(path, "w") as f:
            json.dump(pkg, f)


class Watch(AgentTest):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 2,
                              "listen": [f"127.0.0.1:{self.port}"], "settle": "300ms"}])
        self.src = self.a.make_release("1.0.0")
        self.a.apps[0]["source"] = self.src
        self.a.write_config()
        self.a.start()  # boot stages and runs what is in source
        self.assertTrue(self.a.current("web").endswith("-1.0.0"))

    def wait_live(self, version):
        wait_until(lambda: (self.a.current("web") or "").endswith("-" + version), 20, f"{version} to go live")
        self.a.wait_serving("web", 2, release=self.a.current("web"))

    def deploys(self):
        return [e for e in self.a.journal("web") if e["event"] == "activated"]

    def test_write_in_place_and_rename_replace_go_live_under_load(self):
        load = Load(self.port)
        set_version(self.src, "1.0.1")
        self.wait_live("1.0.1")
        set_version(self.src, "1.0.2", atomic=True)
        self.wait_live("1.0.2")
        self.assertNoFailures(load.stop())
        last = self.deploys()[-1]
        self.assertEqual(last["source"], "rpm")
        self.assertEqual(last["version"], "1.0.2")

    def test_touch_without_change_deploys_nothing(self):
        before = len(self.deploys())
        mark = self.a.output().count("content unchanged: nothing to deploy")
        os.utime(os.path.join(self.src, "package.json"))
        wait_until(lambda: self.a.output().count("content unchanged: nothing to deploy") > mark, 5, "the watch to settle")
        self.assertEqual(len(self.deploys()), before)

    def test_a_burst_of_writes_is_one_deploy(self):
        before = len(self.deploys())
        for i in range(3, 23):
            set_version(self.src, f"1.0.{i}")
        self.wait_live("1.0.22")
        self.assertEqual(len(self.deploys()), before + 1, [e["version"] for e in self.deploys()])

    def test_source_directory_removed_and_created_again(self):
        keep = self.src + ".saved"
        shutil.copytree(self.src, keep)
        shutil.rmtree(self.src)
        wait_until(lambda: "(waiting for it)" in self.a.output(), 5, "the watch to notice the source is gone")
        self.assertIn("release=", http_get(self.port))  # what runs keeps running
        shutil.copytree(keep, self.src)
        set_version(self.src, "1.0.30")
        self.wait_live("1.0.30")

    def test_a_change_made_while_the_agent_was_down_deploys_at_start(self):
        self.assertEqual(self.a.stop(), 0)
        set_version(self.src, "1.0.40")
        self.a.start(wait_ready=False)
        self.wait_live("1.0.40")

    def test_a_rollback_is_not_undone_by_a_restart(self):
        # The source still holds 1.0.1 after the rollback; a restart of the agent (a reboot)
        # must not deploy it again: the watch remembers what it already acted on.
        set_version(self.src, "1.0.1")
        self.wait_live("1.0.1")
        r = self.a.cli("rollback", "1", "web")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(self.a.current("web").endswith("-1.0.0"))
        self.assertEqual(self.a.stop(), 0)
        mark = self.a.output().count("content unchanged: nothing to deploy")
        self.a.start()
        wait_until(lambda: self.a.output().count("content unchanged: nothing to deploy") > mark, 10,
                   "the watch to look at the source after the restart")
        self.assertTrue(self.a.current("web").endswith("-1.0.0"))
        # The next real change deploys as usual.
        set_version(self.src, "1.0.2")
        self.wait_live("1.0.2")

    def test_a_tree_still_being_written_is_staged_again_until_it_is_complete(self):
        # The watched file lands first and settles; the installer is still writing the code in a
        # subdirectory (no event on the watched directory). Staging sees the tree change under
        # it and stages again until the writer is done: the release holds the last content.
        lib = os.path.join(self.src, "lib")
        os.makedirs(lib, exist_ok=True)
        data = os.path.join(lib, "data.js")
        mark = self.a.output().count("the tree is still being written")
        set_version(self.src, "1.0.50")
        deadline = time.monotonic() + 1.2
        i = 0
        while time.monotonic() < deadline:  # the writer: a new content every 20 ms for 1.2 s
            with open(data, "w") as f:
                f.write(f"// part {i}\n" * 200)
            i += 1
            time.sleep(0.02)
        with open(data, "w") as f:
            f.write("// final\n")
        self.wait_live("1.0.50")
        self.assertGreater(self.a.output().count("the tree is still being written"), mark)
        rel = os.path.join(self.a.state, "web", "releases", self.a.current("web"))
        with open(os.path.join(rel, "lib", "data.js")) as f:
            self.assertEqual(f.read(), "// final\n")


if __name__ == "__main__":
    unittest.main()
