"""The agent under systemd, without systemd: a small launcher does what systemd does (binds the
listening socket and passes it as fd 3 with LISTEN_FDS/LISTEN_PID, and listens on
NOTIFY_SOCKET). READY=1 comes once the workers serve, STOPPING=1 at shutdown, WATCHDOG=1 on
time; and a restart of the agent itself refuses no connection, because the socket outlives it."""
import os
import signal
import socket
import subprocess
import time
import unittest

from harness import AGENT, AgentTest, Load, free_port, wait_until


class Launcher:
    """Holds the app's listening socket and a notify socket, as systemd's agent.socket and
    Type=notify would, and starts `agent run` with them."""

    def __init__(self, agent, port):
        self.agent = agent
        self.listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listen.bind(("127.0.0.1", port))
        self.listen.listen(4096)
        self.notify_path = os.path.join(agent.dir, "notify.sock")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(self.notify_path)
        self.notify.settimeout(0.05)
        self.messages = []

    def start(self, **env):
        fd = self.listen.fileno()
        environ = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="sd-web", NOTIFY_SOCKET=self.notify_path, **env)
        if getattr(self.agent, "out", None):
            self.agent.out.close()
        self.agent.out = open(os.path.join(self.agent.dir, "agent.out"), "a")
        # LISTEN_PID must be the agent's own pid: the shell's $$ survives its exec.
        binary = getattr(self.agent, "binary", AGENT)
        self.agent.proc = subprocess.Popen(["sh", "-c", 'LISTEN_PID=$$ exec "$0" run -c "$1"', binary, self.agent.config],
                                           env=environ, stdout=self.agent.out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, pass_fds=(3,),
                                           preexec_fn=lambda: os.dup2(fd, 3) if fd != 3 else None)
        return self.agent.proc

    def receive(self):
        while True:
            try:
                self.messages.append(self.notify.recv(4096).decode())
            except (socket.timeout, BlockingIOError):
                return self.messages

    def wait_for(self, state, timeout=20):
        return wait_until(lambda: any(state in m.split("\n") for m in self.receive()), timeout, f"{state} from the agent")

    def close(self):
        self.listen.close()
        self.notify.close()


