#!/usr/bin/env python3
"""A release that breaks once live, beside PM2, 4 instances (issue 16).

    bench/bake.py [ROUNDS=3]

The app is tests/e2e/apps/fixture/server.js: its /healthz turns 500 some time after it is ready
(knob healthz_500_after_ms) and it logs when it first answers 500.

Agent: health = "GET /healthz" every 500 ms, 3 failures in a row, bake = 20s. Measured: from the
first failing probe (the app's log line) to every worker serving the release before again
(`agent status`, polled every 20 ms), against the target health_interval x health_failures + one
rollout of the app (measured in the same round) + 100 ms.

PM2 (cluster mode, the same app, `pm2 reload` onto the broken release): it has no health check
or bake; measured is what /healthz answers 20 s after the reload.

Prints a table and appends it, with this command, to bench/RESULTS.md.
"""
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
os.environ.setdefault("AGENT", os.path.join(REPO, "build", "agent"))
from harness import Agent, free_port, wait_until  # noqa: E402

PM2 = os.path.join(HERE, ".deps", "node_modules", ".bin", "pm2")
INSTANCES, INTERVAL_MS, FAILURES, BAKE_S, BREAK_AFTER_MS = 4, 500, 3, 20, 1000


def healthz(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def agent_round():
    port = free_port()
    a = Agent([{"name": "web", "command": ["node", "server.js"], "instances": INSTANCES, "listen": [f"127.0.0.1:{port}"],
                "health": "GET /healthz", "health_interval": f"{INTERVAL_MS}ms", "health_failures": FAILURES,
                "bake": f"{BAKE_S}s"}])
    try:
        a.start(wait_ready=False)
        run = lambda *args: subprocess.run([a.proc.args[0], *args, "-c", a.config], capture_output=True, text=True, timeout=120)
        first = run("deploy", "web", "--from", a.make_release("1.0.0"))
        assert first.returncode == 0, first.stderr
        good = a.current("web")
        # One rollout of the app, as the agent reports it ("live: ... in N ms"), without a bake.
        reload = run("reload", "web")
        assert reload.returncode == 0, reload.stderr
        took = re.search(r"on \d+ workers in (\d+(?:\.\d+)?)(ms|s)\b", reload.stdout)
        rollout_ms = float(took.group(1)) * (1000 if took.group(2) == "s" else 1)
        bad = subprocess.Popen([a.proc.args[0], "deploy", "web", "--from",
                                a.make_release("2.0.0", {"healthz_500_after_ms": BREAK_AFTER_MS}), "-c", a.config],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def restored():
            st = a.app_status("web")
            ws = [w for w in st["workers"] if w["role"] == "serving" and w["state"] == "ready"]
            return len(ws) == INSTANCES and all(w["release"] == good for w in ws) and st["state"] != "rolling"
        wait_until(lambda: a.app_status("web")["state"] == "baking", 60, "the broken release to be live")
        wait_until(restored, 60, "the release before to serve on every worker", interval=0.02)
        t_restored = time.time() * 1000
        out, err = bad.communicate(timeout=60)
        assert bad.returncode == 1, out + err
        with open(os.path.join(a.logs, "web", "app.log")) as f:
            first_500 = min(int(m) for m in re.findall(r"healthz: first 500 at (\d+)", f.read()))
        assert a.stop() == 0
        return t_restored - first_500, rollout_ms
    finally:
        a.cleanup()


def pm2_round():
    work = os.path.join("/tmp", f"agent-bench-bake-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    env = dict(os.environ, PM2_HOME=os.path.join(work, "pm2"))
    app = os.path.join(work, "app")
    os.makedirs(app)
    shutil.copy(os.path.join(REPO, "tests", "e2e", "apps", "fixture", "server.js"), app)
    pkg = lambda knobs: json.dump({"name": "fixture", "version": "x", "knobs": knobs}, open(os.path.join(app, "package.json"), "w"))
    pkg({})
    port = free_port()
    pm2 = lambda *args: subprocess.run([PM2, *args], env=dict(env, PORT=str(port)), capture_output=True, text=True, timeout=120)
    try:
        assert pm2("start", os.path.join(app, "server.js"), "-i", str(INSTANCES), "--name", "web").returncode == 0
        wait_until(lambda: healthz(port) == 200, 30, "PM2's app to answer")
        pkg({"healthz_500_after_ms": BREAK_AFTER_MS})
        assert pm2("reload", "web").returncode == 0
        deadline = time.time() + BAKE_S
        answers = []
        while time.time() < deadline:
            answers.append(healthz(port))
            time.sleep(0.5)  # sampling what PM2 serves; not waiting for a condition
        return sum(1 for s in answers[-6:] if s == 500), len(answers[-6:])
    finally:
        pm2("kill")
        shutil.rmtree(work, ignore_errors=True)


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    subprocess.run([os.path.join(HERE, "setup.sh")], check=True, stdout=subprocess.DEVNULL)
    rows = []
    for _ in range(rounds):
        restore_ms, rollout_ms = agent_round()
        bad_500, sampled = pm2_round()
        rows.append((restore_ms, rollout_ms, bad_500, sampled))
        print(f"agent restore {restore_ms:.0f} ms, rollout {rollout_ms:.0f} ms; pm2 /healthz 500 in {bad_500}/{sampled} "
              f"of the last samples {BAKE_S}s after the reload", flush=True)
    restore = statistics.median(r[0] for r in rows)
    rollout = statistics.median(r[1] for r in rows)
    target = INTERVAL_MS * FAILURES + rollout + 100
    node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    pm2v = subprocess.run([PM2, "--version"], capture_output=True, text=True,
                          env=dict(os.environ, PM2_HOME="/tmp/agent-bench-pm2v")).stdout.strip().splitlines()[-1]
    table = f"""
### A release that breaks once live: back on the release before, 4 instances ({time.strftime('%Y-%m-%d')})

Command: `bench/bake.py {rounds}` on {os.cpu_count()} cores, Node {node}, PM2 {pm2v}. Medians of {rounds} rounds.
The release's /healthz turns 500 {BREAK_AFTER_MS} ms after it is ready. Agent: health_interval
{INTERVAL_MS} ms, health_failures {FAILURES}, bake {BAKE_S} s. "Restored": from the first failing
probe to the release before serving on all {INSTANCES} workers again.

| peer | restored, ms | target (interval x failures + one rollout + 100 ms), ms | what serves {BAKE_S} s later |
|---|---|---|---|
| agent | {restore:.0f} | {target:.0f} (rollout {rollout:.0f}) | the release before, on every worker |
| PM2 (cluster, `pm2 reload`) | never: no health check, no bake | - | the broken release: /healthz 500 in {sum(r[2] for r in rows)}/{sum(r[3] for r in rows)} of the last samples |

Every round (agent restored ms, agent rollout ms, PM2 500s in the last samples):

""" + "\n".join(f"    {r[0]:.0f} {r[1]:.0f} {r[2]}/{r[3]}" for r in rows) + "\n"
    print(table)
    with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
        f.write(table)
    return 0 if restore <= target else 1


if __name__ == "__main__":
    sys.exit(main())
