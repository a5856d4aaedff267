"""The control socket: owner only, checks who asks, survives garbage."""
import grp
import json
import os
import pwd
import re
import signal
import socket
import stat
import subprocess
import time
import unittest

from harness import AgentTest, free_port, http_get, wait_until


def raw(path, data, read=True):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(path)
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
    out = b""
    while read:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode(errors="replace")


class Control(AgentTest):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.a = self.agent([{"name": "web", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{self.port}"]}])
        self.a.start(wait_ready=False)
        self.assertEqual(self.a.cli("deploy", "web", "--from", self.a.make_release("1.0.0")).returncode, 0)

    def test_socket_is_owner_only(self):
        mode = stat.S_IMODE(os.stat(self.a.socket).st_mode)
        self.assertEqual(mode, 0o600)

    def test_garbage_and_oversized_requests_get_an_error_and_the_daemon_carries_on(self):
        for junk in (b"hello\n", b"[1,2]\n", b'{"verb": 3}\n', b"\xff\xfe\n", b'{"verb":"frobnicate"}\n'):
            reply = json.loads(raw(self.a.socket, junk).splitlines()[-1])
            self.assertFalse(reply["ok"], junk)
        reply = json.loads(raw(self.a.socket, b"x" * (70 * 1024)).splitlines()[-1])
        self.assertEqual(reply["message"], "request too large (over 64 KiB)")
        raw(self.a.socket, b'{"verb":"sta', read=False)  # a client that gives up mid-line
        self.assertIn("release=", http_get(self.port))
        self.assertEqual(self.a.app_status("web")["state"], "running")

    def test_mutating_verbs_need_root_the_agent_user_or_control_group(self):
        os.chmod(self.a.dir, 0o755)
        os.chmod(self.a.socket, 0o666)  # let another user reach it, to see the uid check itself
        r = self.a.cli("reload", "web", user="nobody")
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("uid 65534 may not reload", r.stderr)
        r = self.a.cli("status", "web", "--json", user="nobody")  # reading is allowed
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.a.cli("reload", "web")
        self.assertEqual(r.returncode, 0)
        journal = self.a.journal("web")
        self.assertEqual(journal[-1]["uid"], 0)  # the deploy's uid, from SO_PEERCRED

    def test_status_json_has_every_field(self):
        st = self.a.app_status("web")
        self.assertEqual(st["current"], self.a.current("web"))
        self.assertEqual(st["version"], "1.0.0")
        w = st["workers"][0]
        for key in ("slot", "pid", "release", "state", "role", "uptime_s", "rss", "restarts", "cpu_seconds", "cpu_percent"):
            self.assertIn(key, w)
        self.assertGreater(w["rss"], 1 << 20)
        self.assertGreaterEqual(w["cpu_percent"], 0)
        ready = sum(x["state"] == "ready" and x["role"] == "serving" for x in st["workers"])
        text = self.a.cli("status").stdout
        self.assertIn(f"web: running, {ready}/{st['instances']} ready, current " + st["current"] + " (version 1.0.0)", text)
        self.assertRegex(text, r"SLOT +PID +RELEASE +STATE +ROLE +UPTIME +CPU +RSS +RESTARTS +LAST EXIT")
        self.assertRegex(text, r"\d+\.\d%")
        slots = [int(l.split()[0]) for l in text.splitlines() if re.match(r"^  \d+ ", l)]
        self.assertEqual(slots, sorted(slots), "workers sorted by slot")

    def test_status_sorts_by_slot_not_pid_and_says_how_the_last_worker_ended(self):
        self.a.apps[0]["instances"] = 2
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        self.a.wait_serving("web", 2)
        first = {w["slot"]: w["pid"] for w in self.a.serving("web")}
        os.kill(first[0], signal.SIGKILL)  # slot 0's new worker gets a pid above slot 1's
        wait_until(lambda: {w["slot"] for w in self.a.serving("web") if w["pid"] != first[0]} == {0, 1}
                   and all(w["state"] == "ready" for w in self.a.serving("web")), 15, "slot 0 restarted")
        now = {w["slot"]: w["pid"] for w in self.a.serving("web")}
        self.assertGreater(now[0], now[1])
        text = self.a.cli("status").stdout
        rows = [l.split() for l in text.splitlines() if re.match(r"^  \d+ ", l)]
        self.assertEqual([(int(r[0]), int(r[1])) for r in rows], [(0, now[0]), (1, now[1])])
        self.assertIn("killed by SIGKILL", text.splitlines()[[i for i, l in enumerate(text.splitlines()) if l.startswith("  0 ")][0]])


    def test_a_client_that_says_nothing_is_dropped(self):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(20)
        s.connect(self.a.socket)
        t0 = time.monotonic()
        reply = s.recv(4096).decode()  # blocks until the daemon gives up on us
        self.assertIn("no complete request within 10s", reply)
        self.assertAlmostEqual(time.monotonic() - t0, 10, delta=2)
        s.close()

    def test_a_worker_flooding_its_output_does_not_starve_the_daemon(self):
        port = free_port()
        self.a.apps.append({"name": "noisy", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{port}"],
                            "instances": 2})
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        r = self.a.cli("deploy", "noisy", "--from", self.a.make_release("1.0.0", {"flood_output": True}))
        self.assertEqual(r.returncode, 0, r.stderr)
        for _ in range(5):
            t0 = time.monotonic()
            self.assertEqual(self.a.cli("status").returncode, 0)
            self.assertLess(time.monotonic() - t0, 1.5, "status was slow: the loop is starved")
        self.assertIn("release=", http_get(self.port))


    @unittest.skipUnless(os.geteuid() == 0, "creating a group and a user needs root")
    def test_control_group_members_may_change_things_others_may_not_connect(self):
        group, member = f"agtctl{os.getpid()}", f"agtusr{os.getpid()}"
        subprocess.run(["groupadd", group], check=True)
        subprocess.run(["useradd", "-M", "-N", "-G", group, "-s", "/usr/sbin/nologin", member], check=True)
        try:
            port = free_port()
            b = self.agent([{"name": "api", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{port}"]}],
                           control_group=group)
            os.chmod(b.dir, 0o755)
            b.start(wait_ready=False)
            self.assertEqual(b.cli("deploy", "api", "--from", b.make_release("1.0.0")).returncode, 0)
            st = os.stat(b.socket)
            self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
            self.assertEqual(st.st_gid, grp.getgrnam(group).gr_gid)
            r = b.cli("reload", "api", user=member)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(b.journal("api")[-1]["uid"], 0)  # a reload journals nothing; the deploy was root's
            r = b.cli("reload", "api", user="nobody")
            self.assertEqual(r.returncode, 1)
            self.assertIn("Permission denied", r.stderr)  # not in the group: cannot even connect
        finally:
            subprocess.run(["userdel", member], check=False)
            subprocess.run(["groupdel", group], check=False)

    @unittest.skipUnless(os.geteuid() == 0, "creating a user needs root")
    def test_every_mutating_verb_is_refused_to_an_outsider_who_reaches_the_socket(self):
        outsider = f"agtout{os.getpid()}"
        subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", outsider], check=True)
        try:
            os.chmod(self.a.dir, 0o755)
            os.chmod(self.a.socket, 0o666)  # a misconfigured socket: the uid check must still hold
            uid = pwd.getpwnam(outsider).pw_uid
            pids = lambda: sorted(w["pid"] for w in self.a.serving("web"))
            before = (self.a.current("web"), len(self.a.journal("web")), pids())
            for verb in (["deploy", "web"], ["deploy", "web", "--rev", "HEAD"], ["reload", "web"], ["start", "web"],
                         ["stop", "web"], ["restart", "web"], ["rollback", "1", "web"], ["rollback", "--to", "x", "web"]):
                r = self.a.cli(*verb, user=outsider)
                self.assertEqual(r.returncode, 1, f"{verb}: {r.stdout}{r.stderr}")
                self.assertIn(f"uid {uid} may not {verb[0]}", r.stderr)
            self.assertEqual((self.a.current("web"), len(self.a.journal("web")), pids()), before)
            r = self.a.cli("status", "web", user=outsider)  # reading is allowed (see README)
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            subprocess.run(["userdel", outsider], check=False)


if __name__ == "__main__":
    unittest.main()
