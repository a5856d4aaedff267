"""Metrics and a health endpoint (issue 18): /metrics in the Prometheus text format, read by a
real Prometheus (Debian's `prometheus`, started by the test on a loopback port of its own) and
checked by `promtool check metrics`; /healthz answers 200 only when every app has its
`instances` ready."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.parse
import urllib.request

from harness import AgentTest, free_port, wait_until


def get(port, path):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except (urllib.error.URLError, ConnectionError):  # not listening yet
        return 0, ""


class Metrics(AgentTest):
    def start_prometheus(self, target_port):
        d = tempfile.mkdtemp(prefix="agent-prom-")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        config = os.path.join(d, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: agent\n"
                    f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n")
        port = free_port()
        log = open(os.path.join(d, "prometheus.log"), "w")
        self.addCleanup(log.close)
        p = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={d}/data",
                              f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL)
        self.addCleanup(lambda: (p.terminate(), p.wait(30)))
        wait_until(lambda: get(port, "/-/ready")[0] == 200 if p.poll() is None else True, 30, "prometheus to start")
        self.assertIsNone(p.poll(), "prometheus exited: " + open(os.path.join(d, "prometheus.log")).read()[-2000:])
        return port

    def check_examples(self, text):
        """examples/monitoring: the rules pass promtool, and every deploy_agent_/process_ name the
        rules and the dashboard use is one the agent serves (histograms by their _bucket)."""
        here = os.path.join(os.environ.get("REPO", os.path.join(os.path.dirname(__file__), "../..")), "examples", "monitoring")
        r = subprocess.run(["promtool", "check", "rules", os.path.join(here, "alerts.yml")], capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        served = set(re.findall(r"^# TYPE ([a-z_]+) ", text, re.M))
        served |= {n + suffix for n in served for suffix in ("_bucket", "_sum", "_count")}
        used = set()
        for name in ("alerts.yml", "grafana-dashboard.json"):
            with open(os.path.join(here, name)) as f:
                used |= set(re.findall(r"\b((?:deploy_agent|process)_[a-z_]+)", f.read()))
        self.assertTrue(used)
        self.assertEqual(used - served, set(), "names the examples use that /metrics does not serve")
        with open(os.path.join(here, "grafana-dashboard.json")) as f:
            self.assertGreaterEqual(len(json.load(f)["panels"]), 10)

    def query(self, prom, q):
        code, body = get(prom, "/api/v1/query?query=" + urllib.parse.quote(q))
        self.assertEqual(code, 200, body)
        return json.loads(body)["data"]["result"]

    def test_prometheus_scrapes_the_agent_and_healthz_says_when_an_app_is_down(self):
        mport, port = free_port(), free_port()
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "instances": 2, "listen": [f"127.0.0.1:{port}"],
                         "health": "GET /healthz", "health_interval": "200ms", "bake": "1s"}],
                       metrics_listen=f"127.0.0.1:{mport}")
        a.start(wait_ready=False)
        self.assertEqual(get(mport, "/healthz"), (503, "web: 0 of 2 workers ready\n"))
        check = a.cli("status", "--check")
        self.assertEqual((check.returncode, check.stdout), (2, "DOWN web: 0 of 2 workers ready\n"))
        r = a.cli("deploy", "web", "--from", a.make_release("1.0.0"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(get(mport, "/healthz"), (200, "web: 2 of 2 workers ready\n"))
        check = a.cli("status", "--check")
        self.assertEqual((check.returncode, check.stdout), (0, "OK web: 2 of 2 workers ready\n"))
        code, text = get(mport, "/metrics")
        self.assertEqual(code, 200)
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)
        for line in ('deploy_agent_workers{app="web",state="ready"} 2', 'deploy_agent_instances{app="web"} 2',
                     'deploy_agent_deploys_total{app="web",result="ok"} 1', 'deploy_agent_bakes_total{app="web",result="passed"} 1',
                     'deploy_agent_rollout_duration_seconds_count{app="web"} 1', 'deploy_agent_app_healthy{app="web"} 1'):
            self.assertIn(line + "\n", text)
        self.assertRegex(text, r'deploy_agent_release_info\{app="web",release="\d{8}T\d{6}Z-1\.0\.0",version="1\.0\.0"\} 1\n')
        self.assertRegex(text, r'deploy_agent_worker_resident_memory_bytes\{app="web",slot="1"\} [1-9]\d+\n')
        self.assertRegex(text, r"process_resident_memory_bytes [1-9]\d+\n")
        self.assertNotRegex(text, r'pid="')  # bounded cardinality: no pids in labels
        self.check_examples(text)
        # A real Prometheus reads it back.
        prom = self.start_prometheus(mport)
        ready = wait_until(lambda: self.query(prom, 'deploy_agent_workers{app="web",state="ready"}'), 30, "the first scrape")
        self.assertEqual(ready[0]["value"][1], "2")
        # A failed deploy, an alert: counted.
        self.assertEqual(a.cli("deploy", "web", "--from", a.make_release("1.0.1", {"throw_at_start_from_worker": 0})).returncode, 1)
        wait_until(lambda: [x for x in self.query(prom, 'deploy_agent_deploys_total{app="web",result="failed"}') if x["value"][1] == "1"],
                   30, "the failed deploy in Prometheus")
        wait_until(lambda: self.query(prom, 'deploy_agent_alerts_total{app="web",kind="rollout_failed"}'), 30, "the alert counted")
        # One slot crashing over and over (after its bake): degraded, exit 1, while the other serves.
        flaky = a.make_release("1.0.2", {"per_worker": {"1": {"exit_after_ready_ms": 3000}}})
        self.assertEqual(a.cli("deploy", "web", "--from", flaky).returncode, 0)
        degraded = wait_until(lambda: (lambda c: c if c.returncode == 1 else None)(a.cli("status", "--check")), 30,
                              "status --check to say DEGRADED")
        self.assertEqual(degraded.stdout, "DEGRADED web: 1 of 2 workers ready\n")
        wait_until(lambda: self.query(prom, 'deploy_agent_worker_restarts_total{app="web"} > 0'), 30, "the crash restarts in Prometheus")
        # Stopped: not healthy, and says why. An unknown path: 404.
        self.assertEqual(a.cli("stop", "web").returncode, 0)
        self.assertEqual(get(mport, "/healthz"), (503, "web: stopped\n"))
        check = a.cli("status", "--check")
        self.assertEqual((check.returncode, check.stdout), (2, "DOWN web: stopped\n"))
        self.assertEqual(get(mport, "/nope")[0], 404)
        self.assertEqual(a.stop(), 0)
        check = a.cli("status", "--check")  # the agent itself is gone
        self.assertEqual(check.returncode, 2)
        self.assertTrue(check.stdout.startswith("DOWN: cannot reach the agent"), check.stdout)


if __name__ == "__main__":
    unittest.main()
