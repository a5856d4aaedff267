"""Bake (issue 16): a release that goes bad after it is live is rolled back by itself, with the
same zero-failure rolling swap, journaled bad, mailed once, and never deployed again by a
trigger or landed on by rollback. Real daemon, real Node workers, load running, a real SMTP
server (aiosmtpd)."""
import json
import os
import shutil
import time
import unittest

from harness import Load, wait_until
from test_alerts import Alerting, Smtp, free_port

BAKE = {"health": "GET /healthz", "health_interval": "300ms", "health_timeout": "500ms", "health_failures": 3,
        "bake": "3s", "drain_timeout": "5s"}


class Bake(Alerting):
    def setUp(self):
        super().setUp()
        self.smtp = Smtp(free_port(), os.path.join(self.tmpdir(), "mail"))
        self.addCleanup(self.smtp.stop)

    def start(self, instances=2, **extra):
        return self.start_agent(self.smtp.port, instances=instances, **{**BAKE, **extra})

    def releases(self):
        r = self.a.cli("releases", "nuomi", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)["releases"]

    def state_of(self, version):
        return [r["state"] for r in self.releases() if r["version"] == version]

    def test_healthz_turning_500_once_live_is_rolled_back_within_the_bake(self):
        a = self.start(instances=4)
        self.assertEqual(self.deploy("1.0.0").returncode, 0)
        good = a.current("nuomi")
        load = Load(self.port)
        t0 = time.monotonic()
        r = self.deploy("2.0.0", {"healthz_500_after_ms": 200})
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("failed its bake: health probe failed 3 times in a row: GET /healthz: HTTP 500: broken", r.stderr)
        self.assertIn("baking ", r.stdout)
        self.assertLess(took, 3 + 10, "the rollback came after the bake would have ended")
        self.assertEqual(a.current("nuomi"), good)
        a.wait_serving("nuomi", 4, release=good)
        self.assertEqual(self.state_of("2.0.0"), ["bad"])
        wait_until(lambda: self.smtp.messages("bake_failed"), 15, "the bake_failed mail")
        self.assertNoFailures(load.stop())  # "/" kept answering on every path through the swap back
        self.assertEqual(len(self.smtp.messages("bake_failed")), 1)
        self.assertEqual(len(a.alerts("unhealthy")), 0, "the bake_failed alert is the one message")
        bad = [e for e in a.journal("nuomi") if e["event"] == "rolled_back" and e.get("bad")]
        self.assertEqual(len(bad), 1)
        self.assertIn("HTTP 500", bad[0]["reason"])
        self.assertEqual(a.stop(), 0)

    def test_a_watched_release_that_crashes_after_ready_goes_back_and_is_not_redeployed(self):
        src = os.path.join(self.tmpdir(), "src")
        os.makedirs(src)
        a = self.start(source=src, settle="300ms")
        v1 = a.make_release("1.0.0")
        for name in os.listdir(v1):
            shutil.copy(os.path.join(v1, name), src)
        wait_until(lambda: [e for e in a.journal("nuomi") if e["event"] == "baked"], 30, "1.0.0 to deploy and bake")
        first = a.current("nuomi")
        # (No load check here: a worker that crashes drops the connections it holds; that is
        # the app's doing, and the first test proves the swap back itself loses nothing.)
        bad_pkg = {"name": "fixture", "version": "2.0.0", "knobs": {"exit_after_ready_ms": 1500}}
        write_json(os.path.join(src, "package.json"), bad_pkg)
        wait_until(lambda: self.state_of("2.0.0") == ["bad"], 40, "2.0.0 to fail its bake and go back")
        self.assertEqual(a.current("nuomi"), first)
        a.wait_serving("nuomi", 2, release=first)
        reason = [e for e in a.journal("nuomi") if e.get("bad")][0]["reason"]
        self.assertIn("exited during the bake: exited with status 3", reason)
        # The same content again (it went away and came back): the watch does not deploy it.
        write_json(os.path.join(src, "package.json"), {**bad_pkg, "version": "2.0.1"})
        wait_until(lambda: any(e["event"] == "staged" and e["version"] == "2.0.1" for e in a.journal("nuomi")), 30,
                   "2.0.1 to be staged")
        write_json(os.path.join(src, "package.json"), bad_pkg)
        refused = wait_until(lambda: [e for e in a.journal("nuomi") if e["event"] == "refused"
                                      and "failed its bake" in e["reason"]], 40, "the bad content to be refused")
        self.assertIn("the same package.json content as", refused[0]["reason"])
        staged_2_0_0 = [e for e in a.journal("nuomi") if e["event"] == "staged" and e["version"] == "2.0.0"]
        self.assertEqual(len(staged_2_0_0), 2, "staged again to compare, then discarded")
        self.assertEqual(self.state_of("2.0.0"), ["bad"], "only the first 2.0.0 is kept on disk")
        self.assertEqual(a.stop(), 0)

    def test_a_probe_that_is_accepted_and_never_answered_fails_at_health_timeout(self):
        a = self.start()
        self.assertEqual(self.deploy("1.0.0").returncode, 0)
        r = self.deploy("2.0.0", {"healthz_hang": True})
        self.assertEqual(r.returncode, 1)
        self.assertIn("GET /healthz: no answer within 500ms", r.stderr)
        self.assertEqual(self.state_of("2.0.0"), ["bad"])
        self.assertEqual(a.stop(), 0)

    def test_a_good_release_is_journaled_baked_and_the_deploy_ends_after_the_bake(self):
        a = self.start()
        t0 = time.monotonic()
        r = self.deploy("1.0.0")
        took = time.monotonic() - t0
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertGreaterEqual(took, 3.0, "the deploy ended before its bake")
        self.assertRegex(r.stdout, r"baked 3s: \d+ probes ok")
        self.assertEqual([e["event"] for e in a.journal("nuomi")][-1], "baked")
        st = a.app_status("nuomi")
        self.assertEqual(st["health"], "healthy")
        self.assertEqual(self.smtp.messages(), [])
        self.assertEqual(a.stop(), 0)

    def test_after_the_bake_unhealthy_then_healthy_alert_once_each(self):
        flag = os.path.join(self.tmpdir(), "maintenance")
        a = self.start()
        self.assertEqual(self.deploy("1.0.0", {"health_fail_file": flag}).returncode, 0)
        open(flag, "w").close()
        wait_until(lambda: a.alerts("unhealthy"), 15, "the unhealthy alert")
        self.assertEqual(a.app_status("nuomi")["health"], "unhealthy")
        self.assertIn("HTTP 503: maintenance", a.app_status("nuomi")["health_last_failure"])
        os.unlink(flag)
        wait_until(lambda: a.alerts("healthy"), 15, "the healthy alert")
        # Probes went on meanwhile, failing then passing many times: one alert each way.
        self.assertEqual(len(a.alerts("unhealthy")), 1)
        self.assertEqual(len(a.alerts("healthy")), 1)
        self.assertEqual(a.current("nuomi"), [r["id"] for r in self.releases() if r["version"] == "1.0.0"][0],
                         "after its bake an unhealthy release is alerted on, not rolled back")
        self.assertEqual(a.stop(), 0)

    def test_rollback_1_after_a_bad_release_skips_it(self):
        a = self.start(instances=1)
        self.assertEqual(self.deploy("1.0.0").returncode, 0)
        self.assertEqual(self.deploy("2.0.0").returncode, 0)
        two = a.current("nuomi")
        self.assertEqual(self.deploy("3.0.0", {"healthz_500_after_ms": 0}).returncode, 1)
        self.assertEqual(a.current("nuomi"), two)
        r = a.cli("rollback", "1", "nuomi")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(a.current("nuomi").endswith("-1.0.0"), a.current("nuomi"))
        three = [x["id"] for x in self.releases() if x["version"] == "3.0.0"][0]
        r = a.cli("rollback", "nuomi", "--to", three)
        self.assertEqual(r.returncode, 1)
        self.assertIn("failed its bake", r.stderr)
        self.assertEqual(a.stop(), 0)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


if __name__ == "__main__":
    unittest.main(verbosity=2)