class Systemd(AgentTest):
    def setUp(self):
        super().setUp()
        self.port = free_port()
        self.a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 2,
                              "listen": [f"127.0.0.1:{self.port}"]}])
        self.src = self.a.make_release("1.0.0")
        self.a.apps[0]["source"] = self.src
        self.a.write_config()
        self.launcher = Launcher(self.a, self.port)
        self.addCleanup(self.launcher.close)

    def test_ready_after_the_workers_serve_and_stopping_at_shutdown(self):
        self.launcher.start()
        self.launcher.wait_for("READY=1")
        # READY=1 came after the boot deploy: by now both workers serve.
        ws = self.a.serving("web")
        self.assertEqual(len(ws), 2)
        self.assertIn("socket activation: fd 3 (sd-web) is 127.0.0.1:" + str(self.port), self.a.output())
        self.assertNotIn("listening on 127.0.0.1", self.a.output())  # it did not bind the port itself
        # The workers do not see systemd's variables, only the agent's own.
        for w in ws:
            with open(f"/proc/{w['pid']}/environ", "rb") as f:
                env = f.read().decode(errors="replace").split("\0")
            self.assertNotIn("NOTIFY_SOCKET=" + self.launcher.notify_path, env)
            self.assertNotIn("LISTEN_FDNAMES=sd-web", env)
            self.assertIn("LISTEN_FDS=1", env)  # the agent's own, for the worker
        self.assertEqual(self.a.stop(), 0)
        self.launcher.wait_for("STOPPING=1", 5)

    def test_the_watchdog_is_pinged(self):
        self.launcher.start(WATCHDOG_USEC="400000")
        self.launcher.wait_for("READY=1")
        wait_until(lambda: sum(m == "WATCHDOG=1" for m in self.launcher.receive()) >= 3, 5, "three WATCHDOG=1 pings")

    def test_status_says_what_each_app_is_doing(self):
        self.launcher.start()
        self.launcher.wait_for("READY=1")
        ready = next(m for m in self.launcher.receive() if "READY=1" in m.split("\n"))
        self.assertIn("STATUS=web: running, 2/2 ready", ready.split("\n"))
        self.launcher.messages.clear()
        slow = self.a.make_release("1.1.0", {"listen_delay_ms": 1500})  # each batch takes 1.5 s
        deploy = self.a.cli_async("deploy", "web", "--from", slow)
        self.launcher.wait_for("STATUS=web: rolling 1.1.0, batch 1/2")
        self.assertIn("deploy in progress (rolling 1.1.0, batch ", self.a.cli("status", "web").stdout)
        self.launcher.wait_for("STATUS=web: rolling 1.1.0, batch 2/2")
        out, err = deploy.communicate(timeout=60)
        self.assertEqual(deploy.returncode, 0, out + err)
        self.launcher.wait_for("STATUS=web: running, 2/2 ready", 5)
        self.assertEqual(self.a.stop(), 0)
        self.launcher.wait_for("STOPPING=1", 5)

    def test_under_journald_lines_carry_their_priority_and_no_time(self):
        # systemd sets JOURNAL_STREAM=DEV:INODE of the stream it gives as stdout/stderr.
        out = os.path.join(self.a.dir, "agent.out")
        open(out, "a").close()
        st = os.stat(out)
        self.launcher.start(JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
        self.launcher.wait_for("READY=1")
        with open(self.a.config, "a") as f:
            f.write("[[app]]\nname = 'web'\n")  # a second app called web: refused, logged as an error
        self.a.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: "keeping the running config" in self.a.output(), 10, "the refused reload")
        # A release whose workers die at start: reverted, and its alert is a warning.
        broken = self.a.make_release("1.0.1", {"throw_at_start_from_worker": 0})
        self.assertEqual(self.a.cli("deploy", "web", "--from", broken).returncode, 1)
        wait_until(lambda: "ALERT web [rollout_failed]" in self.a.output(), 10, "the alert")
        lines = self.a.output().splitlines()
        self.assertTrue(lines)
        for line in lines:  # journald stamps each line: the agent's own time would be said twice
            self.assertRegex(line, r"^<[2-7]>", "a line without its priority")
            self.assertNotRegex(line, r"^<\d>\d{4}-\d\d-\d\dT", "a line with its own time")
        self.assertTrue(any(l.startswith("<6>") and "told systemd: ready" in l for l in lines), lines)
        self.assertTrue(any(l.startswith("<3>") and "keeping the running config" in l for l in lines), lines)
        self.assertTrue(any(l.startswith("<4>ALERT web [rollout_failed]") for l in lines), lines)  # journalctl -p warning
        self.assertEqual(self.a.stop(), 0)

    def test_a_journal_stream_that_is_not_stderr_keeps_the_plain_format(self):
        # JOURNAL_STREAM inherited by a process whose stderr went elsewhere (a shell under the unit).
        self.launcher.start(JOURNAL_STREAM="1:1")
        self.launcher.wait_for("READY=1")
        self.assertRegex(self.a.output().splitlines()[0], r"^\d{4}-\d\d-\d\dT[\d:.]+Z info ")
        self.assertEqual(self.a.stop(), 0)

    def test_a_restart_of_the_agent_refuses_no_connection(self):
        self.launcher.start()
        self.launcher.wait_for("READY=1")
        load = Load(self.port)
        for _ in range(2):
            before = load.answered()
            self.assertEqual(self.a.stop(), 0)  # drains every worker and exits
            self.launcher.messages.clear()
            self.launcher.start()  # same socket: what arrived meanwhile waited in its queue
            self.launcher.wait_for("READY=1")
            wait_until(lambda: load.answered() > before + 20, 10, "requests answered after the restart")
        summary = load.stop()
        self.assertNoFailures(summary)


if __name__ == "__main__":
    unittest.main(verbosity=2)
