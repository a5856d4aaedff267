"""The daemon's own life (issue 14): signals, config reloads, control sessions, the notify
socket, the fds a worker inherits and the loop's stalls. Each test is one defect that used
to take production down or hang a client; the harness also checks every daemon here exits 0
on SIGTERM with no worker left."""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

from harness import AGENT, AgentTest, Load, free_port, http_get, wait_until

SANITIZED = "ASAN_OPTIONS" in os.environ  # scripts/test.sh sets it for the build-san/ pass


def with_alerts(a, webhook_port=None, smtp_port=None):
    """Rewrites a's config with an [alerts] table: the alert thread runs, as on every
    production host."""
    a.write_config()
    smtp_port = smtp_port or free_port()  # nothing listens there: delivery is retried off the loop
    lines = ["", "[alerts]", 'email_to = ["ops@example.com"]', 'email_from = "agent@example.com"',
             f'smtp_url = "smtp://127.0.0.1:{smtp_port}"']
    if webhook_port:
        lines.append(f'webhook_url = "http://127.0.0.1:{webhook_port}/hook"')
    with open(a.config, "a") as f:
        f.write("\n".join(lines) + "\n")


def web_app(port, **extra):
    return {"name": "web", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{port}"],
            "ready_timeout": "10s", **extra}


class Signals(AgentTest):
    def test_sighup_with_alerts_set_keeps_serving_and_sigterm_exits_0(self):
        port = free_port()
        a = self.agent([web_app(port)])
        with_alerts(a)
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        # An alert first, so the alert thread exists and is busy retrying the dead SMTP server.
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.1", {"throw_at_start_from_worker": 0})).returncode, 1)
        wait_until(lambda: a.alerts("rollout_failed"), 10, "the rollout_failed alert")
        pids = {w["pid"] for w in a.serving("web")}
        load = Load(port)
        for _ in range(3):
            self.assertIn("config reloaded", a.sighup())
            self.assertIsNone(a.proc.poll(), "the agent died of SIGHUP")
        self.assertNoFailures(load.stop())
        self.assertEqual({w["pid"] for w in a.serving("web")}, pids, "a SIGHUP that changes nothing restarts nothing")
        self.assertEqual(a.stop(), 0)


class ControlSessions(AgentTest):
    def raw_request(self, a, request):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: the agent's side fills
        s.connect(a.socket)
        s.sendall((json.dumps(request) + "\n").encode())
        return s

    def read_all(self, s):
        data = b""
        s.settimeout(30)
        while chunk := s.recv(65536):
            data += chunk
        s.close()
        return [json.loads(l) for l in data.decode().splitlines() if l.strip()]

    def test_a_client_that_reads_15s_late_still_gets_the_outcome_and_the_buffer_is_bounded(self):
        port = free_port()
        # A build that prints 200,000 lines: far more than a client that does not read can hold.
        a = self.agent([web_app(port, instances=1, build="seq 1 200000 | sed 's/^/build line /'")])
        a.start(wait_ready=False)
        s = self.raw_request(a, {"verb": "deploy", "app": "web", "from": a.make_release("1.0.0")})
        wait_until(lambda: a.try_status() and a.current("web"), 60, "the deploy to go live")
        time.sleep(15)  # the scenario: the client reads its answer 15 s after the deploy ended
        lines = self.read_all(s)
        self.assertTrue(lines[-1].get("ok"), lines[-3:])
        self.assertIn("live:", lines[-1]["message"])
        dropped = [l for l in lines if "progress lines dropped" in l.get("progress", "")]
        self.assertTrue(dropped, "the client is told progress lines were dropped")
        self.assertLess(len(lines), 100000, "the pending output was bounded")
        self.assertIn("release=", http_get(port))


