// `agent logs [APP] [-n N] [-f] [--since D] [--stream out|err] [--slot N]`: the workers' output,
// read from the files the daemon writes (log_reader.h). Needs no daemon, and a config with a
// semantic error still names the apps and the log folder.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>

#include "agent/cli/log_reader.h"
#include "agent/cli/verbs.h"
#include "releases/version.h"

namespace agent {

int cmd_logs(const Args& a) {
  Config cfg;
  if (!load_for_client(a, &cfg)) return 1;
  std::map<std::string, std::string> paths;  // app -> its app.log
  if (!a.positional.empty()) {
    const AppConfig* app = pick_app(cfg, a, 0);
    if (!app) return 1;
    paths[app->name] = cfg.agent.log_dir + "/" + app->name + "/app.log";
  } else {
    for (const auto& app : cfg.apps) paths[app.name] = cfg.agent.log_dir + "/" + app.name + "/app.log";
  }
  if (paths.empty()) return std::fprintf(stderr, "agent: %s has no apps\n", cfg.path.c_str()), 1;

  LogFilter filter;
  filter.stream = a.stream;
  filter.slot = a.slot;
  if (a.since_s) {
    auto from = std::chrono::system_clock::now() - std::chrono::seconds(*a.since_s);
    std::string t = releases::iso_time(std::chrono::system_clock::to_time_t(from));
    filter.since = t.insert(t.size() - 1, ".000");
  }
  size_t n = a.lines ? static_cast<size_t>(*a.lines) : a.since_s ? SIZE_MAX : 50;
  bool prefix = paths.size() > 1;
  std::map<std::string, std::vector<LogLine>> tails;
  std::map<std::string, LogPosition> ends;
  for (const auto& [app, path] : paths) tails[app] = tail_logs(path, n, filter, &ends[app]);
  for (const auto& line : merge_logs(tails, n, prefix)) std::printf("%s\n", line.c_str());
  std::fflush(stdout);
  if (!a.follow) return 0;

  size_t width = 0;
  for (const auto& [app, _] : paths) width = std::max(width, app.size());
  std::map<std::string, std::string> last_time;  // per app, for lines without a time of their own
  LogFilter live = filter;
  live.since.clear();  // everything new is newer
  std::string err;
  bool ok = follow_logs(paths, ends, [&](const std::string& app, std::string_view line) {
    std::string_view t = line_time(line);
    if (!t.empty()) last_time[app] = t;
    if (!line_matches(line, last_time[app], live)) return;
    if (prefix) std::printf("%s%s | ", app.c_str(), std::string(width - app.size(), ' ').c_str());
    std::fwrite(line.data(), 1, line.size(), stdout);
    std::fputc('\n', stdout);
    std::fflush(stdout);
  }, [] { return false; }, &err);
  if (!ok) std::fprintf(stderr, "agent: %s\n", err.c_str());
  return ok ? 0 : 1;
}

}  // namespace agent
