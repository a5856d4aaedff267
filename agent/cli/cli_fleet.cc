// `agent fleet status [APP] [--json]` and `agent fleet resume APP VERSION` (docs/operating.md "Fleets"):
// both ask the daemon, which reads and writes etcd from its fleet thread.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/cli/cli.h"
#include "agent/cli/verbs.h"
#include "agent/daemon/control.h"

namespace agent {

namespace {

using json = nlohmann::json;

void print_status(const json& d) {
  std::printf("fleet %s, seen from %s (etcd %s)\n", d.value("fleet", "").c_str(), d.value("host", "").c_str(), d.value("etcd", "").c_str());
  if (d["apps"].empty()) std::printf("  no version of any app has gone through the fleet yet\n");
  for (const auto& a : d["apps"]) {
    std::printf("\n%s %s: wave %d of %d open (waves %s), %d host%s at a time\n", a.value("app", "").c_str(), a.value("version", "").c_str(),
                a.value("open_wave", 0), a.value("waves_total", 0), a.value("waves", "").c_str(), a.value("capacity", 0),
                a.value("capacity", 0) == 1 ? "" : "s");
    if (!a["halt"].is_null())
      std::printf("  HALTED by %s at %s: %s\n  (agent fleet resume %s %s lifts it)\n", a["halt"].value("host", "").c_str(),
                  a["halt"].value("time", "").c_str(), a["halt"].value("reason", "").c_str(), a.value("app", "").c_str(),
                  a.value("version", "").c_str());
    std::vector<std::vector<std::string>> rows = {{"  HOST", "ALIVE", "CURRENT", "STATE", "REASON"}};
    for (const auto& h : a["hosts"])
      rows.push_back({"  " + h.value("host", ""), h.value("alive", false) ? "yes" : "no", h.value("current", "").empty() ? "-" : h.value("current", ""),
                      h.value("state", ""), h.value("reason", "")});
    print_table(rows);
  }
  bool any = false;
  for (const auto& h : d["hosts"]) any |= !h.value("alive", false);
  if (any) {
    std::printf("\nnot alive (no agent holds its lease):");
    for (const auto& h : d["hosts"])
      if (!h.value("alive", false)) std::printf(" %s", h.value("host", "").c_str());
    std::printf("\n");
  }
}

}  // namespace

int cmd_fleet(const Args& a) {
  Config cfg;
  if (!load_for_client(a, &cfg)) return 1;
  bool resume = a.verb == "fleet resume";
  json req = {{"verb", "fleet-status"}};
  if (resume) req = {{"verb", "fleet-resume"}, {"app", a.positional.at(0)}, {"version", a.positional.at(1)}};
  else if (!a.positional.empty()) req["app"] = a.positional[0];
  bool ok = false;
  std::string message, err;
  json data;
  if (!call_daemon(cfg.agent.control_socket, req, [&](const json& j) {
        if (j.contains("progress")) return;
        ok = j.value("ok", false);
        message = j.value("message", "");
        data = j.value("data", json());
      }, &err))
    return std::fprintf(stderr, "agent: %s\n", err.c_str()), 1;
  if (!ok) return std::fprintf(stderr, "agent: %s\n", message.c_str()), 1;
  if (resume) return std::printf("%s\n", message.c_str()), 0;
  if (a.json) return print_json(data), 0;
  print_status(data);
  return 0;
}

}  // namespace agent
