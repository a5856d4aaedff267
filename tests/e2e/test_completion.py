"""The bash completion (scripts/completion/agent), in a real bash: the commands, each one's own
flags, the config's apps (the agent's own parser, via -c or $AGENT_CONFIG) and release ids
after --to and --release (from the store, as `agent releases` reads it)."""
import json
import os
import shlex
import subprocess
import unittest

from harness import AGENT, REPO, AgentTest, free_port


class Completion(AgentTest):
    def complete(self, line, env=None):
        words = line.split(" ")
        script = (f"source {shlex.quote(os.path.join(REPO, 'scripts', 'completion', 'agent'))}\n"
                  f"COMP_WORDS=({' '.join(shlex.quote(w) for w in words)}); COMP_CWORD={len(words) - 1}\n"
                  "_agent; printf '%s\\n' \"${COMPREPLY[@]}\"\n")
        environ = dict(os.environ, PATH=os.path.dirname(AGENT) + ":" + os.environ["PATH"], **(env or {}))
        r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=30, env=environ)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        return sorted(w for w in r.stdout.split("\n") if w)

    def test_commands_flags_apps_and_release_ids(self):
        a = self.agent([{"name": "web", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{free_port()}"]},
                        {"name": "api", "command": ["node", "server.js"], "listen": [f"127.0.0.1:{free_port()}"]}])
        self.assertEqual(self.complete("agent up"), ["upgrade"])
        self.assertEqual(self.complete("agent s"), ["start", "status", "stop", "systemd-socket"])
        self.assertEqual(self.complete("agent logs --s"), ["--since", "--slot", "--stream"])
        self.assertEqual(self.complete("agent deploy --"), ["--config", "--from", "--help", "--no-fleet", "--rev"])
        self.assertEqual(self.complete("agent logs --stream "), ["err", "out"])
        self.assertEqual(self.complete("agent fleet "), ["resume", "status"])
        # The apps, from the config named by -c, or by $AGENT_CONFIG.
        self.assertEqual(self.complete(f"agent -c {a.config} reload "), ["api", "web"])
        self.assertEqual(self.complete("agent stop w", env={"AGENT_CONFIG": a.config}), ["web"])
        # Release ids of the app named on the line.
        a.apps[0]["source"] = a.make_release("1.0.0")
        a.apps[1]["source"] = a.make_release("2.0.0")
        a.write_config()
        a.start()
        r = a.cli("deploy", "web", "--from", a.make_release("1.1.0"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        web = sorted(x["id"] for x in json.loads(a.cli("releases", "web", "--json").stdout)["releases"])
        self.assertEqual(len(web), 2)
        self.assertEqual(self.complete(f"agent -c {a.config} rollback web --to "), web)
        self.assertEqual(self.complete(f"agent -c {a.config} env web --release {web[0][:8]}"), [w for w in web if w.startswith(web[0][:8])])
        self.assertEqual(a.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
