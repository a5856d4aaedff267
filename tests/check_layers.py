"""The layering rule of docs/architecture.md, checked: each folder
includes only itself and the folders listed for it. Fails naming each include that points
up or sideways."""
import os
import re
import sys

ROOT = os.environ.get("REPO") or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Bottom to top; a layer may include itself and what is listed for it.
ALLOWED = {
    "base": [],
    "releases": ["base"],
    "watchers": ["base"],
    "agent/config": ["base"],
    "agent/process": ["base", "agent/config"],
    "agent/health": ["base"],
    "hooks": ["base", "releases", "agent/config", "agent/process"],
    "agent/alerts": ["base", "releases", "agent/config"],
    "agent/fleet": ["base", "agent/config"],
    "agent/rollout": ["base", "releases", "watchers", "agent/config", "agent/process", "agent/health", "hooks",
                      "agent/alerts", "agent/fleet"],
    "agent/daemon": ["base", "releases", "watchers", "agent/config", "agent/process", "agent/health", "hooks",
                     "agent/alerts", "agent/fleet", "agent/rollout"],
    "agent/cli": ["base", "releases", "watchers", "agent/config", "agent/process", "agent/health", "hooks",
                  "agent/alerts", "agent/fleet", "agent/rollout", "agent/daemon"],
    "agent": ["agent/cli"],  # main.cc
}


def layer_of(path):
    best = None
    for layer in ALLOWED:
        if path.startswith(layer + "/") and (best is None or len(layer) > len(best)):
            best = layer
    return best


def main():
    bad, checked = [], 0
    for layer in ALLOWED:
        for dirpath, _, files in os.walk(os.path.join(ROOT, layer)):
            for name in files:
                if not re.search(r"\.(h|cc)$", name):
                    continue
                rel = os.path.relpath(os.path.join(dirpath, name), ROOT)
                if layer_of(rel) != layer:
                    continue
                checked += 1
                with open(os.path.join(ROOT, rel)) as f:
                    for n, line in enumerate(f, 1):
                        m = re.match(r'\s*#include "([^"]+)"', line)
                        if not m:
                            continue
                        target = layer_of(m.group(1))
                        if target and target != layer and target not in ALLOWED[layer]:
                            bad.append(f"{rel}:{n}: {layer}/ may not include {m.group(1)} ({target}/ is above or beside it)")
    for b in bad:
        print(b)
    print(f"{checked} files checked, {len(bad)} includes against the layering")
    return 1 if bad or checked < 30 else 0


if __name__ == "__main__":
    sys.exit(main())
