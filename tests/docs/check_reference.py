"""docs/reference.md against the binary and the source: every command of `agent --help` has a
section, every flag of `agent COMMAND --help` is in its section (and none is there that the
command does not take), every key the config reader knows is in the key tables (and none that
it does not), every metric family the agent serves is in the metrics table (and none that it
does not serve). A reference that drifts from the program fails the suite."""
import os
import re
import subprocess
import sys

AGENT = os.environ["AGENT"]
REPO = os.environ["REPO"]
problems = []


def run_help(*verb):
    r = subprocess.run([AGENT, *verb, "--help"], capture_output=True, text=True, timeout=10)
    if r.returncode != 0:
        sys.exit(f"agent {' '.join(verb)} --help exited {r.returncode}: {r.stderr}")
    return r.stdout


def subcommands(text):
    """The names listed under "Subcommands:" of a --help text."""
    if "Subcommands:" not in text:
        return []
    block = text.split("Subcommands:", 1)[1]
    names = []
    for line in block.splitlines()[1:]:
        m = re.match(r"^  (\S+)\s{2,}", line)
        if not m:
            break
        names.append(m.group(1))
    return names


def flags(text):
    """The long and short flags under "Options:", without --help and --config (every command
    takes those; the reference says so once)."""
    block = text.split("Options:", 1)[1] if "Options:" in text else ""
    found = set()
    for line in block.splitlines()[1:]:
        m = re.match(r"^  (-\S+?)(?:\s|$)", line)
        if not m:
            if line.strip() == "":
                break
            continue
        for f in m.group(1).split(","):
            found.add(f)
    return found - {"-h", "--help", "-c", "--config"}


with open(os.path.join(REPO, "docs", "reference.md")) as f:
    doc = f.read()


