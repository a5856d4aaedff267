"""The daemon's life: SIGHUP (good and broken configs), scaling, start/stop/restart, SIGTERM."""
import os
import signal
import subprocess
import unittest

from harness import AGENT, AgentTest, Load, free_port, http_get, wait_until


class Daemon(AgentTest):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{self.port}"]}])
        self.a.start(wait_ready=False)
        self.assertEqual(self.a.cli("deploy", "web", "--from", self.a.make_release("1.0.0")).returncode, 0)

    def test_broken_config_on_sighup_keeps_the_running_one(self):
        pids = {w["pid"] for w in self.a.serving("web")}
        self.a.apps[0]["instances"] = 0
        self.a.apps[0]["bogus"] = 1
        self.a.write_config()
        line = self.a.sighup()
        self.assertIn("keeping the running config", line)
        self.assertIn("instances: 0 is out of range", self.a.output())
        self.assertIn('unknown key "bogus"', self.a.output())
        self.assertEqual({w["pid"] for w in self.a.serving("web")}, pids)
        self.assertIn("release=", http_get(self.port))
        r = self.a.cli("status")  # the operator is not locked out by their own typo
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("has 2 errors (see agent check)", r.stderr)

    def test_sighup_scales_instances_up_and_down(self):
        self.a.apps[0]["instances"] = 4
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        self.a.wait_serving("web", 4)
        self.a.apps[0]["instances"] = 1
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        wait_until(lambda: len(self.a.app_status("web")["workers"]) == 1, 10, "scaled down to 1")

    def test_listen_change_needs_a_restart(self):
        self.a.apps[0]["listen"] = [f"127.0.0.1:{free_port()}"]
        self.a.write_config()
        self.assertIn("keeping the running config", self.a.sighup())
        self.assertIn("listen addresses are bound once", self.a.output())

    def test_stop_start_restart(self):
        r = self.a.cli("stop", "web")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.a.app_status("web")["workers"], [])
        self.assertEqual(self.a.app_status("web")["state"], "stopped")
        # A stopped app's address is closed: clients are refused at once instead of hanging
        # in a queue nobody accepts from.
        import socket
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", self.port), timeout=2).close()
        r = self.a.cli("start", "web")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("release=", http_get(self.port))  # bound again
        # restart keeps the socket: a request sent while no worker runs waits in the queue and is
        # answered. Workers that take 1.5 s to listen make that moment long enough to see.
        r = self.a.cli("deploy", "web", "--from", self.a.make_release("1.0.1", {"listen_delay_ms": 1500}))
        self.assertEqual(r.returncode, 0, r.stderr)
        old = {w["pid"] for w in self.a.serving("web")}
        restart = self.a.cli_async("restart", "web")
        wait_until(lambda: self.a.app_status("web")["state"] == "starting", 20, "the restart to be starting its workers")
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(restart.wait(30), 0, restart.stderr.read())
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
        s.close()
        self.assertIn(b"200 OK", reply)
        self.assertEqual({w["pid"] for w in self.a.serving("web")} & old, set())

    def test_second_agent_on_the_same_state_is_refused(self):
        r = subprocess.run([AGENT, "run", "-c", self.a.config], capture_output=True, text=True, timeout=10)
        self.assertEqual(r.returncode, 1)
        self.assertIn("another agent is running with state_dir", r.stderr)
        self.assertIn("release=", http_get(self.port))

    def test_sigterm_drains_everything_and_exits_0(self):
        pids = [w["pid"] for w in self.a.serving("web")]
        load = Load(self.port, keep=2, fresh=1)
        self.assertEqual(self.a.stop(), 0)
        load.stop(at_least=0)  # the agent is gone: nothing more will be answered
        for pid in pids:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived the agent")
        self.assertIn("agent stopped", self.a.output())
        # Restart on the same state: the current release comes back by itself.
        self.a.start()
        self.assertIn("version=1.0.0", http_get(self.port))


    def test_sighup_during_shutdown_is_ignored_and_the_agent_still_exits(self):
        self.a.apps[0]["drain_timeout"] = "1s"
        self.a.apps[0]["kill_timeout"] = "2s"
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        self.assertEqual(self.a.cli("deploy", "web", "--from", self.a.make_release("1.1.0", {"ignore_term": True})).returncode, 0)
        pids = [w["pid"] for w in self.a.serving("web")]
        self.a.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "SIGTERM: draining every worker" in self.a.output(), 5, "the shutdown to begin")
        self.a.proc.send_signal(signal.SIGHUP)
        self.assertEqual(self.a.proc.wait(15), 0)
        self.assertIn("SIGHUP ignored: the agent is shutting down", self.a.output())
        for pid in pids:
            self.assertFalse(os.path.exists(f"/proc/{pid}"))

    def test_app_removed_mid_operation_and_added_again(self):
        self.a.apps[0]["ready"] = "delay"
        self.a.apps[0]["ready_delay"] = "1500ms"
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        reload = self.a.cli_async("reload", "web")
        wait_until(lambda: self.a.app_status("web")["state"] == "rolling", 5, "the reload to start")
        apps = self.a.apps
        self.a.apps = [{"name": "other", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{free_port()}"]}]
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        out, err = reload.communicate(timeout=20)
        self.assertIn("shutting down", err)  # the removed app's operation was cancelled, and said so
        wait_until(lambda: not [x for x in self.a.try_status()["apps"] if x["app"] == "web"], 5, "web to be gone")
        wait_until(lambda: "no app listens on 127.0.0.1:%d any more" % self.port in self.a.output(), 20,
                   "web's socket to be closed once its workers drained")
        self.a.apps = apps  # and back again, on the same port
        self.a.write_config()
        self.assertIn("config reloaded", self.a.sighup())
        self.a.wait_serving("web", 2)
        self.assertIn("release=", http_get(self.port))
        self.assertIsNone(self.a.proc.poll(), "the agent must still be running")


if __name__ == "__main__":
    unittest.main()