class Reload(AgentTest):
    def test_sighup_that_changes_source_and_watch_watches_and_stages_the_new_source(self):
        port = free_port()
        old_src = os.path.join(self.tmp(), "old")
        new_src = os.path.join(self.tmp(), "new")
        a = self.agent([web_app(port, instances=1, source=old_src, settle="200ms")])
        os.rename(a.make_release("1.0.0"), old_src)
        a.start()
        wait_until(lambda: (a.current("web") or "").endswith("-1.0.0"), 20, "1.0.0 from the old source")
        # The new source has a VERSION marker; package.json there says something else.
        os.rename(a.make_release("9.9.9"), new_src)
        with open(os.path.join(new_src, "VERSION"), "w") as f:
            f.write("2.0.0\n")
        a.apps[0].update(source=new_src, watch="VERSION")
        a.write_config()
        self.assertIn("config reloaded", a.sighup())
        wait_until(lambda: (a.current("web") or "").endswith("-2.0.0"), 20, "2.0.0 staged from the new source")
        with open(os.path.join(new_src, "VERSION"), "w") as f:
            f.write("2.0.1\n")
        wait_until(lambda: (a.current("web") or "").endswith("-2.0.1"), 20, "a change of the new marker deployed")
        # The old source is not watched any more.
        with open(os.path.join(old_src, "package.json"), "w") as f:
            json.dump({"name": "fixture", "version": "1.5.0"}, f)
        time.sleep(1)  # settle is 200 ms: a deploy from the old source would have begun by now
        self.assertFalse([j for j in a.journal("web") if j["version"] == "1.5.0"])

    def test_an_addition_that_fails_refuses_the_reload_and_releases_its_port(self):
        port, new_port = free_port(), free_port()
        a = self.agent([web_app(port, instances=1)])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        taken = blocker.getsockname()[1]
        a.apps.append({"name": "api", "command": ["node", "server.js"], "instances": 1,
                       "listen": [f"127.0.0.1:{new_port}", f"127.0.0.1:{taken}"]})
        a.write_config()
        line = a.sighup()
        self.assertIn("keeping the running config", line)
        self.assertIn("Address already in use", a.output())
        with self.assertRaises(ConnectionRefusedError):  # not bound and left with nobody accepting
            socket.create_connection(("127.0.0.1", new_port), timeout=2).close()
        self.assertEqual([x["app"] for x in a.try_status()["apps"]], ["web"])
        blocker.close()
        self.assertIn("config reloaded", a.sighup())
        wait_until(lambda: [x["app"] for x in a.try_status()["apps"]] == ["api", "web"], 10, "api added")

    def test_an_agent_key_that_cannot_change_live_is_named(self):
        a = self.agent([web_app(free_port(), instances=1)])
        a.start(wait_ready=False)
        a.logs = os.path.join(a.dir, "elsewhere")
        a.write_config()
        self.assertIn("keeping the running config", a.sighup())
        self.assertIn("[agent] log_dir takes effect only at start", a.output())

    def tmp(self):
        import tempfile, shutil
        d = tempfile.mkdtemp(prefix="agent-life-")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        return d


