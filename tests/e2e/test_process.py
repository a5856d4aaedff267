"""How workers are started: inherited sockets (IPv4, IPv6, unix), nothing else leaked, their own
session, the release as cwd, and the configured account when the agent is root."""
import grp
import http.client
import os
import pwd
import socket
import subprocess
import unittest

from harness import AgentTest, free_port, http_get


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=5)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.path)


class Process(AgentTest):
    def start_py(self, listen, **extra):
        app = {"name": "py", "command": ["python3", "notify_worker.py"], "listen": listen, "ready": "notify",
               "watch": "VERSION", "ready_timeout": "5s", **extra}
        a = self.agent([app])
        a.start(wait_ready=False)
        r = a.cli("deploy", "py", "--from", a.make_python_release("1.0.0"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return a

    def test_only_the_listen_socket_and_stdio_are_inherited(self):
        port = free_port()
        a = self.start_py([f"127.0.0.1:{port}"])
        self.assertEqual(http_get(port, "/fds").split(), ["0", "1", "2", "3"])
        ident = dict(kv.split("=", 1) for kv in http_get(port, "/id").split())
        self.assertEqual(ident["sid"], ident["pid"], "the worker leads its own session")
        self.assertEqual(ident["cwd"], os.path.join(a.state, "py", "releases", a.current("py")))  # resolved, not via current

    def test_ipv6_and_unix_listeners(self):
        port = free_port()
        path = os.path.join("/tmp", f"agent-e2e-{port}.sock")
        a = self.start_py([f"[::1]:{port}", path])
        with socket.create_connection(("::1", port), timeout=5) as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):  # HTTP/1.0: the server closes after the body
                reply += chunk
            self.assertIn(b"release=", reply)
        # The worker serves fd 3 only; fd 4 (the unix socket) is inherited too, as LISTEN_FDS=2 says.
        st = a.app_status("py")
        self.assertEqual(len(st["workers"]), 1)
        self.assertTrue(os.path.exists(path))
        self.assertEqual(a.stop(), 0)
        os.unlink(path)

    @unittest.skipUnless(os.geteuid() == 0, "dropping to another account needs root")
    def test_workers_run_as_the_configured_user(self):
        port = free_port()
        a = self.start_py([f"127.0.0.1:{port}"], user="nobody")
        ident = dict(kv.split("=", 1) for kv in http_get(port, "/id").split())
        self.assertEqual(ident["uid"], "65534")
        self.assertEqual(ident["user"], "nobody")
        self.assertEqual(ident["home"], "/nonexistent")

    @unittest.skipUnless(os.geteuid() == 0, "creating a group and a user needs root")
    def test_workers_get_the_accounts_groups_and_home_not_roots(self):
        group, user = f"agtgrp{os.getpid()}", f"agtwrk{os.getpid()}"
        home = f"/tmp/{user}-home"
        subprocess.run(["groupadd", group], check=True)
        subprocess.run(["useradd", "-M", "-d", home, "-G", group, "-s", "/usr/sbin/nologin", user], check=True)
        try:
            port = free_port()
            a = self.start_py([f"127.0.0.1:{port}"], user=user)
            ident = dict(kv.split("=", 1) for kv in http_get(port, "/id").split())
            pw = pwd.getpwnam(user)
            self.assertEqual(ident["uid"], str(pw.pw_uid))
            self.assertEqual(ident["gid"], str(pw.pw_gid))
            groups = set(ident["groups"].split(","))
            self.assertIn(str(grp.getgrnam(group).gr_gid), groups, "the supplementary group of the account")
            self.assertNotIn("0", groups, "none of root's groups")
            self.assertEqual(ident["home"], home)
            self.assertEqual(ident["user"], user)
            a.stop()  # its workers run as the account: stopped before it is deleted
        finally:
            subprocess.run(["userdel", user], check=False)
            subprocess.run(["groupdel", group], check=False)


if __name__ == "__main__":
    unittest.main()
