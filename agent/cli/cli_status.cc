// `agent status` and `agent status --check`: what the daemon says runs.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "agent/cli/cli.h"
#include "agent/cli/verbs.h"
#include "agent/daemon/control.h"

namespace agent {
namespace {

std::string human_size(std::uint64_t b) {
  char buf[32];
  if (b >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.1fG", static_cast<double>(b) / (1ull << 30));
  else if (b >= (1ull << 20)) std::snprintf(buf, sizeof buf, "%.0fM", static_cast<double>(b) / (1ull << 20));
  else std::snprintf(buf, sizeof buf, "%lluK", static_cast<unsigned long long>(b >> 10));
  return buf;
}

std::string human_uptime(long s) {
  if (s < 60) return std::to_string(s) + "s";
  if (s < 3600) return std::to_string(s / 60) + "m" + std::to_string(s % 60) + "s";
  if (s < 86400) return std::to_string(s / 3600) + "h" + std::to_string(s % 3600 / 60) + "m";
  return std::to_string(s / 86400) + "d" + std::to_string(s % 86400 / 3600) + "h";
}

}  // namespace

int cmd_status(const Args& a) {
  Config cfg;
  bool check = a.check;
  // A check that cannot even read its config cannot tell: Nagios's UNKNOWN (3), said on stdout.
  if (!load_for_client(a, &cfg)) return check ? (std::printf("UNKNOWN: cannot read the config %s\n", a.config.c_str()), 3) : 1;
  nlohmann::json data;
  std::string err;
  bool answered = daemon_status(cfg, a.positional.empty() ? "" : a.positional[0], &data, &err);
  if (check) {
    if (!answered) return std::printf("DOWN: %s\n", err.c_str()), 2;
    std::string report;
    int rc = status_check(data, &report);
    std::fputs(report.c_str(), stdout);
    return rc;
  }
  if (!answered) return std::fprintf(stderr, "agent: %s\n", err.c_str()), 1;
  if (a.json) return print_json(data), 0;
  bool first = true;
  for (const auto& app : data["apps"]) {
    if (!first) std::printf("\n");
    first = false;
    std::string cur = app["current"].is_null() ? "(nothing deployed)" : app["current"].get<std::string>();
    int ready = 0;
    for (const auto& w : app["workers"]) ready += w.value("role", "") == "serving" && w.value("state", "") == "ready";
    std::printf("%s: %s, %d/%d ready, current %s", app["app"].get<std::string>().c_str(), app["state"].get<std::string>().c_str(), ready,
                app.value("instances", 0), cur.c_str());
    if (!app["version"].get<std::string>().empty()) std::printf(" (version %s)", app["version"].get<std::string>().c_str());
    if (!app["operation"].get<std::string>().empty()) std::printf(", %s in progress", app["operation"].get<std::string>().c_str());
    if (!app.value("progress", "").empty()) std::printf(" (%s)", app["progress"].get<std::string>().c_str());
    if (app.contains("fleet_waiting"))
      std::printf(", %s (version %s) waiting for a fleet slot", app["fleet_waiting"].get<std::string>().c_str(),
                  app["fleet_waiting_version"].get<std::string>().c_str());
    if (app.contains("health")) std::printf(", %s", app["health"].get<std::string>().c_str());
    if (app.contains("bake_left_s")) std::printf(", baking %s: %llds left", app["baking"].get<std::string>().c_str(), app["bake_left_s"].get<long long>());
    std::printf("\n");
    if (app.value("health", "") == "unhealthy" && app.contains("health_last_failure"))
      std::printf("  last failed probe: %s\n", app["health_last_failure"].get<std::string>().c_str());
    std::vector<std::vector<std::string>> rows = {{"  SLOT", "PID", "RELEASE", "STATE", "ROLE", "UPTIME", "CPU", "RSS", "RESTARTS", "LAST EXIT"}};
    std::vector<nlohmann::json> workers(app["workers"].begin(), app["workers"].end());
    std::stable_sort(workers.begin(), workers.end(), [](const nlohmann::json& x, const nlohmann::json& y) {
      return std::pair(x.value("slot", 0), x.value("role", "") != "serving") < std::pair(y.value("slot", 0), y.value("role", "") != "serving");
    });
    for (const auto& w : workers) {
      char cpu[16] = "-";
      if (w.contains("cpu_percent")) std::snprintf(cpu, sizeof cpu, "%.1f%%", w["cpu_percent"].get<double>());
      rows.push_back({"  " + std::to_string(w["slot"].get<int>()), std::to_string(w["pid"].get<int>()), w["release"].get<std::string>(),
                      w["state"].get<std::string>(), w["role"].get<std::string>(), human_uptime(w["uptime_s"].get<long>()), cpu,
                      human_size(w["rss"].get<std::uint64_t>()), std::to_string(w["restarts"].get<int>()), w.value("last_exit", "-")});
    }
    if (rows.size() > 1) print_table(rows);
    else std::printf("  no workers\n");
  }
  return 0;
}

int status_check(const nlohmann::json& status, std::string* report) {
  int rc = 0;
  for (const auto& app : status.value("apps", nlohmann::json::array())) {
    std::string name = app.value("app", "?");
    int want = app.value("instances", 0), ready = 0;
    for (const auto& w : app.value("workers", nlohmann::json::array()))
      ready += w.value("role", "") == "serving" && w.value("state", "") == "ready";
    std::string word = "OK";
    std::string line = name + ": " + std::to_string(ready) + " of " + std::to_string(want) + " workers ready";
    if (app.value("state", "") == "stopped") word = "DOWN", line = name + ": stopped", rc = 2;
    else if (ready == 0 && want > 0) word = "DOWN", rc = 2;
    else if (ready < want) word = "DEGRADED", rc = std::max(rc, 1);
    *report += word + " " + line + "\n";
  }
  return rc;
}

}  // namespace agent
