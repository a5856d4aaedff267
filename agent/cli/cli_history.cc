// `agent history [APP] [--since D] [--json]`: every operation the agent did, from
// <log_dir>/history.jsonl (releases/history.h). Needs no daemon.
#include <pwd.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "agent/cli/cli.h"
#include "agent/cli/verbs.h"
#include "base/units.h"
#include "releases/history.h"
#include "releases/version.h"

namespace agent {
namespace {

std::string who(long uid) {
  if (uid < 0) return "agent";
  if (const passwd* pw = ::getpwuid(static_cast<uid_t>(uid))) return pw->pw_name;
  return "uid " + std::to_string(uid);
}

std::string took(double seconds) {
  if (seconds < 0) return "-";
  return base::format_duration(base::Millis(static_cast<long>(seconds * 1000 + 0.5)));
}

}  // namespace

int cmd_history(const Args& a) {
  Config cfg;
  if (!load_for_client(a, &cfg)) return 1;
  std::string app;
  if (!a.positional.empty()) {
    const AppConfig* named = pick_app(cfg, a, 0);
    if (!named) return 1;
    app = named->name;
  }
  std::string since;
  if (a.since_s) {
    since = releases::iso_time(std::chrono::system_clock::to_time_t(std::chrono::system_clock::now() - std::chrono::seconds(*a.since_s)));
    since.insert(since.size() - 1, ".000");
  }
  std::vector<std::string> warnings;
  const std::string path = cfg.agent.log_dir + "/history.jsonl";
  auto entries = releases::read_history(path, since, &warnings);
  for (const auto& w : warnings) std::fprintf(stderr, "agent: warning: %s\n", w.c_str());
  std::erase_if(entries, [&](const releases::HistoryEntry& e) { return !app.empty() && e.app != app; });
  if (a.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& e : entries) {
      out.push_back(nlohmann::json::parse(releases::history_line(e)));
      out.back()["user"] = who(e.uid);
    }
    print_json(out);
    return 0;
  }
  if (entries.empty()) {
    std::printf("nothing in %s%s\n", path.c_str(), since.empty() ? "" : (" since " + since).c_str());
    return 0;
  }
  std::vector<std::vector<std::string>> rows = {{"TIME", "APP", "OP", "RESULT", "WHO", "VIA", "TOOK", "DETAIL"}};
  for (const auto& e : entries) {
    std::string time = e.time.substr(0, 19);
    if (time.size() > 10) time[10] = ' ';
    rows.push_back({time, e.app.empty() ? "-" : e.app, e.op, e.ok ? "ok" : "failed", who(e.uid), e.source.empty() ? "-" : e.source,
                    took(e.seconds), e.detail});
  }
  print_table(rows);
  return 0;
}

}  // namespace agent
