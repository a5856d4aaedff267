#!/usr/bin/env python3
"""A fleet rollout through etcd beside a shell loop deploying host after host (issue 17).

    bench/fleet.sh [ROUNDS=2]     (runs this file)

8 agents on this machine (hosts web-01..web-08, 2 workers each, the fixture app with
health = "GET /healthz" and bake = 2s) in one [fleet] on a real 3-member etcd on loopback,
fleet_waves = [1, "50%", "100%"]: 1 host, then 4, then the other 3.

Fleet: a new version is dropped in every host's watched source at once; measured from the drop
to the last host done (baked). Beside it:
  ideal     the sum over the waves of the slowest host's hold of its slot (its rollout and its
            bake, from its own log), i.e. the time if the next wave began the instant the one
            before was done;
  overhead  per host, from the moment it could go (its wave opened and it was waiting) to the
            moment it held its slot: what coordination through etcd costs (target <= 50 ms).
Loop: `agent deploy --no-fleet` on each host in turn, as serial ssh deploy scripts and
`pm2 deploy` do; measured from the first to the last done.

Prints a table and appends it, with this command, to bench/RESULTS.md.
"""
import calendar
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "tests", "e2e"))
os.environ.setdefault("AGENT", os.path.join(REPO, "build", "agent"))
from etcd_cluster import EtcdCluster  # noqa: E402
from harness import Agent, free_port, wait_until  # noqa: E402

HOSTS, INSTANCES, BAKE, WAVES = 8, 2, "2s", [1, "50%", "100%"]
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \S+ (.*)$")


def log_time(stamp):
    return calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:23]) / 1000


def events(a, version):
    """{what: time} from a host's log for its turn at `version`."""
    out = {}
    for line in a.output().splitlines():
        m = LOG_LINE.match(line)
        if not m:
            continue
        t, text = log_time(m.group(1)), m.group(2)
        if f"waiting for a fleet slot for version {version}" in text:
            out["waiting"] = t
        elif f"fleet slot for {version} taken" in text:
            out["taken"] = t
        elif "taken" in out and "done" not in out and re.match(r"web: deploy (done|failed): ", text):
            out["done"] = t
    return out


def version_of(a):
    st = a.try_status("web")
    if not st:
        return None
    app = st["apps"][0]
    return app["version"] if not app["operation"] and "fleet_waiting" not in app else None


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    etcd = EtcdCluster(3).start()
    tmp = tempfile.mkdtemp(prefix="bench-fleet-")
    hosts = []
    try:
        for i in range(HOSTS):
            host = f"web-{i + 1:02d}"
            port = free_port()
            src = os.path.join(tmp, host)
            os.makedirs(src)
            a = Agent([{"name": "web", "command": ["node", "server.js"], "instances": INSTANCES, "listen": [f"127.0.0.1:{port}"],
                        "source": src, "settle": "100ms", "ready_timeout": "20s", "health": "GET /healthz",
                        "health_interval": "200ms", "health_failures": 3, "bake": BAKE, "fleet_waves": WAVES}],
                      tables={"fleet": {"etcd": etcd.endpoints, "name": "bench", "host": host, "lease_ttl": "5s"}})
            a.host, a.src = host, src
            a.start(wait_ready=False)
            hosts.append(a)
        first = [a.cli_async("deploy", "web", "--from", a.make_release("1.0.0"), "--no-fleet") for a in hosts]
        for p in first:
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, out + err
        rows = []
        for r in range(rounds):
            fleet_v, loop_v = f"1.{2 * r + 1}.0", f"1.{2 * r + 2}.0"
            # Fleet: dropped everywhere at once.
            dirs = [a.make_release(fleet_v) for a in hosts]
            t0 = time.time()
            for a, d in zip(hosts, dirs):
                for name in sorted(os.listdir(d), key=lambda n: n == "package.json"):
                    shutil.copy(os.path.join(d, name), a.src)
            for a in hosts:
                wait_until(lambda a=a: version_of(a) == fleet_v, 300, f"{a.host} on {fleet_v}", interval=0.1)
            ev = {a.host: events(a, fleet_v) for a in hosts}
            total = max(e["done"] for e in ev.values()) - t0
            order = sorted(ev, key=lambda h: ev[h]["taken"])
            bounds, hold_ideal, overheads, opened = [1, 5, 8], 0.0, [], t0
            start = 0
            for end in bounds:
                wave = order[start:end]
                hold_ideal += max(ev[h]["done"] - ev[h]["taken"] for h in wave)
                for h in wave:
                    overheads.append(ev[h]["taken"] - max(opened, ev[h]["waiting"]))
                opened = max(ev[h]["done"] for h in wave)
                start = end
            ready_to_ask = min(e["waiting"] for e in ev.values()) - t0  # the drop seen, staged, preflighted
            # Loop: host after host, as a serial deploy script does.
            dirs = [a.make_release(loop_v) for a in hosts]
            t1 = time.time()
            for a, d in zip(hosts, dirs):
                res = a.cli("deploy", "web", "--from", d, "--no-fleet", timeout=120)
                assert res.returncode == 0, res.stdout + res.stderr
            loop_total = time.time() - t1
            rows.append((total, hold_ideal + ready_to_ask, statistics.median(overheads), max(overheads), loop_total))
            print(f"round {r + 1}: fleet {total:.2f}s (ideal {hold_ideal + ready_to_ask:.2f}s), overhead per host median "
                  f"{statistics.median(overheads) * 1000:.0f} ms max {max(overheads) * 1000:.0f} ms; loop {loop_total:.2f}s", flush=True)
        report(rows, rounds)
    finally:
        for a in hosts:
            try:
                a.cleanup()
            except Exception as e:  # noqa: BLE001 (a bench reports and goes on)
                print(f"{a.host}: {e}")
        etcd.cleanup()
        shutil.rmtree(tmp, ignore_errors=True)


def report(rows, rounds):
    med = lambda i: statistics.median(r[i] for r in rows)  # noqa: E731
    fleet, ideal, over_med, over_max, loop = med(0), med(1), med(2), max(r[3] for r in rows), med(4)
    text = f"""
### Fleet: 8 hosts x 2 workers through etcd, waves [1, 50%, 100%], bake 2s ({time.strftime('%Y-%m-%d')})
`bench/fleet.sh {rounds}` ({rounds} rounds, medians; 8 agents, 16 workers and a 3-member etcd on one 2-core machine)

| | fleet (agent, etcd) | ideal (waves back to back) | shell loop, host after host |
|---|---|---|---|
| drop to last host done | {fleet:.2f} s | {ideal:.2f} s | {loop:.2f} s |
| vs the loop | {loop / fleet:.1f}x faster | | 1x |

Coordination overhead per host (its wave open and it waiting, to its slot held): median {over_med * 1000:.0f} ms,
worst {over_max * 1000:.0f} ms (target <= 50 ms). The fleet's total is its ideal plus that overhead per wave;
the loop is one host's rollout and bake times 8, and it never stops at a bad host by itself.
"""
    print(text)
    with open(os.path.join(HERE, "RESULTS.md"), "a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
