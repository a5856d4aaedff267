"""Alerts by email and webhook, against a real SMTP server (Debian's python3-aiosmtpd) and a
real HTTP listener on loopback: a stalled drain mails once and the kill adds its own mail, an
unreachable SMTP server neither blocks a rollout nor loses the mail when it comes back,
repeats are folded, a failed rollout and a crash loop mail, and the SMTP password appears
nowhere."""
import email
import email.policy
import http.server
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from harness import AgentTest, free_port, wait_until

HOST = socket.gethostname()
DEBIAN_PYTHON = "/usr/bin/python3"  # where Debian's python3-aiosmtpd is installed
SINK = os.path.join(os.path.dirname(os.path.abspath(__file__)), "smtp_sink.py")


class Smtp:
    """tests/e2e/smtp_sink.py on a loopback port; messages() parses what it received."""

    def __init__(self, port, directory, *args):
        self.port, self.dir = port, directory
        os.makedirs(directory, exist_ok=True)
        self.proc = subprocess.Popen([DEBIAN_PYTHON, SINK, str(port), directory, *args], stdin=subprocess.DEVNULL)
        wait_until(lambda: self.proc.poll() is not None or os.path.exists(os.path.join(directory, ".ready")), 15,
                   "the SMTP server to start")
        assert self.proc.poll() is None, "smtp_sink.py exited: is python3-aiosmtpd installed (scripts/setup.sh)?"

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)

    def records(self):
        out = []
        for name in sorted((n for n in os.listdir(self.dir) if n.endswith(".json") and not n.startswith(".")),
                           key=lambda n: int(n.split(".")[0])):
            path = os.path.join(self.dir, name)
            with open(path) as f:
                r = json.load(f)
            r["received"] = os.stat(path).st_mtime
            r["message"] = email.message_from_string(r["data"], policy=email.policy.default)
            out.append(r)
        return out

    def messages(self, kind=None):
        return [r for r in self.records() if kind is None or r["message"]["X-Agent-Alert"] == kind]


