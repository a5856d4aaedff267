// `agent releases`: the releases on disk and the deploys refused before staging, from each app's
// release store and journal (releases/). Needs no daemon.
#include <cstdio>
#include <string>
#include <vector>

#include "agent/cli/cli.h"
#include "agent/cli/verbs.h"
#include "releases/store.h"

namespace agent {
namespace {

nlohmann::json release_json(const releases::ReleaseInfo& r) {
  return {{"id", r.id.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.id)}, {"version", r.version}, {"source", r.source}, {"revision", r.revision},
          {"state", releases::state_name(r.state)}, {"current", r.current}, {r.id.empty() ? "refused_at" : "staged_at", r.time},
          {"reason", r.reason}};
}

}  // namespace

int cmd_releases(const Args& a) {
  Config cfg;
  if (!load(a, &cfg)) return 1;
  std::vector<const AppConfig*> apps;
  if (!a.positional.empty()) {
    const AppConfig* app = pick_app(cfg, a, 0);
    if (!app) return 1;
    apps.push_back(app);
  } else {
    for (const auto& app : cfg.apps) apps.push_back(&app);
  }
  nlohmann::json out = nlohmann::json::array();
  int rc = 0;
  for (const AppConfig* app : apps) {
    releases::ReleaseStore store(app->app_dir(cfg.agent));
    std::vector<releases::ReleaseInfo> list;
    std::vector<std::string> warnings;
    std::string err;
    if (!store.list(&list, &warnings, &err)) {
      std::fprintf(stderr, "agent: app %s: %s\n", app->name.c_str(), err.c_str());
      rc = 1;
      continue;
    }
    for (const auto& w : warnings) std::fprintf(stderr, "agent: warning: %s\n", w.c_str());
    if (a.json) {
      nlohmann::json rel = nlohmann::json::array();
      for (const auto& r : list) rel.push_back(release_json(r));
      out.push_back({{"app", app->name}, {"releases", rel}});
      continue;
    }
    if (apps.size() > 1) std::printf("%s%s:\n", app == apps.front() ? "" : "\n", app->name.c_str());
    if (list.empty()) {
      std::printf("  no releases yet in %s\n", store.releases_dir().c_str());
      continue;
    }
    std::vector<std::vector<std::string>> rows = {{"", "STAGED", "ID", "VERSION", "SOURCE", "STATE", "NOTE"}};
    for (const auto& r : list) {
      bool why = r.state == releases::ReleaseState::Failed || r.state == releases::ReleaseState::RolledBack ||
                 r.state == releases::ReleaseState::Bad ||
                 r.state == releases::ReleaseState::Refused;
      std::string when = r.time.empty() ? "-" : r.time.substr(0, 19);
      if (when.size() > 10) when[10] = ' ';
      rows.push_back({r.current ? "*" : " ", when, r.id.empty() ? "(refused)" : r.id, r.version.empty() ? "-" : r.version,
                      r.source, releases::state_name(r.state), why ? r.reason : ""});
    }
    print_table(rows);
  }
  if (a.json) print_json(a.positional.empty() ? out : out[0]);
  return rc;
}

}  // namespace agent