class NotifySocket(AgentTest):
    def python_app(self, **extra):
        port = free_port()
        app = {"name": "py", "command": ["python3", "notify_worker.py"], "instances": 2, "watch": "VERSION",
               "listen": [f"127.0.0.1:{port}"], "ready": "notify", "ready_timeout": "10s", **extra}
        a = self.agent([app])
        a.start(wait_ready=False)
        return a, port

    def timed_reload(self, a):
        began = time.monotonic()
        r = a.cli("reload", "py")
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        return time.monotonic() - began

    def test_only_the_agent_and_its_workers_can_reach_it_and_a_flood_does_not_delay_a_rollout(self):
        a, port = self.python_app()
        self.assertEqual(a.cli("deploy", "py", "--from", a.make_python_release("1.0.0")).returncode, 0)
        path = os.path.join(a.state, "py", "notify.sock")
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        # Another local user cannot send to it at all.
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c",
                            "import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1', sys.argv[1])",
                            path], capture_output=True, text=True, timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("PermissionError", r.stderr)
        quiet = self.timed_reload(a)
        # 100 senders that may reach it (root) flood it while a rollout runs.
        flood = ("import socket,sys,time\n"
                 "s=socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); end=time.monotonic()+float(sys.argv[2]); n=0\n"
                 "while time.monotonic()<end and n<20000:\n"
                 "    try: s.sendto(b'READY=1', sys.argv[1]); n+=1\n"
                 "    except (BlockingIOError, OSError): time.sleep(0.001)\n")
        # At nice 19: the flood must fill the socket, not take the 2 CPUs from the agent and the
        # workers it starts (100 busy senders at nice 0 measure the scheduler, not the loop).
        senders = [subprocess.Popen(["nice", "-n", "19", "python3", "-c", flood, path, "8"], stdin=subprocess.DEVNULL)
                   for _ in range(100)]
        try:
            time.sleep(1)  # the flood is under way before the rollout begins
            flooded = self.timed_reload(a)
        finally:
            for p in senders:
                p.kill()
                p.wait()
        self.assertLess(flooded, max(3 * quiet, quiet + 3.0), f"rollout took {flooded:.2f}s flooded, {quiet:.2f}s quiet")
        ignored_lines = [l for l in a.output().splitlines() if "from processes that are not its workers" in l]
        self.assertTrue(ignored_lines)
        self.assertLessEqual(len(ignored_lines), 3, "one rate-limited line per 10 s, not one per datagram")


class WorkerFds(AgentTest):
    def test_a_worker_started_while_an_alert_is_sent_holds_only_its_own_fds(self):
        # A webhook that accepts and never answers: the alert thread holds its socket open.
        hook = socket.socket()
        hook.bind(("127.0.0.1", 0))
        hook.listen(16)
        hook.settimeout(20)
        self.addCleanup(hook.close)
        port = free_port()
        app = {"name": "py", "command": ["python3", "notify_worker.py"], "instances": 2, "watch": "VERSION",
               "listen": [f"127.0.0.1:{port}"], "ready": "notify", "ready_timeout": "10s"}
        a = self.agent([app])
        with_alerts(a, webhook_port=hook.getsockname()[1])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "py", "--from", a.make_python_release("1.0.0")).returncode, 0)
        bad = a.make_python_release("1.0.1")
        os.remove(os.path.join(bad, "notify_worker.py"))  # its workers exit at once: an alert
        self.assertEqual(a.cli("deploy", "py", "--from", bad).returncode, 1)
        conn, _ = hook.accept()  # the alert thread connected and waits for an answer
        self.addCleanup(conn.close)
        agent_fds = set(os.listdir(f"/proc/{a.proc.pid}/fd"))
        self.assertEqual(a.cli("reload", "py").returncode, 0)
        for w in a.serving("py"):
            fds = http_get(port, "/fds").split()
            self.assertEqual(sorted(map(int, fds)), [0, 1, 2, 3], f"worker fds at start: {fds} (agent has {len(agent_fds)})")


