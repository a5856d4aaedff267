// The `agent` command line (cli.h): parse (args.cc), then one verb (cli_*.cc). What the verbs
// share lives here: loading the config, choosing the app, asking the daemon, printing tables.
#include "agent/cli/cli.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <future>
#include <spdlog/spdlog.h>

#include "agent/cli/verbs.h"
#include "agent/daemon/control.h"
#include "agent/daemon/daemon.h"

namespace agent {

int usage_error(const std::string& msg) {
  std::fprintf(stderr, "agent: %s\n(see agent --help)\n", msg.c_str());
  return 2;
}

bool load(const Args& a, Config* cfg) {
  std::vector<ConfigError> errors;
  if (load_config(a.config, cfg, &errors)) return true;
  for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.format().c_str());
  std::fprintf(stderr, "agent: %zu error%s in %s\n", errors.size(), errors.size() == 1 ? "" : "s", a.config.c_str());
  return false;
}

bool load_for_client(const Args& a, Config* cfg) {
  std::vector<ConfigError> errors;
  if (load_config(a.config, cfg, &errors)) return true;
  if (!cfg->syntax_ok) {
    for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.format().c_str());
    return false;
  }
  std::fprintf(stderr, "agent: warning: %s has %zu error%s (see agent check); the daemon keeps the config it last loaded\n",
               a.config.c_str(), errors.size(), errors.size() == 1 ? "" : "s");
  return true;
}

std::string app_names(const Config& cfg) {
  std::string names;
  for (const auto& app : cfg.apps) names += (names.empty() ? "" : ", ") + app.name;
  return names;
}

const AppConfig* pick_app(const Config& cfg, const Args& a, size_t index) {
  if (a.positional.size() > index) {
    if (const AppConfig* app = cfg.find_app(a.positional[index])) return app;
    std::fprintf(stderr, "agent: no app \"%s\" in %s (apps: %s)\n", a.positional[index].c_str(), cfg.path.c_str(), app_names(cfg).c_str());
    return nullptr;
  }
  if (cfg.apps.size() == 1) return &cfg.apps[0];
  std::fprintf(stderr, "agent: %s has %zu apps; name one: %s\n", cfg.path.c_str(), cfg.apps.size(), app_names(cfg).c_str());
  return nullptr;
}

int call(const Config& cfg, const nlohmann::json& req, bool print_final) {
  int rc = 1;
  std::string err;
  bool reached = call_daemon(cfg.agent.control_socket, req, [&](const nlohmann::json& j) {
    if (j.contains("progress")) {
      std::printf("%s\n", j["progress"].get<std::string>().c_str());
      std::fflush(stdout);
      return;
    }
    bool ok = j.value("ok", false);
    rc = ok ? 0 : 1;
    std::string msg = j.value("message", "");
    if (!print_final || msg.empty()) return;
    if (ok) std::printf("%s\n", msg.c_str());
    else std::fprintf(stderr, "agent: %s\n", msg.c_str());
  }, &err);
  if (!reached) std::fprintf(stderr, "agent: %s\n", err.c_str());
  return rc;
}

bool daemon_status(const Config& cfg, const std::string& app, nlohmann::json* data, std::string* err) {
  nlohmann::json req = {{"verb", "status"}};
  if (!app.empty()) req["app"] = app;
  std::string failure;
  bool reached = call_daemon(cfg.agent.control_socket, req, [&](const nlohmann::json& j) {
    if (j.value("ok", false)) *data = j.value("data", nlohmann::json());
    else failure = j.value("message", "failed");
  }, err);
  if (!reached) return false;
  if (!failure.empty()) return *err = failure, false;
  if (!data->is_object()) return *err = "the agent's status came without its data", false;
  return true;
}

void print_json(const nlohmann::json& j) {
  std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
}

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<size_t> width;
  for (const auto& r : rows)
    for (size_t i = 0; i < r.size(); ++i) {
      if (width.size() <= i) width.push_back(0);
      width[i] = std::max(width[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line;
    for (size_t i = 0; i < r.size(); ++i)
      line += i + 1 == r.size() ? r[i] : r[i] + std::string(width[i] - r[i].size() + 2, ' ');
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::printf("%s\n", line.c_str());
  }
}

int cmd_run(const Args& a) {
  // First, before any thread exists (the alert sender, libgit2's, a build's): every thread
  // inherits this mask, so SIGTERM/SIGINT/SIGHUP reach the daemon only through its signalfd.
  // A thread started earlier would take them with their default action and end the daemon
  // with its workers orphaned (dinit does the same at the top of main).
  block_daemon_signals();
  int rc;
  {
    Daemon d(a.config);
    rc = d.run();
  }
  // The agent's log lines still queued are written now (spdlog's async logger). A stderr that
  // nobody reads must not keep the process from ending: after 2 s it ends without them.
  auto written = std::async(std::launch::async, [] { spdlog::shutdown(); });
  if (written.wait_for(std::chrono::seconds(2)) != std::future_status::ready) ::_exit(rc);
  return rc;
}

int run_cli(int argc, char** argv) {
  Args a;
  std::string out, err;
  int rc = parse_args(std::vector<std::string>(argv + 1, argv + argc), &a, &out, &err);
  if (rc >= 0) {
    std::fputs(out.c_str(), stdout);
    if (!err.empty()) std::fprintf(stderr, "%s\n", err.c_str());
    return rc;
  }
  const std::string& v = a.verb;
  if (v == "run") return cmd_run(a);
  if (v == "check") return cmd_check(a);
  if (v == "status") return cmd_status(a);
  if (v == "env") return cmd_env(a);
  if (v == "releases") return cmd_releases(a);
  if (v == "logs") return cmd_logs(a);
  if (v == "history") return cmd_history(a);
  if (v == "import-pm2") return cmd_import_pm2(a);
  if (v == "upgrade") return cmd_upgrade(a);
  if (v == "systemd-socket") return cmd_systemd_socket(a);
  if (v == "post-receive") return cmd_post_receive(a);
  if (v.starts_with("fleet ")) return cmd_fleet(a);
  for (const char* op : {"deploy", "reload", "start", "stop", "restart", "rollback"})
    if (v == op) return cmd_op(a);
  std::fprintf(stderr, "agent: %s: not built into this agent\n", v.c_str());
  return 2;
}

}  // namespace agent
