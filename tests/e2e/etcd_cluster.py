"""A real etcd cluster for the fleet tests and bench/fleet.py: Debian's etcd-server, N members on
loopback ports of their own, each with its own data directory. Members can be killed and
started again (same data) to play a member or the whole cluster going down."""

import base64
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

from harness import free_port, wait_until


class EtcdCluster:
    def __init__(self, n=3):
        self.dir = tempfile.mkdtemp(prefix="agent-etcd-")
        self.members = [{"name": f"m{i}", "client": free_port(), "peer": free_port()} for i in range(n)]
        self.initial = ",".join(f"{m['name']}=http://127.0.0.1:{m['peer']}" for m in self.members)
        self.procs = {}
        self.logs = {}

    @property
    def endpoints(self):
        return [f"http://127.0.0.1:{m['client']}" for m in self.members]

    def start_member(self, i):
        m = self.members[i]
        client, peer = f"http://127.0.0.1:{m['client']}", f"http://127.0.0.1:{m['peer']}"
        if i in self.logs:
            self.logs[i].close()
        log = open(os.path.join(self.dir, f"{m['name']}.log"), "a")
        self.logs[i] = log
        self.procs[i] = subprocess.Popen(
            ["etcd", "--name", m["name"], "--data-dir", os.path.join(self.dir, m["name"]),
             "--listen-client-urls", client, "--advertise-client-urls", client,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", self.initial, "--initial-cluster-state", "new", "--initial-cluster-token", self.dir,
             "--heartbeat-interval", "50", "--election-timeout", "500", "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def start(self, timeout=30):
        for i in range(len(self.members)):
            if i not in self.procs or self.procs[i].poll() is not None:
                self.start_member(i)
        self.wait_healthy(timeout)
        return self

    def wait_healthy(self, timeout=30):
        wait_until(lambda: all(self.member_answers(i) for i in self.procs if self.procs[i].poll() is None), timeout,
                   "every running etcd member to answer")

    def member_answers(self, i):
        try:
            self.call("/v3/kv/range", {"key": b64("/")}, endpoint=self.endpoints[i], timeout=2)
            return True
        except Exception:
            return False

    def kill(self, i):
        p = self.procs.get(i)
        if p and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(10)

    def kill_all(self):
        for i in list(self.procs):
            self.kill(i)

    def call(self, path, body, endpoint=None, timeout=5):
        errors = []
        for ep in [endpoint] if endpoint else self.endpoints:
            try:
                req = urllib.request.Request(ep + path, data=json.dumps(body).encode(), method="POST",
                                             headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=timeout) as r:
                    return json.loads(r.read())
            except Exception as e:  # a member that is down: ask the next
                errors.append(f"{ep}: {e}")
        raise RuntimeError("no etcd member answered: " + "; ".join(errors))

    def get_prefix(self, prefix):
        """{key: value} for every key under prefix."""
        end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        r = self.call("/v3/kv/range", {"key": b64(prefix), "range_end": b64(end)})
        return {unb64(kv["key"]): unb64(kv.get("value", "")) for kv in r.get("kvs", [])}

    def cleanup(self):
        self.kill_all()
        for log in self.logs.values():
            log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


def b64(s):
    return base64.b64encode(s.encode()).decode()


def unb64(s):
    return base64.b64decode(s).decode()
