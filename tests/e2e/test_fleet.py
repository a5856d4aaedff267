"""Fleets (issue 17): hosts roll a new version K at a time through a real etcd, and stop at the
first bad host. A real 3-member etcd cluster on loopback ports of its own (Debian's
etcd-server), 2 to 4 real agents as hosts (own state dir, socket, port and source each), real
Node workers, a real SMTP server. A version is "dropped" on a host the way yum does it: its
files land in the app's watched source directory."""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest

from etcd_cluster import EtcdCluster
from harness import AgentTest, free_port, http_get, process_alive, wait_until
from test_alerts import Smtp

LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \S+ (.*)$")


def log_time(stamp):
    return time.mktime(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")) + int(stamp[20:23]) / 1000


class FleetTest(AgentTest):
    """A 3-member etcd for each test, and the helpers; the tests are in the classes below."""

    def setUp(self):
        super().setUp()
        self.etcd = EtcdCluster(3).start()
        self.addCleanup(self.etcd.cleanup)  # after tearDown: the agents go first, while etcd still answers
        self.tmp = tempfile.mkdtemp(prefix="agent-fleet-")
        self.addCleanup(shutil.rmtree, self.tmp, ignore_errors=True)
        self.hosts = []
        self.smtp = None

    def start_fleet(self, n, waves, bake="2s", lease_ttl="3s", mail=False, metrics=False):
        """n hosts of fleet "t", each running app web 1.0.0 (deployed past the gate); with
        metrics, each serves /metrics on a.metrics_port."""
        if mail:
            self.smtp = Smtp(free_port(), os.path.join(self.tmp, "mail"))
            self.addCleanup(self.smtp.stop)
        for i in range(n):
            host = f"web-{i + 1:02d}"
            port = free_port()
            src = os.path.join(self.tmp, host + "-src")
            os.makedirs(src)
            spec = {"name": "web", "command": ["node", "server.js"], "instances": 1, "listen": [f"127.0.0.1:{port}"],
                    "source": src, "settle": "200ms", "ready_timeout": "10s", "drain_timeout": "5s",
                    "health": "GET /healthz", "health_interval": "200ms", "health_timeout": "500ms", "health_failures": 3,
                    "bake": "1s", "fleet_waves": waves}
            tables = {"fleet": {"etcd": self.etcd.endpoints, "name": "t", "host": host, "lease_ttl": lease_ttl,
                                "unreachable_alert": "2s"}}
            if mail:
                tables["alerts"] = {"email_to": ["ops@example.com"], "email_from": "agent@example.com",
                                    "smtp_url": f"smtp://127.0.0.1:{self.smtp.port}"}
            metrics_port = free_port() if metrics else None
            settings = {"metrics_listen": f"127.0.0.1:{metrics_port}"} if metrics else {}
            a = self.agent([spec], tables=tables, **settings)
            a.host, a.port, a.src, a.metrics_port = host, port, src, metrics_port
            a.start(wait_ready=False)
            self.hosts.append(a)
        # The fleet starts on 1.0.0 everywhere, deployed past the gate (--no-fleet) to save time.
        deploys = [a.cli_async("deploy", "web", "--from", a.make_release("1.0.0"), "--no-fleet") for a in self.hosts]
        for a, p in zip(self.hosts, deploys):
            out, err = p.communicate(timeout=60)
            self.assertEqual(p.returncode, 0, f"{a.host}: {out}{err}")
            self.assertIn("deploying past the fleet's gate (--no-fleet)", out)
        for a in self.hosts:
            notes = [e for e in a.journal("web") if e["event"] == "note"]
            self.assertTrue(any("--no-fleet" in e["reason"] for e in notes), notes)
            if bake != "1s":  # the first deploy baked 1s; the versions the test drops bake this long
                a.apps[0]["bake"] = bake
                a.write_config()
                self.assertIn("config reloaded", a.sighup())

    def drop(self, version, knobs=None, hosts=None):
        """The package manager lands `version` in the source of each host, all at once."""
        for a in hosts or self.hosts:
            d = a.make_release(version, knobs)
            for name in sorted(os.listdir(d), key=lambda n: n == "package.json"):  # package.json last
                shutil.copy(os.path.join(d, name), a.src)

    def live_version(self, a):
        st = a.try_status("web")
        if not st:
            return None
        app = st["apps"][0]
        return app["version"] if not app["operation"] and "fleet_waiting" not in app else None

    def turns(self, a, version):
        """(its rollout of `version` began, its deploy ended) from the host's log, in its clock (the
        same machine's). The start is the rollout's own line, so a host that rolled without a
        slot would count too; and a host may roll only after its log said it took the slot."""
        taken = start = end = None
        for line in a.output().splitlines():
            m = LOG_LINE.match(line)
            if not m:
                continue
            text = m.group(2)
            if f"web: fleet slot for {version} taken" in text:
                taken = log_time(m.group(1))
            elif start is None and re.match(rf"web: rolling \S+-{re.escape(version)} onto ", text):
                start = log_time(m.group(1))
                assert taken is not None and taken <= start, f"{a.host} rolled {version} without a slot"
            elif start and end is None and re.match(r"web: deploy (done|failed): ", text):
                end = log_time(m.group(1))
        return start, end

    def fleet_status(self, a):
        r = a.cli("fleet", "status", "web", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)

    def states(self, status):
        return {h["host"]: h["state"] for h in status["apps"][0]["hosts"]}

    def release_states(self, a, version):
        r = a.cli("releases", "web", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return [x["state"] for x in json.loads(r.stdout)["releases"] if x["version"] == version]


class Fleet(FleetTest):
    # 1
    def test_a_good_version_rolls_wave_by_wave_and_the_canary_alone_until_its_bake_passed(self):
        self.start_fleet(4, [1, "50%", "100%"], metrics=True)
        # Each host's /metrics says its own turn; scraped all along, the fleet's view is their sum.
        scrapes, stop_scraping = [], threading.Event()
        def scrape():
            while not stop_scraping.is_set():
                row = {}
                for a in self.hosts:
                    try:
                        text = http_get(a.metrics_port, "/metrics", timeout=2)
                    except OSError:
                        continue
                    on = re.findall(r'^deploy_agent_fleet_turn\{app="web",state="(\w+)"\} 1$', text, re.M)
                    row[a.host] = on[0] if len(on) == 1 else f"not one-hot: {on}"
                scrapes.append(row)
                time.sleep(0.05)
        scraper = threading.Thread(target=scrape)
        scraper.start()
        self.addCleanup(lambda: (stop_scraping.set(), scraper.join()))
        self.drop("1.1.0")
        for a in self.hosts:
            wait_until(lambda a=a: self.live_version(a) == "1.1.0", 90, f"{a.host} to run 1.1.0")
        wait_until(lambda: scrapes and set(scrapes[-1].values()) == {"idle"} and len(scrapes[-1]) == 4, 10,
                   "every host's /metrics to say idle")
        stop_scraping.set()
        scraper.join()
        seen = {a.host: {row.get(a.host) for row in scrapes} - {None} for a in self.hosts}
        for host, states in seen.items():
            self.assertLessEqual(states, {"waiting", "rolling", "baking", "idle"}, f"{host}: {states}")
            self.assertLessEqual({"baking", "idle"}, states, f"{host}: {states}")  # each bakes 2 s
        self.assertTrue(any("waiting" in s for s in seen.values()), seen)  # those after the canary waited
        self.assertTrue(any("rolling" in s for s in seen.values()), seen)  # one worker rolls in a moment
        self.assertLessEqual(max(sum(v in ("rolling", "baking") for v in row.values()) for row in scrapes), 2, seen)
        turns = {a.host: self.turns(a, "1.1.0") for a in self.hosts}
        for host, (start, end) in turns.items():
            self.assertTrue(start and end and end > start, f"{host}: {turns}")
        order = sorted(turns, key=lambda h: turns[h][0])
        canary, wave2, last = order[0], order[1:3], order[3]
        # The canary rolls alone until its bake passed; wave 2 is 50% of 4 hosts; the last one
        # starts only when every host of the earlier waves is done.
        for h in order[1:]:
            self.assertGreater(turns[h][0], turns[canary][1], f"{h} began before the canary was done: {turns}")
        self.assertGreater(turns[last][0], max(turns[h][1] for h in wave2), turns)
        # At no moment more hosts hold a slot than the open wave allows (2 at most).
        events = sorted([(s, 1) for s, _ in turns.values()] + [(e, -1) for _, e in turns.values()], key=lambda x: (x[0], x[1]))
        held = peak = 0
        for _, d in events:
            held += d
            peak = max(peak, held)
        self.assertLessEqual(peak, 2, turns)
        # Each waited its turn, journaled; the canary's bake passed before anything else rolled.
        for a in self.hosts:
            self.assertTrue(any(e["event"] == "note" and "waiting for a fleet slot for version 1.1.0" in e["reason"]
                                for e in a.journal("web")))
            self.assertTrue(any(e["event"] == "baked" and e["version"] == "1.1.0" for e in a.journal("web")))
        st = self.fleet_status(self.hosts[0])
        self.assertEqual(st["apps"][0]["version"], "1.1.0")
        self.assertIsNone(st["apps"][0]["halt"])
        self.assertEqual(set(self.states(st).values()), {"done"}, st)
        self.assertEqual({h["host"]: h["alive"] for h in st["hosts"]}, {a.host: True for a in self.hosts})
        text = self.hosts[2].cli("fleet", "status")
        self.assertEqual(text.returncode, 0, text.stderr)
        self.assertIn("web 1.1.0: wave 3 of 3 open", text.stdout)
        for a in self.hosts:
            self.assertEqual(a.stop(), 0)

    # 2
    def test_a_version_that_fails_its_bake_on_the_canary_halts_everywhere_with_one_mail(self):
        self.start_fleet(4, [1, "50%", "100%"], mail=True)
        self.drop("1.2.0", {"healthz_500_after_ms": 200})

        def settled():
            out = {}
            for a in self.hosts:
                s = self.release_states(a, "1.2.0")
                if not s or s[-1] not in ("bad", "halted"):
                    return None
                out[a.host] = s[-1]
            return out
        ends = wait_until(settled, 90, "the canary to fail 1.2.0 and the others to give it up")
        canaries = [h for h, s in ends.items() if s == "bad"]
        self.assertEqual(len(canaries), 1, ends)
        canary = canaries[0]
        for a in self.hosts:
            wait_until(lambda a=a: self.live_version(a) == "1.0.0", 30, f"{a.host} back on 1.0.0")
            if a.host != canary:
                self.assertEqual(self.turns(a, "1.2.0"), (None, None), f"{a.host} rolled 1.2.0")
                halted = [e for e in a.journal("web") if e["event"] == "halted"]
                self.assertEqual(len(halted), 1)
                self.assertIn(f"halted by {canary}: bake failed", halted[0]["reason"])
            st = self.fleet_status(a)  # every host sees the halt
            self.assertEqual(st["apps"][0]["halt"]["host"], canary)
            self.assertIn("HTTP 500", st["apps"][0]["halt"]["reason"])
            self.assertEqual(self.states(st)[canary], "failed")
        # One alert in the whole fleet, from the canary, and so one mail.
        raised = {a.host: [x["kind"] for x in a.alerts()] for a in self.hosts}
        self.assertEqual(raised, {a.host: (["fleet_halted"] if a.host == canary else []) for a in self.hosts})
        mail = wait_until(lambda: self.smtp.messages(), 15, "the fleet_halted mail")
        self.assertEqual(len(mail), 1)
        self.assertIn("is halted on every host of fleet t", mail[0]["message"]["Subject"])
        self.assertIn("agent fleet resume web 1.2.0", mail[0]["message"].get_content())

    # 3
    def test_the_slot_of_an_agent_killed_9_frees_itself_within_the_lease(self):
        self.start_fleet(3, [1], bake="60s", lease_ttl="3s")
        self.drop("1.3.0")
        holder = wait_until(lambda: next((a for a in self.hosts if self.turns(a, "1.3.0")[0]), None), 30, "a host to take the slot")
        def baking_worker():
            st = holder.app_status("web")  # one snapshot: the worker serving while it bakes
            ws = [w["pid"] for w in st["workers"] if w["role"] == "serving" and w["state"] == "ready"]
            return ws[0] if "bake_left_s" in st and ws else None
        worker = wait_until(baking_worker, 30, "the holder to bake")
        t0 = time.monotonic()
        holder.proc.kill()
        holder.proc.wait(10)
        others = [a for a in self.hosts if a is not holder]
        wait_until(lambda: any(self.turns(a, "1.3.0")[0] for a in others), 3 + 1 + 0.5, "another host to get the slot")
        took = time.monotonic() - t0
        self.assertLess(took, 3 + 1, f"the slot came free after {took:.2f}s (lease_ttl 3s)")
        # The killed agent, started again, takes over from its worker as it does today (test_restart).
        self.assertTrue(process_alive(worker), "the worker outlives its killed agent and keeps serving:\n" + holder.output()[-3000:])
        holder.start(wait_ready=False)
        holder.wait_serving("web", 1, timeout=30)
        wait_until(lambda: not holder.app_status("web")["orphans"] and not process_alive(worker), 30,
                   "the previous agent's worker to be drained")
        self.assertIn("worker(s) of a previous agent still running", holder.output())

    # 4
    def test_one_etcd_member_killed_mid_rollout_changes_nothing(self):
        self.start_fleet(3, [1, "100%"], bake="2s")
        self.drop("1.4.0")
        wait_until(lambda: any(self.turns(a, "1.4.0")[0] for a in self.hosts), 30, "the canary to take its slot")
        self.etcd.kill(0)  # the first endpoint of every agent
        for a in self.hosts:
            wait_until(lambda a=a: self.live_version(a) == "1.4.0", 60, f"{a.host} to run 1.4.0")
        st = self.fleet_status(self.hosts[1])
        self.assertEqual(set(self.states(st).values()), {"done"}, st)

    # 5
    def test_with_etcd_down_a_drop_waits_a_reload_does_not_and_the_drop_rolls_when_it_is_back(self):
        self.start_fleet(2, [1, "100%"], bake="1s", metrics=True)
        h = self.hosts[0]
        unreachable = lambda: re.search(r"^deploy_agent_fleet_etcd_unreachable (\d)$", http_get(h.metrics_port, "/metrics"), re.M).group(1)
        self.assertEqual(unreachable(), "0")
        self.etcd.kill_all()
        deploy = h.cli_async("deploy", "web", "--from", h.make_release("1.5.0"))
        wait_until(lambda: h.app_status("web").get("fleet_waiting_version") == "1.5.0", 20, "the deploy to wait for the fleet")
        t0 = time.monotonic()
        r = h.cli("reload", "web", timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertLess(time.monotonic() - t0, 15)
        alert = wait_until(lambda: h.alerts("fleet_unreachable"), 15, "the fleet_unreachable alert")
        self.assertIn("etcd of fleet t is unreachable", alert[0]["summary"])
        self.assertEqual(unreachable(), "1")
        self.assertIn('deploy_agent_fleet_turn{app="web",state="waiting"} 1', http_get(h.metrics_port, "/metrics"))
        self.assertEqual(h.app_status("web")["version"], "1.0.0")
        self.etcd.start()
        out, err = deploy.communicate(timeout=90)
        self.assertEqual(deploy.returncode, 0, out + err)
        self.assertIn("waiting for a fleet slot: etcd unreachable", out)
        self.assertIn("fleet slot for 1.5.0 taken", out)
        self.assertEqual(self.live_version(h), "1.5.0")
        wait_until(lambda: unreachable() == "0", 10, "/metrics to say etcd is reachable again")

    # 6
    def test_fleet_resume_after_a_halt_lets_the_version_roll_again(self):
        self.start_fleet(3, [1, "100%"], bake="2s")
        broken = os.path.join(self.tmp, "downstream-is-down")
        open(broken, "w").close()
        self.drop("1.6.0", {"health_fail_file": broken})
        wait_until(lambda: all(self.release_states(a, "1.6.0")[-1:] in (["bad"], ["halted"]) for a in self.hosts), 90,
                   "1.6.0 to fail on the canary and halt")
        os.remove(broken)  # what failed it is fixed
        r = self.hosts[2].cli("fleet", "resume", "web", "1.6.0")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("resumed web 1.6.0 in fleet t", r.stdout)
        for a in self.hosts:
            wait_until(lambda a=a: self.live_version(a) == "1.6.0", 90, f"{a.host} to run 1.6.0")
        st = self.fleet_status(self.hosts[0])
        self.assertIsNone(st["apps"][0]["halt"])
        self.assertEqual(set(self.states(st).values()), {"done"}, st)
        again = self.hosts[2].cli("fleet", "resume", "web", "1.6.0")
        self.assertEqual(again.returncode, 1)
        self.assertIn("is not halted", again.stderr)

    def test_a_drop_waiting_for_its_slot_is_seen_again_after_the_agent_restarts(self):
        self.start_fleet(2, [1], bake="60s")
        self.drop("1.7.0")
        holder = wait_until(lambda: next((a for a in self.hosts if self.turns(a, "1.7.0")[0]), None), 30, "a host to take the slot")
        waiter = next(a for a in self.hosts if a is not holder)
        wait_until(lambda: waiter.app_status("web").get("fleet_waiting_version") == "1.7.0", 20, "the other host to wait")
        self.assertEqual(waiter.stop(), 0)  # while it waits: its turn has not come, the drop is not acted on
        waiter.start(wait_ready=False)
        wait_until(lambda: waiter.app_status("web").get("fleet_waiting_version") == "1.7.0", 20,
                   "the restarted agent to see the drop again and wait for its slot")
        st = self.fleet_status(holder)
        self.assertEqual(self.states(st), {holder.host: "baking", waiter.host: "waiting"}, st)


class GitFleet(FleetTest):
    """The git trigger in a fleet: the pusher sees the wait in its `remote:` lines."""

    def git(self, *args, cwd):
        r = subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=cwd, capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def test_the_git_pusher_sees_the_wait_for_a_fleet_slot(self):
        hosts = []
        for i in range(2):
            host, port = f"web-{i + 1:02d}", free_port()
            spec = {"name": "web", "command": ["node", "server.js"], "instances": 1, "listen": [f"127.0.0.1:{port}"],
                    "ready_timeout": "10s", "bake": "1s", "fleet_waves": [1]}
            a = self.agent([spec], tables={"fleet": {"etcd": self.etcd.endpoints, "name": "t", "host": host, "lease_ttl": "3s"}})
            a.host, a.bare = host, os.path.join(a.dir, "web.git")
            spec["git"], spec["branch"] = a.bare, "main"
            a.write_config()
            a.start(wait_ready=False)
            wait_until(lambda a=a: os.access(os.path.join(a.bare, "hooks", "post-receive"), os.X_OK), 10, "the bare repository")
            r = a.cli("deploy", "web", "--from", a.make_release("1.0.0"), "--no-fleet")
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            a.apps[0]["bake"] = "60s"  # web-01 holds its slot a while
            a.write_config()
            self.assertIn("config reloaded", a.sighup())
            hosts.append(a)
        work = os.path.join(self.tmp, "work")
        self.git("init", "-q", "-b", "main", work, cwd=self.tmp)
        shutil.copy(os.path.join(os.path.dirname(os.path.abspath(__file__)), "apps", "fixture", "server.js"), work)
        with open(os.path.join(work, "package.json"), "w") as f:
            json.dump({"name": "fixture", "version": "2.0.0"}, f)
        self.git("add", "-A", cwd=work)
        self.git("commit", "-qm", "2.0.0", cwd=work)
        pushes, heard = [], []

        def push(bare):
            # Its own process group: the hook and the agent client under git go with it at the end.
            p = subprocess.Popen(["git", "push", bare, "main"], cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 stdin=subprocess.DEVNULL, start_new_session=True)
            lines = []
            threading.Thread(target=lambda: lines.extend(iter(p.stdout.readline, "")), daemon=True).start()
            pushes.append(p)
            heard.append(lines)
            self.addCleanup(lambda: (os.killpg(p.pid, signal.SIGKILL), p.wait(10), p.stdout.close()))

        push(hosts[0].bare)
        wait_until(lambda: "bake_left_s" in hosts[0].app_status("web"), 30, "web-01 to roll the push and bake it")
        push(hosts[1].bare)
        line = wait_until(lambda: next((l for l in heard[1] if "waiting for a fleet slot: web-01" in l), None), 30,
                          "web-02's pusher to see the wait")
        self.assertRegex(line, r"^remote: agent: waiting for a fleet slot: web-01 baking 2\.0\.0\S* \(wave 1 of 2")
        self.assertTrue(hosts[1].app_status("web").get("fleet_waiting"))

if __name__ == "__main__":
    unittest.main()
