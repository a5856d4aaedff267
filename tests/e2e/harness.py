"""Harness for the end-to-end tests: a real `agent run`, real Node workers, real sockets.

Each test gets a private directory with its own config, state, logs and control socket, and
free loopback ports. Waits are conditions with deadlines (wait_until), never bare sleeps.
AGENT (the binary) and REPO (the source tree) come from the environment, set by ctest.
"""

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

AGENT = os.environ.get("AGENT") or os.path.join(os.path.dirname(__file__), "../../build/agent")
REPO = os.environ.get("REPO") or os.path.join(os.path.dirname(__file__), "../..")
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURE = os.path.join(HERE, "apps", "fixture", "server.js")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_alive(pid):
    """True while `pid` runs (a zombie is not running)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def wait_until(cond, timeout, what, interval=0.05):
    """Polls cond() until it returns a truthy value; fails the test with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(port, path="/", timeout=5):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.read().decode()


def toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return json.dumps(v)


class Agent:
    """One daemon with its config, in a temporary directory."""

    def __init__(self, apps, agent_settings=None, tables=None):
        self.dir = tempfile.mkdtemp(prefix="agent-e2e-")
        os.chmod(self.dir, 0o755)
        self.config = os.path.join(self.dir, "agent.toml")
        self.state = os.path.join(self.dir, "state")
        self.logs = os.path.join(self.dir, "log")
        self.socket = os.path.join(self.dir, "agent.sock")
        self.agent_settings = dict(agent_settings or {})
        self.apps = apps
        self.tables = dict(tables or {})  # more top-level tables ([fleet], [alerts]): name -> keys
        self.proc = None
        self.versions = 0
        # How the daemon must end, checked for every test in AgentTest.tearDown: exit 0 on
        # SIGTERM, no worker left. A test that kills it on purpose sets expect_clean_exit False.
        self.expect_clean_exit = True
        self.ending_problems = []
        self.write_config()

    # --- config and releases ---------------------------------------------------------------
    def write_config(self):
        lines = ["[agent]", f'state_dir = "{self.state}"', f'log_dir = "{self.logs}"', f'control_socket = "{self.socket}"']
        lines += [f"{k} = {toml_value(v)}" for k, v in self.agent_settings.items()]
        for name, keys in self.tables.items():
            lines.append(f"\n[{name}]")
            lines += [f"{k} = {toml_value(v)}" for k, v in keys.items()]
        for app in self.apps:
            lines.append("\n[[app]]")
            env = app.get("env", {})
            for k, v in app.items():
                if k != "env":
                    lines.append(f"{k} = {toml_value(v)}")
            if env:
                lines.append("[app.env]")
                lines += [f"{k} = {toml_value(v)}" for k, v in env.items()]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.chmod(self.config, 0o644)

    def make_release(self, version, knobs=None, server=FIXTURE, tree=None):
        """A source tree of an app at `version` (the fixture, or a copy of `tree`) with its
        knobs; returns the directory."""
        self.versions += 1
        d = os.path.join(self.dir, f"src-{self.versions}-{version}")
        if tree:
            shutil.copytree(tree, d, symlinks=True)
        else:
            os.makedirs(d)
            shutil.copy(server, os.path.join(d, os.path.basename(server)))
        with open(os.path.join(d, "package.json"), "w") as f:
            json.dump({"name": "fixture", "version": version, "knobs": knobs or {}}, f)
        return d

    def make_heavy_release(self, version, dirs, files_per_dir, file_bytes=0):
        """make_release plus node_modules/ with dirs x files_per_dir files: a tree that takes
        a while to stage."""
        d = self.make_release(version)
        for i in range(dirs):
            sub = os.path.join(d, "node_modules", f"m{i}")
            os.makedirs(sub)
            for j in range(files_per_dir):
                with open(os.path.join(sub, f"f{j}.js"), "w") as f:
                    f.write("x" * file_bytes)
        return d

    def make_python_release(self, version):
        """A source tree of apps/notify_worker.py (a Python worker) with a VERSION marker."""
        self.versions += 1
        d = os.path.join(self.dir, f"pysrc-{self.versions}-{version}")
        os.makedirs(d)
        shutil.copy(os.path.join(HERE, "apps", "notify_worker.py"), d)
        with open(os.path.join(d, "VERSION"), "w") as f:
            f.write(version + "\n")
        return d

    # --- the daemon ------------------------------------------------------------------------
    def start(self, wait_ready=True):
        if getattr(self, "out", None):
            self.out.close()  # a restart of the agent appends to the same file
        self.out = open(os.path.join(self.dir, "agent.out"), "a")
        self.proc = subprocess.Popen([getattr(self, "binary", AGENT), "run", "-c", self.config], stdout=self.out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_until(lambda: self.proc.poll() is not None or self.try_status() is not None, 10,
                   "the control socket to answer")
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.output()}")
        if wait_ready:
            for app in self.apps:
                self.wait_serving(app["name"], app.get("instances", 1))
        return self

    def stop(self, timeout=30):
        if not self.proc or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"agent did not exit within {timeout}s of SIGTERM:\n{self.output()}")

    def cleanup(self):
        rc = None
        try:
            rc = self.stop()
        except AssertionError as e:
            self.ending_problems.append(str(e).splitlines()[0])
        finally:
            if getattr(self, "out", None):
                self.out.close()
            # Workers are in their own sessions: none may outlive the daemon that ran them.
            survivors = [pid for pid in self.worker_pids_from_log() if process_alive(pid)]
            for pid in survivors:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            if self.proc and self.expect_clean_exit:
                if rc != 0:
                    self.ending_problems.append(f"the agent exited {rc} on SIGTERM, not 0")
                if survivors:
                    self.ending_problems.append(f"workers still alive after the agent exited: {sorted(survivors)}")
            self.final_output = self.output()  # after it exited: LeakSanitizer reports at exit
            shutil.rmtree(self.dir, ignore_errors=True)

    def sighup(self):
        """Sends SIGHUP; waits until the daemon logs the reload's outcome; returns that line."""
        def outcome_lines():
            return [l for l in self.output().splitlines()
                    if "SIGHUP: config reloaded" in l or "keeping the running config" in l]
        before = len(outcome_lines())
        self.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: len(outcome_lines()) > before, 10, "the daemon to apply or refuse the SIGHUP reload")
        return outcome_lines()[-1]

    def output(self):
        try:
            with open(os.path.join(self.dir, "agent.out")) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def worker_pids_from_log(self):
        pids = set()
        for line in self.output().splitlines():
            if "started worker" in line and "(pid " in line:
                pids.add(int(line.split("(pid ")[1].split(")")[0]))
        return pids

    # --- the CLI ---------------------------------------------------------------------------
    def cli(self, *args, timeout=120, user=None):
        cmd = [AGENT, *args, "-c", self.config]
        if user:
            uid = pwd.getpwnam(user).pw_uid if isinstance(user, str) else user
            gid = pwd.getpwuid(uid).pw_gid
            cmd = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def cli_async(self, *args):
        return subprocess.Popen([AGENT, *args, "-c", self.config], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, stdin=subprocess.DEVNULL)

    def try_status(self, app=None):
        r = subprocess.run([AGENT, "status", "--json", "-c", self.config] + ([app] if app else []),
                           capture_output=True, text=True, timeout=10)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def app_status(self, app):
        s = self.try_status(app)
        assert s is not None, "status failed"
        return s["apps"][0]

    def serving(self, app):
        st = self.app_status(app)
        return [w for w in st["workers"] if w["role"] == "serving" and w["state"] == "ready"]

    def wait_serving(self, app, n, release=None, timeout=20):
        def ok():
            st = self.app_status(app)
            ws = [w for w in st["workers"] if w["role"] == "serving" and w["state"] == "ready"]
            good = len(ws) == n and (release is None or all(w["release"] == release for w in ws))
            return st if good and not st["operation"] else None
        return wait_until(ok, timeout, f"{n} ready workers of {app}" + (f" on {release}" if release else ""))

    def wait_drained(self, app, timeout=20):
        """Until no worker of `app` is draining: the old workers have answered their last
        requests (each told its client to close) and exited."""
        return wait_until(lambda: not [w for w in self.app_status(app)["workers"] if w["role"] == "draining"],
                          timeout, f"the old workers of {app} to finish draining")

    # --- files the agent writes -------------------------------------------------------------
    def journal(self, app):
        path = os.path.join(self.state, app, "journal.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip()]

    def alerts(self, kind=None):
        path = os.path.join(self.state, "alerts.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            out = [json.loads(l) for l in f if l.strip()]
        return [a for a in out if kind is None or a["kind"] == kind]

    def current(self, app):
        link = os.path.join(self.state, app, "current")
        return os.path.basename(os.readlink(link)) if os.path.islink(link) else None


_running_loads = []  # stopped by AgentTest.tearDown if a test fails before it stops them


class Load:
    """Continuous HTTP load from tests/e2e/load.js; stop() returns its summary."""

    def __init__(self, port, keep=4, fresh=2, pause_ms=5, path="/"):
        self.dir = tempfile.mkdtemp(prefix="agent-load-")
        self.summary = os.path.join(self.dir, "summary.json")
        self.proc = subprocess.Popen(["node", os.path.join(HERE, "load.js"), str(port), self.summary, str(keep),
                                      str(fresh), str(pause_ms), path], stdin=subprocess.DEVNULL)
        _running_loads.append(self)
        wait_until(lambda: os.path.exists(self.summary + ".started"), 10, "the load generator to start")

    def expect_only(self, release):
        """From now on, every request started must be answered by `release`."""
        with open(self.summary + ".expect", "w") as f:
            f.write(release)
        self.proc.send_signal(signal.SIGUSR2)
        wait_until(lambda: os.path.exists(self.summary + ".marked"), 5, "the load generator to take the mark")

    def answered(self):
        try:
            with open(self.summary + ".progress") as f:
                return int(f.read() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def stop(self, at_least=50):
        """Stops the load once at least `at_least` requests were answered (a fast operation
        may be over before then; what runs after it must not fail either), and returns the summary."""
        wait_until(lambda: self.answered() >= at_least, 15, f"{at_least} requests to be answered")
        _running_loads.remove(self)
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        with open(self.summary) as f:
            s = json.load(f)
        shutil.rmtree(self.dir, ignore_errors=True)
        return s


SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class AgentTest(unittest.TestCase):
    """Base class: self.agents are cleaned up whatever happens."""

    def setUp(self):
        self.agents = []

    def tearDown(self):
        # A load generator left running (the test failed first) would hold ctest's pipe open.
        while _running_loads:
            load = _running_loads.pop()
            load.proc.kill()
            load.proc.wait()
            shutil.rmtree(load.dir, ignore_errors=True)
        reports, endings = [], []
        for a in self.agents:
            if self._outcome_failed():
                print(f"--- agent output ({a.dir}) ---\n{a.output()[-6000:]}")
            try:
                a.cleanup()
            finally:
                # Under the sanitizer build (build-san/), a report ends up in the daemon's output.
                out = getattr(a, "final_output", "")
                reports += [out[out.find(m):][:4000] for m in SANITIZER_MARKS if m in out]
                endings += a.ending_problems
        if reports:
            raise AssertionError("sanitizer report from the agent:\n" + "\n".join(reports))
        if endings and not self._outcome_failed():
            raise AssertionError("how the agent ended:\n" + "\n".join(endings))

    def _outcome_failed(self):
        result = getattr(self._outcome, "result", None)
        errors = getattr(result, "errors", []) + getattr(result, "failures", []) if result else []
        return any(t is self for t, _ in errors)

    def agent(self, apps, tables=None, **settings):
        a = Agent(apps, settings, tables)
        self.agents.append(a)
        return a

    def assertNoFailures(self, summary, min_ok=50):
        self.assertEqual(summary["failed"], 0, f"failed requests: {summary}")
        # Even the keep-alive close race must not show: a draining worker tells each client to
        # close (Connection: close) instead of closing under it.
        self.assertEqual(summary["retried"], 0, f"requests lost on a reused keep-alive connection: {summary}")
        self.assertGreaterEqual(summary["ok"], min_ok, f"too little load got through: {summary}")
