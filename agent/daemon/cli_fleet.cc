// `agent fleet status [APP] [--json]` and `agent fleet resume APP VERSION` (README "Fleets"):
// both ask the daemon, which reads and writes etcd from its fleet thread.
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/daemon/cli.h"
#include "agent/daemon/control.h"

namespace agent {

namespace {

using json = nlohmann::json;

int fleet_usage(const std::string& msg) {
  std::fprintf(stderr, "agent: %s\n(see agent fleet --help)\n", msg.c_str());
  return 2;
}

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

const char* const kFleetHelp =
    "Usage: agent fleet status [APP] [--json] [-c FILE]\n"
    "       agent fleet resume APP VERSION [-c FILE]\n\n"
    "The hosts of this agent's [fleet] roll a new version of an app with fleet_waves a wave at a time,\n"
    "coordinated through etcd (README \"Fleets\").\n\n"
    "status   each host (alive or not), the version it runs, and its state for the newest version of\n"
    "         each app: waiting, rolling, baking, done, failed, halted; the open wave, and a halt with\n"
    "         the host and reason. Exit 1 when etcd cannot be read.\n"
    "resume   lifts the halt a failed host put on APP VERSION: the hosts that gave up on it, and the\n"
    "         one that failed it, deploy it again, wave by wave. Same authorisation as deploy.\n";

int run_fleet_cli(const std::string& socket, const std::vector<std::string>& args, bool as_json) {
  if (args.empty()) return fleet_usage("fleet takes status or resume");
  json req;
  if (args[0] == "status") {
    if (args.size() > 2) return fleet_usage("fleet status takes one APP");
    req = {{"verb", "fleet-status"}};
    if (args.size() == 2) req["app"] = args[1];
  } else if (args[0] == "resume") {
    if (args.size() != 3) return fleet_usage("fleet resume takes APP VERSION");
    if (as_json) return fleet_usage("--json is for fleet status");
    req = {{"verb", "fleet-resume"}, {"app", args[1]}, {"version", args[2]}};
  } else {
    return fleet_usage("unknown fleet command '" + args[0] + "' (status or resume)");
  }
  bool ok = false;
  std::string message, err;
  json data;
  if (!call_daemon(socket, req, [&](const json& j) {
        if (j.contains("progress")) return;
        ok = j.value("ok", false);
        message = j.value("message", "");
        data = j.value("data", json());
      }, &err))
    return std::fprintf(stderr, "agent: %s\n", err.c_str()), 1;
  if (!ok) return std::fprintf(stderr, "agent: %s\n", message.c_str()), 1;
  if (args[0] == "resume") return std::printf("%s\n", message.c_str()), 0;
  if (as_json) return std::printf("%s\n", data.dump(2, ' ', false, json::error_handler_t::replace).c_str()), 0;
  print_status(data);
  return 0;
}

}  // namespace agent
