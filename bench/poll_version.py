#!/usr/bin/env python3
"""Deploy latency, seen by a client: runs TRIGGER (a shell command that changes the version
marker), then asks URL over and over, a new connection per request, until every old worker
process (OLD_PIDS, comma-separated) has exited and no answer has come from the old version
(one containing OLD) for QUIET seconds. Prints one line:

  <ms to the first answer after the last OLD one> <ms to the first answer from a new version>
  <ms until the last old worker exited> <requests that failed>

The third figure bounds the first: a kernel shared accept queue need not pick an idle old
worker for a sequential client, but once the old processes are gone none can answer. "failed"
counts refused or reset connections, timeouts and non-200 answers of this tight loop.
  poll_version.py URL OLD TRIGGER OLD_PIDS [QUIET=2] [DEADLINE=90]
"""
import http.client
import os
import subprocess
import sys
import time
from urllib.parse import urlsplit

url, old, trigger = sys.argv[1], sys.argv[2], sys.argv[3]
old_pids = [int(p) for p in sys.argv[4].split(",") if p]
quiet = float(sys.argv[5]) if len(sys.argv) > 5 else 2.0
deadline = float(sys.argv[6]) if len(sys.argv) > 6 else 90.0
u = urlsplit(url)


def ask():
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=2)
    try:
        c.request("GET", u.path or "/", headers={"Connection": "close"})
        r = c.getresponse()
        body = r.read().decode(errors="replace")
        return body if r.status == 200 else None
    except OSError:
        return None
    finally:
        c.close()


def running(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # gone, possibly between the open and the read (ESRCH)
        return False


if not old_pids:
    sys.exit("poll_version: no old worker pids given")
t0 = time.monotonic()
subprocess.run(trigger, shell=True, check=True)
last_old = None      # time of the last answer from the old version
after_old = None     # the first answer after it (from a new version)
first_new = None
old_gone = None
failed = 0
while True:
    if time.monotonic() - t0 > deadline:
        sys.exit(f"poll_version: timeout; old workers still running: {[p for p in old_pids if running(p)]}")
    body = ask()
    t = time.monotonic()
    if body is None:
        failed += 1
    elif old in body:
        last_old, after_old = t, None
    else:
        first_new = first_new or t
        after_old = after_old or t
    if old_gone is None and not any(running(p) for p in old_pids):
        old_gone = t
    if after_old is not None and old_gone is not None and t - (last_old or t0) >= quiet:
        break
print(f"{(after_old - t0) * 1000:.0f} {(first_new - t0) * 1000:.0f} {(old_gone - t0) * 1000:.0f} {failed}")
