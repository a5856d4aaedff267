#!/usr/bin/env python3
"""Deploy latency, seen by a client: runs TRIGGER (a shell command that changes the version
marker), then asks URL over and over, a new connection per request so the kernel spreads them
over every worker, until no worker has answered with OLD for QUIET seconds. Prints one line:

  <ms from the trigger to the first answer after the last OLD one> <ms to the first NEW answer> <failed requests>

"failed" counts refused or reset connections, timeouts and non-200 answers.
  poll_version.py URL OLD TRIGGER [QUIET=2] [DEADLINE=90]
"""
import http.client
import subprocess
import sys
import time
from urllib.parse import urlsplit

url, old, trigger = sys.argv[1], sys.argv[2], sys.argv[3]
quiet = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
deadline = float(sys.argv[5]) if len(sys.argv) > 5 else 90.0
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


t0 = time.monotonic()
subprocess.run(trigger, shell=True, check=True)
last_old = None      # time of the last answer from the old version
after_old = None     # the first answer after it (from the new version)
first_new = None
failed = 0
while True:
    now = time.monotonic()
    if now - t0 > deadline:
        print("timeout", file=sys.stderr)
        sys.exit(1)
    body = ask()
    t = time.monotonic()
    if body is None:
        failed += 1
    elif old in body:
        last_old, after_old = t, None
    else:
        first_new = first_new or t
        after_old = after_old or t
    if after_old is not None and t - (last_old or t0) >= quiet:
        break
print(f"{(after_old - t0) * 1000:.0f} {(first_new - t0) * 1000:.0f} {failed}")