class LoopStalls(AgentTest):
    def test_with_2000_journal_entries_and_a_deploy_every_second_the_loop_never_stalls(self):
        port = free_port()
        a = self.agent([web_app(port, instances=1, keep_releases=3)])
        os.makedirs(os.path.join(a.state, "web"), exist_ok=True)
        with open(os.path.join(a.state, "web", "journal.jsonl"), "w") as f:
            for i in range(2000):
                f.write(json.dumps({"time": "2026-01-01T00:00:00Z", "event": "activated", "release": f"20260101T000000Z-0.0.{i}",
                                    "version": f"0.0.{i}", "source": "cli", "revision": "", "reason": "deploy", "uid": 0}) + "\n")
        a.start(wait_ready=False)
        end = time.monotonic() + 60
        n = 0
        while time.monotonic() < end:
            began = time.monotonic()
            r = a.cli("deploy", "web", "--from", a.make_release(f"1.0.{n}"))
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            n += 1
            time.sleep(max(0.0, 1.0 - (time.monotonic() - began)))  # the scenario: one deploy a second
        status = a.try_status()
        # What this test was written against, the journal re-read and fsynced on the loop, held it
        # 100 ms and more. Below that, the loop's own small writes (the agent's log lines, control
        # replies) were seen to wait ~11 ms behind another test's staging on the same disk under
        # ctest -j2; worker logs have since moved to a thread (base/log_file.h).
        limit = 50 if SANITIZED else 25
        self.assertLess(status["loop_max_stall_ms"], limit, f"{n} deploys; worst stall: {status}")
        with open(os.path.join(a.state, "web", "journal.jsonl")) as f:
            self.assertLess(sum(1 for _ in f), 1000, "the journal was compacted")


def process_gone(marker):
    """True when no process has `marker` in its command line."""
    return subprocess.run(["pgrep", "-f", marker], capture_output=True).returncode != 0


class Shutdown(AgentTest):
    """SIGTERM while a deploy is staging or building: the daemon stops that work, drains its
    workers and exits 0 well inside TimeoutStopSec; the next daemon finds the store intact."""

    def sigterm_mid_deploy(self, a, deploy, what):
        t0 = time.monotonic()
        a.proc.send_signal(signal.SIGTERM)
        rc = a.proc.wait(30)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, f"SIGTERM during {what}")
        # kill_timeout is 60s and TimeoutStopSec 90s: stopping the work must not wait on either.
        self.assertLess(took, 15, f"SIGTERM during {what} took {took:.1f}s")
        print(f"SIGTERM during {what}: exit 0 in {took * 1000:.0f} ms", flush=True)
        out, err = deploy.communicate(timeout=10)
        self.assertNotEqual(deploy.returncode, 0, "a deploy cut short by a shutdown must not say it went live")
        self.assertIn("shutting down", out + err)
        return took

    def restart_and_check(self, a, port, live):
        a.start()
        self.assertEqual(a.current("web"), live, "the shutdown must not move current")
        self.assertIn("release=", http_get(port))
        app_dir = os.path.join(a.state, "web", "releases")
        self.assertEqual([d for d in os.listdir(app_dir) if d.endswith(".tmp")], [],
                         "a half-copied release left behind after the restart")
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("3.0.0")).returncode, 0,
                         "a deploy after the restart")
        self.assertEqual(a.stop(), 0)

    def test_sigterm_during_a_build_kills_the_build_and_exits_0(self):
        port = free_port()
        marker = f"sleep 6{port}"  # unique: this test's build and nothing else
        a = self.agent([web_app(port, instances=1, build=f"if [ -f slow ]; then echo slow build; {marker}; fi")])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        live = a.current("web")
        slow = a.make_release("2.0.0")
        open(os.path.join(slow, "slow"), "w").close()
        deploy = a.cli_async("deploy", "web", "--from", slow)
        wait_until(lambda: not process_gone(marker), 30, "the slow build to run")
        self.assertEqual(a.app_status("web")["state"], "building")
        self.sigterm_mid_deploy(a, deploy, "a build")
        wait_until(lambda: process_gone(marker), 5, "the build's processes to be killed with the agent")
        self.restart_and_check(a, port, live)

    def test_sigterm_during_staging_stops_the_copy_and_exits_0(self):
        port = free_port()
        a = self.agent([web_app(port, instances=1)])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        live = a.current("web")
        # A tree that takes seconds to copy: 40 dirs x 1,000 files.
        big = a.make_heavy_release("2.0.0", 40, 1000)
        with open(os.path.join(big, "node_modules", "blob.bin"), "wb") as f:
            f.write(os.urandom(1 << 20) * 1024)
        deploy = a.cli_async("deploy", "web", "--from", big)
        wait_until(lambda: a.app_status("web")["state"] == "staging", 30, "the deploy to be staging", interval=0.02)
        self.sigterm_mid_deploy(a, deploy, "staging")
        self.restart_and_check(a, port, live)