def section(doc, title):
    """The text under the "## title" heading, up to the next "## "."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", doc, re.S | re.M)
    if not m:
        problems.append(f"docs/reference.md has no '## {title}' section")
        return ""
    return m.group(1)


# --- commands ----------------------------------------------------------------------------
commands = section(doc, "Command line")
documented = {}  # verb -> its section's text
for m in re.finditer(r"^### ([^\n]*)\n(.*?)(?=^### |\Z)", commands, re.S | re.M):
    for part in m.group(1).split(", "):
        words = part.split()
        if not words or words[0] != "agent":
            problems.append(f"reference: heading '{m.group(1)}' does not name agent commands")
            continue
        verb = []
        for w in words[1:]:
            if w.startswith("[") or w.isupper():
                break
            verb.append(w)
        documented[" ".join(verb)] = m.group(2)

verbs = []
for v in subcommands(run_help()):
    subs = subcommands(run_help(v))
    verbs += [f"{v} {s}" for s in subs] if subs else [v]
for v in verbs:
    if v not in documented:
        problems.append(f"reference: `agent {v}` has no section")
        continue
    text = documented[v]
    have = flags(run_help(*v.split()))
    for flag in sorted(have):
        if not re.search(rf"`{re.escape(flag)}[ `=]", text):
            problems.append(f"reference: `agent {v}` takes {flag}, its section does not say so")
    for flag in sorted(set(re.findall(r"`(--?[a-z][a-z-]*)", text)) - have):
        problems.append(f"reference: `agent {v}`'s section names {flag}, which it does not take")
for v in sorted(set(documented) - set(verbs)):
    problems.append(f"reference: a section for `agent {v}`, which agent --help does not list")

# --- config keys -------------------------------------------------------------------------
with open(os.path.join(REPO, "agent", "config", "config.cc")) as f:
    reader = f.read()
known = set(re.findall(r"\br\.\w+\(\"([a-z_]+)\"", reader))
for group in re.findall(r"for \(const char\* key : \{([^}]*)\}\)", reader):
    known |= set(re.findall(r"\"([a-z_]+)\"", group))
tables = {"agent", "alerts", "fleet", "app", "env"}  # read as tables; [app.env] is documented as such
known -= tables
if len(known) < 40:
    problems.append(f"check_reference: found only {len(known)} keys in config.cc; has its reader changed shape?")
keys_text = section(doc, "Config keys")
listed = set()
for row in re.findall(r"^\| (`[^|]*`) \|", keys_text, re.M):
    listed |= set(re.findall(r"`([a-z_]+)`", row))
listed -= tables
for key in sorted(known - listed):
    problems.append(f"reference: the config key `{key}` is not in the key tables")
for key in sorted(listed - known):
    problems.append(f"reference: the key tables list `{key}`, which the config reader does not know")
if "`[app.env]`" not in keys_text:
    problems.append("reference: `[app.env]` is not in the key tables")

# --- metrics -----------------------------------------------------------------------------
served = set()
for name in ("daemon_metrics.cc", "metrics.cc"):
    with open(os.path.join(REPO, "agent", "daemon", name)) as f:
        served |= set(re.findall(r"family\(\"([a-z_]+)\"", f.read()))
served_agent = {m for m in served if m.startswith("deploy_agent_")}
if not served_agent or not any(m.startswith("process_") for m in served):
    problems.append("check_reference: no metric families found in agent/daemon; has the code changed shape?")
metrics_text = section(doc, "Metrics")
rows = set(re.findall(r"^\| `(deploy_agent_[a-z_]+)` \|", metrics_text, re.M))
for m in sorted(served_agent - rows):
    problems.append(f"reference: the metric {m} is not in the metrics table")
for m in sorted(rows - served_agent):
    problems.append(f"reference: the metrics table lists {m}, which the agent does not serve")

# --- the man pages: agent(1) names every command and flag, agent.toml(5) every key; both
# render without a warning ---------------------------------------------------------------------
def man_text(name):
    with open(os.path.join(REPO, "docs", "man", name)) as f:
        raw = f.read()
    r = subprocess.run(["groff", "-man", "-ww", "-z", os.path.join(REPO, "docs", "man", name)],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0 or r.stderr.strip():
        problems.append(f"docs/man/{name}: groff -man -ww: {r.stderr.strip() or r.returncode}")
    return re.sub(r"\\f[BIRP]", "", raw).replace("\\-", "-").replace("\\e", "\\")

page1 = man_text("agent.1")
for v in verbs:
    if not re.search(rf"(^|\s|\"){re.escape(v)}(\s|\"|$)", page1, re.M):
        problems.append(f"agent.1 does not name the command `{v}`")
    for flag in flags(run_help(*v.split())):
        if not re.search(rf"{re.escape(flag)}(?![a-z-])", page1):
            problems.append(f"agent.1 does not name {flag} of `{v}`")
page5 = man_text("agent.toml.5")
for key in sorted(known):
    if not re.search(rf"(^|[\s,]){re.escape(key)}([\s,]|$)", page5, re.M):
        problems.append(f"agent.toml.5 does not name the key `{key}`")

# --- examples/monitoring/alerts.yml: a Prometheus rule for each alert the agent raises ---------
with open(os.path.join(REPO, "agent", "alerts", "alerts.h")) as f:
    header = f.read()
kinds_text = header.split("std::string kind;", 1)[1].split("std::string summary;", 1)[0]
kinds = set(re.findall(r"\b([a-z]+_[a-z_]+|unhealthy|healthy)\b", kinds_text)) - {"healthy"}  # healthy: the end of one
with open(os.path.join(REPO, "examples", "monitoring", "alerts.yml")) as f:
    rules = f.read()
if len(kinds) < 8:
    problems.append(f"check_reference: found only {len(kinds)} alert kinds in alerts.h; has it changed shape?")
derived = {"rollout_failed": 'result=~"failed', "deploy_refused": 'result="refused"', "crash_loop": "worker_restarts_total",
           "unhealthy": "deploy_agent_app_healthy == 0", "fleet_unreachable": "deploy_agent_fleet_etcd_unreachable",
           "bake_failed": "bake_failed"}
for kind in sorted(kinds):
    if kind not in rules and derived.get(kind, "\0") not in rules:
        problems.append(f"examples/monitoring/alerts.yml has no rule for the agent's alert {kind}")

# --- the bash completion knows every command and flag ----------------------------------------
with open(os.path.join(REPO, "scripts", "completion", "agent")) as f:
    completion = f.read()
for v in verbs:
    for word in v.split():
        if not re.search(rf"[\s\"]{re.escape(word)}[\s\")]", completion):
            problems.append(f"scripts/completion/agent does not offer `{word}` (of `{v}`)")
    for flag in flags(run_help(*v.split())):
        if not re.search(rf"[\s\"]{re.escape(flag)}[\s\")]", completion):
            problems.append(f"scripts/completion/agent does not offer {flag} of `{v}`")

for p in problems:
    print(p)
print(f"check_reference: {len(verbs)} commands, {len(known)} config keys, {len(served_agent)} metric families; "
      f"{len(problems)} problem(s)")
sys.exit(1 if problems else 0)