class Webhook:
    """An HTTP listener on loopback that keeps every JSON body POSTed to it."""

    def __init__(self, fail_first=0):
        self.bodies = []
        self.fail_first = fail_first
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length", 0))
                hook.bodies.append((self.headers.get("Content-Type"), json.loads(self.rfile.read(n))))
                self.send_response(500 if len(hook.bodies) <= hook.fail_first else 204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class Alerting(AgentTest):
    def tmpdir(self):
        d = tempfile.mkdtemp(prefix="agent-alerts-")
        self.addCleanup(shutil.rmtree, d, ignore_errors=True)
        return d

    def start_agent(self, smtp_port, instances=1, alerts=None, **app):
        self.port = free_port()
        settings = {"email_to": ["ops@example.com", "Second Admin <two@example.com>"], "email_from": "agent@example.com",
                    "smtp_url": f"smtp://127.0.0.1:{smtp_port}"}
        settings.update(alerts or {})
        spec = {"name": "nuomi", "command": ["node", "server.js"], "instances": instances,
                "listen": [f"127.0.0.1:{self.port}"], "ready_timeout": "10s"}
        spec.update(app)
        self.a = self.agent([spec])
        self.a.alerts_settings = settings
        self.write_alerts_config()
        self.a.start(wait_ready=False)
        return self.a

    def write_alerts_config(self):
        self.a.write_config()
        lines = ["", "[alerts]"] + [f"{k} = {json.dumps(v)}" for k, v in self.a.alerts_settings.items()]
        with open(self.a.config) as f:
            text = f.read()
        # [alerts] must come before the [[app]] tables.
        head, sep, rest = text.partition("\n[[app]]")
        with open(self.a.config, "w") as f:
            f.write(head + "\n".join(lines) + "\n" + sep + rest)

    def deploy(self, version, knobs=None):
        return self.a.cli("deploy", "nuomi", "--from", self.a.make_release(version, knobs))


class Email(Alerting):
    def setUp(self):
        super().setUp()
        self.smtp = Smtp(free_port(), os.path.join(self.tmpdir(), "mail"))
        self.addCleanup(self.smtp.stop)

    def test_a_stalled_drain_mails_once_and_the_kill_adds_its_mail(self):
        a = self.start_agent(self.smtp.port, drain_timeout="2s", kill_timeout="4s")
        self.assertEqual(self.deploy("1.0.0", {"ignore_term": True}).returncode, 0)
        stuck = a.serving("nuomi")[0]
        t0 = time.time()
        self.assertEqual(self.deploy("1.0.1").returncode, 0)
        killed = wait_until(lambda: self.smtp.messages("worker_killed"), 15, "the worker_killed mail")
        stalled = self.smtp.messages("drain_stalled")
        self.assertEqual(len(stalled), 1, [m["message"]["Subject"] for m in self.smtp.records()])
        m = stalled[0]
        alert = a.alerts("drain_stalled")[0]
        # Within 2 s of the deadline (the alert itself is at drain_timeout; test_drain checks that).
        self.assertLess(m["received"] - alert["time_ms"] / 1000, 2.0)
        self.assertLess(m["received"] - t0, 2.0 + 2.0 + 1.0)
        msg = m["message"]
        subject = msg["Subject"]
        self.assertEqual(subject, f"[agent] {HOST} nuomi: drain of worker 0 (pid {stuck['pid']}, release {stuck['release']}) "
                                  "stalled 2s")
        for header in ("Date", "Message-ID", "From", "To", "Subject"):
            self.assertTrue(msg[header], f"{header} missing")
        self.assertEqual(msg["From"], "agent@example.com")
        self.assertEqual(m["mail_from"], "agent@example.com")
        self.assertEqual(sorted(m["rcpt_tos"]), ["ops@example.com", "two@example.com"])
        body = msg.get_content()
        self.assertIn(f"Worker pid:    {stuck['pid']}", body)
        self.assertIn(f"Release:       {stuck['release']}", body)
        self.assertIn(f"Host:          {HOST}", body)
        self.assertRegex(body, r"What next: .*SIGKILL at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ, 4s after the drain began")
        self.assertIn("agent status nuomi", body)
        self.assertIn(f"pid {stuck['pid']}", killed[0]["message"]["Subject"])
        self.assertNotEqual(msg["Message-ID"], killed[0]["message"]["Message-ID"])

    def test_a_failed_rollout_and_a_crash_loop_each_mail(self):
        a = self.start_agent(self.smtp.port)
        self.assertEqual(self.deploy("1.0.0").returncode, 0)
        r = self.deploy("1.0.1", {"throw_at_start_from_worker": 0})
        self.assertEqual(r.returncode, 1)
        m = wait_until(lambda: self.smtp.messages("rollout_failed"), 10, "the rollout_failed mail")[0]
        self.assertIn("nuomi", m["message"]["Subject"])
        self.assertIn("broken for worker 0", m["message"].get_content())
        # A release whose worker dies 50 ms after each start: five in a row is a crash loop.
        self.assertEqual(self.deploy("1.0.2", {"exit_after_ready_ms": 300}).returncode, 0)
        m = wait_until(lambda: self.smtp.messages("crash_loop"), 30, "the crash_loop mail")[0]
        self.assertIn("crashed 5 times in a row", m["message"]["Subject"])

    def test_repeats_are_folded_into_the_next_message_with_a_count(self):
        a = self.start_agent(self.smtp.port, instances=3, drain_timeout="1s", kill_timeout="8s",
                             alerts={"min_interval": "3s"})
        self.assertEqual(self.deploy("1.0.0", {"ignore_term": True}).returncode, 0)
        self.assertEqual(self.a.cli("reload", "nuomi").returncode, 0)  # three stuck drains
        wait_until(lambda: len(a.alerts("drain_stalled")) == 3, 10, "three drain_stalled alerts")
        mails = wait_until(lambda: len(self.smtp.messages("drain_stalled")) >= 2 and self.smtp.messages("drain_stalled"), 10,
                           "the folded mail")
        first, folded = mails[0]["message"], mails[1]["message"]
        self.assertNotIn("more]", first["Subject"])
        self.assertIn("[+1 more]", folded["Subject"])
        self.assertIn("1 more drain_stalled alert for nuomi since", folded.get_content())
        self.assertGreaterEqual(mails[1]["received"] - mails[0]["received"], 2.5)
        time.sleep(0.5)  # nothing else is coming: three alerts, two mails
        self.assertEqual(len(self.smtp.messages("drain_stalled")), 2)


class Delivery(Alerting):
    def test_an_unreachable_smtp_server_blocks_nothing_and_gets_the_mail_when_back(self):
        port = free_port()  # nothing listens yet
        a = self.start_agent(port, alerts={"retry_for": "60s"})
        self.assertEqual(self.deploy("1.0.0").returncode, 0)
        t0 = time.monotonic()
        r = self.deploy("1.0.1", {"throw_at_start_from_worker": 0})
        self.assertEqual(r.returncode, 1)
        self.assertLess(time.monotonic() - t0, 10, "the rollout waited on the mail")
        wait_until(lambda: "delivery failed" in a.output(), 10, "the failed delivery to be logged")
        self.assertEqual(self.a.app_status("nuomi")["workers"][0]["state"], "ready")
        smtp = Smtp(port, os.path.join(a.dir, "mail"))
        self.addCleanup(smtp.stop)
        m = wait_until(lambda: smtp.messages("rollout_failed"), 40, "the mail once the server is back")
        self.assertIn("nuomi", m[0]["message"]["Subject"])
        wait_until(lambda: "alert delivered: email for nuomi [rollout_failed]" in a.output(), 5, "the delivery log line")

    def test_a_delivery_that_keeps_failing_gives_up_with_one_line(self):
        a = self.start_agent(free_port(), alerts={"retry_for": "2s"})
        self.assertEqual(self.deploy("1.0.0").returncode, 0)
        self.assertEqual(self.deploy("1.0.1", {"throw_at_start_from_worker": 0}).returncode, 1)
        wait_until(lambda: "not delivered after" in a.output(), 15, "the give-up line")
        self.assertEqual(a.output().count("not delivered after"), 1)
        self.assertEqual(a.cli("status", "nuomi").returncode, 0)

    def test_the_webhook_gets_the_event_as_json(self):
        hook = Webhook(fail_first=1)  # an error answer is a failed delivery: retried, same id
        self.addCleanup(hook.stop)
        a = self.start_agent(free_port(), alerts={"email_to": [], "webhook_url": f"http://127.0.0.1:{hook.port}/alerts"})
        self.assertEqual(self.deploy("1.0.0").returncode, 0)
        self.assertEqual(self.deploy("1.0.1", {"throw_at_start_from_worker": 0}).returncode, 1)
        bodies = wait_until(lambda: len(hook.bodies) >= 2 and hook.bodies, 10, "the webhook POST and its retry")
        ctype, body = bodies[1]
        self.assertEqual(body["id"], bodies[0][1]["id"])
        self.assertIn("answered HTTP 500", a.output())
        self.assertIn(f"webhook http://127.0.0.1:{hook.port}/...: answered HTTP 500", a.output())
        self.assertNotIn(f"127.0.0.1:{hook.port}/alerts", a.output())  # a token in the path stays out of the log
        self.assertEqual(ctype, "application/json")
        self.assertEqual((body["kind"], body["app"], body["host"]), ("rollout_failed", "nuomi", HOST))
        self.assertTrue(body["release"].endswith("-1.0.1"))
        self.assertIn("broken for worker 0", body["summary"] + body["detail"])

    def test_the_password_is_never_sent_in_clear_nor_shown_anywhere(self):
        secret = "s3cr3t-Pa55-do-not-print"
        d = self.tmpdir()
        # A server that offers AUTH but no STARTTLS: the agent refuses to send the password.
        smtp = Smtp(free_port(), os.path.join(d, "mail"), "--auth", f"alerts:{secret}")
        self.addCleanup(smtp.stop)
        pwfile = os.path.join(d, "smtp-password")
        with open(pwfile, "w") as f:
            f.write(secret + "\n")
        a = self.start_agent(smtp.port, alerts={"smtp_user": "alerts", "smtp_password_file": pwfile, "retry_for": "1s"})
        self.assertEqual(self.deploy("1.0.0").returncode, 0)
        self.assertEqual(self.deploy("1.0.1", {"throw_at_start_from_worker": 0}).returncode, 1)
        wait_until(lambda: "not delivered after" in a.output(), 15, "the refused delivery to be given up")
        self.assertEqual(smtp.records(), [])
        seen = [a.output()]
        for args in (("status", "--json"), ("env", "nuomi"), ("check",), ("releases", "nuomi")):
            r = a.cli(*args)
            seen += [r.stdout, r.stderr]
        for root, _, files in os.walk(a.dir):
            for name in files:
                if root.startswith(os.path.join(a.dir, "src-")):
                    continue
                try:
                    with open(os.path.join(root, name), errors="replace") as f:
                        seen.append(f.read())
                except OSError:
                    pass
        for text in seen:
            self.assertNotIn(secret, text)

    def test_starttls_with_auth(self):
        d = self.tmpdir()
        cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        secret = "an0ther-s3cret"
        smtp = Smtp(free_port(), os.path.join(d, "mail"), "--starttls", cert, key, "--auth", f"alerts:{secret}")
        self.addCleanup(smtp.stop)
        pwfile = os.path.join(d, "smtp-password")
        with open(pwfile, "w") as f:
            f.write(secret + "\n")
        a = self.start_agent(smtp.port, alerts={"tls_ca_file": cert, "smtp_user": "alerts", "smtp_password_file": pwfile})
        self.assertEqual(self.deploy("1.0.0").returncode, 0)
        self.assertEqual(self.deploy("1.0.1", {"throw_at_start_from_worker": 0}).returncode, 1)
        m = wait_until(lambda: smtp.messages("rollout_failed"), 10, "the mail over STARTTLS")[0]
        self.assertTrue(m["tls"])
        self.assertTrue(m["authenticated"])
        self.assertNotIn(secret, a.output())


if __name__ == "__main__":
    unittest.main(verbosity=2)