class Prune(AgentTest):
    def test_a_prune_after_one_deploy_never_removes_what_the_next_one_staged(self):
        """keep_releases = 1: each activation prunes everything but current. A deploy queued
        behind a rollout is staged after that rollout's prune (the store thread runs in order),
        so it goes live whole."""
        port = free_port()
        a = self.agent([web_app(port, instances=2, keep_releases=1)])
        a.start(wait_ready=False)
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.0")).returncode, 0)
        load = Load(port)
        second = a.cli_async("deploy", "web", "--from", a.make_release("2.0.0", {"listen_delay_ms": 800}))
        wait_until(lambda: a.app_status("web")["operation"] == "deploy", 20, "the second deploy to start")
        third = a.cli_async("deploy", "web", "--from", a.make_release("3.0.0"))
        wait_until(lambda: a.app_status("web")["queued"] == "deploy", 20, "the third deploy to wait behind it")
        for p in (second, third):
            out, err = p.communicate(timeout=120)
            self.assertEqual(p.returncode, 0, out + err)
        self.assertNoFailures(load.stop())
        live = a.current("web")
        self.assertTrue(live.endswith("-3.0.0"), live)
        a.wait_serving("web", 2, release=live)
        rels = lambda: sorted(os.listdir(os.path.join(a.state, "web", "releases")))
        # 2.0.0 was still in use (draining) when 3.0.0 went live, so it stays until the next prune.
        wait_until(lambda: not [r for r in rels() if r.endswith("-1.0.0")], 20, "1.0.0 pruned (keep_releases = 1)")
        self.assertIn(live, rels())
        self.assertEqual([r for r in rels() if r not in (live,) and not r.endswith("-2.0.0")], [])
        self.assertEqual(a.stop(), 0)


class StuckLog(AgentTest):
    def test_a_log_reader_that_stops_reading_never_holds_the_daemon(self):
        """stderr is a pipe (the journal, under systemd) that nobody reads: it is full before the
        agent starts. The agent still starts, deploys and answers; what it logged meanwhile is
        written once the pipe is read again, up to its queue (older lines dropped, not waited for)."""
        port = free_port()
        a = self.agent([web_app(port, instances=1)])
        r, w = os.pipe()
        os.set_blocking(w, False)
        try:
            while True:
                os.write(w, b"." * 4096)
        except BlockingIOError:
            pass  # full: the next write of anyone waits
        os.set_blocking(w, True)
        a.out = open(os.path.join(a.dir, "agent.out"), "a")  # what the harness reads at the end
        a.proc = subprocess.Popen([AGENT, "run", "-c", a.config], stdout=w, stderr=w, stdin=subprocess.DEVNULL)
        os.close(w)
        wait_until(lambda: a.proc.poll() is not None or a.try_status() is not None, 10, "the control socket to answer")
        self.assertIsNone(a.proc.poll())
        for i in range(5):
            res = a.cli("deploy", "web", "--from", a.make_release(f"1.0.{i}"))
            self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
            t0 = time.monotonic()
            self.assertIsNotNone(a.try_status())
            self.assertLess(time.monotonic() - t0, 2)
        self.assertIn("release=", http_get(port))

        def drain():
            with os.fdopen(r, "rb") as f, open(os.path.join(a.dir, "agent.out"), "ab") as out:
                while chunk := f.read1(65536):
                    out.write(chunk)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        self.assertEqual(a.stop(), 0)
        reader.join(10)
        self.assertIn("live:", a.output(), "what was logged while nobody read is written afterwards")


if __name__ == "__main__":
    unittest.main(verbosity=2)
