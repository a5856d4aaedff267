// The `agent` command line (cli.h). Over 500 lines for a reason that has an end: the
// hand-written option parser and every verb live here until the CLI moves to CLI11 (issue 18),
// which gives each verb its own parser and file.
#include "agent/daemon/cli.h"

#include <sys/stat.h>
#include <unistd.h>

#include <future>

#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <thread>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <string>
#include <vector>

#include "agent/config/config.h"
#include "agent/daemon/control.h"
#include "agent/daemon/daemon.h"
#include "hooks/git_hook.h"
#include "agent/process/launch_env.h"
#include "releases/store.h"
#include "releases/version.h"

extern char** environ;

namespace agent {
namespace {

constexpr const char* kUsage = R"(agent: deploys apps with zero failed requests

Usage: agent [-c FILE] COMMAND [ARGS]

Commands:
  run      [-c FILE]                 the daemon, in the foreground
  status   [APP] [--json | --check]  apps, current release, workers (pid, release, state,
                                     uptime, rss, restarts); --check: exit 0 all up,
                                     1 degraded, 2 down (Nagios-style)
  deploy   APP [--from DIR | --rev REV] [--no-fleet]
                                     stage DIR (default: the app's source), or export commit
                                     REV from the app's git repository, and roll it out;
                                     streams progress; exit 1 if it was refused or rolled back;
                                     --no-fleet: past the fleet's gate (an emergency)
  reload   APP                       rolling swap onto the current release, environment rebuilt
  start|stop|restart APP             restart = stop then start (has downtime; reload has none)
  rollback [N] [APP] | --to ID [APP] back N activated releases (default 1), skipping failed
                                     and rolled-back ones, with the same rolling swap
  releases [APP] [--json]            releases on disk: id, version, source, state, current
  env      APP [--release ID] [--json] [--show-secrets]
                                     the launch environment a worker gets, where each
                                     variable comes from, and where command[0] resolves
  logs     APP [-f] [-n N]           the workers' output (last N lines, default 50; -f follows)
  check    [-c FILE]                 validate the config; errors as file:line:col: message
  fleet    status [APP] [--json] | resume APP VERSION
                                     the hosts of [fleet] and their turns at a version
  post-receive [--socket PATH] [--branch B] APP
                                     what an app's git hook runs: deploys the pushed branch

Options:
  -c, --config FILE   the config (default: $AGENT_CONFIG, then /etc/agent/agent.toml)
  -h, --help          this text; `agent COMMAND --help` for one command
  --version           print the version

APP may be left out when the config has one app.
)";

const std::map<std::string, std::string> kVerbHelp = {
    {"fleet", kFleetHelp},
    {"check", "Usage: agent check [-c FILE]\n\nReads the config and reports every problem as file:line:col: message.\n"
              "Exit 0 when the file is valid, 1 when it is not.\n"},
    {"env", "Usage: agent env APP [--release ID] [--json] [--show-secrets] [-c FILE]\n\n"
            "Prints the exact environment a worker of APP starts with, built the way the daemon builds it:\n"
            "the inherit allow-list, the account's HOME/USER/LOGNAME, env_file, [app.env], then the agent's\n"
            "own variables, with PATH composed entry by entry. Each variable shows where it came from, and\n"
            "the last line says where command[0] resolves. Uses the current release (or --release ID; the\n"
            "source directory when nothing is deployed yet). Needs no daemon.\n"
            "Values of variables whose names look secret (PASSWORD, SECRET, TOKEN, KEY, CREDENTIAL, PRIVATE)\n"
            "are hidden unless --show-secrets.\n"
            "Exit 1 when command[0] does not resolve: the daemon would refuse to deploy.\n"},
    {"deploy", "Usage: agent deploy APP [--from DIR | --rev REV] [-c FILE]\n\n"
               "Stages a new release and rolls it out, batch by batch, printing each step. The release is a copy\n"
               "of DIR (default: the app's source directory), or with --rev the commit REV (a sha, a branch, a\n"
               "tag, HEAD~1) exported from the app's git repository; its version is then the package.json version\n"
               "plus the short commit id. A request made while another operation runs waits; a newer one\n"
               "replaces a waiting one. Exit 0 when the release is live, 1 when it was refused or reverted.\n"
               "An app with fleet_waves in a [fleet] waits for its slot before it rolls (\"waiting for a fleet slot:\n"
               "web-02 rolling 1.4.0\"); --no-fleet goes past that gate, for an emergency, and is journaled so.\n"},
    {"post-receive", "Usage: agent post-receive [--socket PATH] [--branch BRANCH] APP\n\n"
                     "Run by the post-receive hook the agent installs in an app's bare repository, with git's\n"
                     "\"<old> <new> <ref>\" lines on stdin. Each pushed ref goes to the daemon: a push to the app's\n"
                     "branch is deployed (progress is printed, so the pusher sees it as remote: lines, ending in\n"
                     "\"live\" or the reason it was not deployed); other branches and deletions change nothing.\n"
                     "--socket names the control socket (the hook passes it), so no config file is read;\n"
                     "--branch ignores other refs here, even when the daemon cannot be reached.\n"
                     "Exit 1 when a push to the branch was not deployed.\n"},
    {"releases", "Usage: agent releases [APP] [--json] [-c FILE]\n\n"
                 "Lists the releases of APP (all apps when left out) newest first: id, version, source, state\n"
                 "(active, previous, staged, failed, rolled_back) and a * on the current one, with the deploys refused\n"
                 "before anything was staged among them (refused, with the reason). Needs no daemon.\n"},
};

struct Args {
  std::string verb;
  std::string config;
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // --release ID, --from DIR, --to ID, -n N
  bool json = false, help = false, follow = false;
};

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

// For verbs that talk to the daemon: the config is only needed to find the control socket,
// and a config broken since the daemon started must not lock the operator out of it.
bool load_for_client(const Args& a, Config* cfg) {
  std::vector<ConfigError> errors;
  if (load_config(a.config, cfg, &errors)) return true;
  if (!cfg->syntax_ok) {
    for (const auto& e : errors) std::fprintf(stderr, "%s\n", e.format().c_str());
    return false;
  }
  std::fprintf(stderr, "agent: warning: %s has %zu error%s (see agent check); the daemon keeps the config it started with\n",
               a.config.c_str(), errors.size(), errors.size() == 1 ? "" : "s");
  return true;
}

// "web, api": the config's apps, for messages.
std::string app_names(const Config& cfg) {
  std::string names;
  for (const auto& app : cfg.apps) names += (names.empty() ? "" : ", ") + app.name;
  return names;
}

// The app a command is about: named, or the only one.
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


int cmd_check(const Args& a) {
  Config cfg;
  if (!load(a, &cfg)) return 1;
  std::printf("%s: ok (%zu app%s: %s)\n", a.config.c_str(), cfg.apps.size(), cfg.apps.size() == 1 ? "" : "s", app_names(cfg).c_str());
  return 0;
}

// A variable whose name says it holds a secret: its value is not printed by `agent env`
// unless --show-secrets (the terminal, a pasted bug report, a CI log would keep it).
bool looks_secret(const std::string& name) {
  std::string up;
  for (char c : name) up += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (const char* word : {"PASSWORD", "PASSWD", "SECRET", "TOKEN", "KEY", "CREDENTIAL", "PRIVATE"})
    if (up.find(word) != std::string::npos) return true;
  return false;
}

constexpr const char* kHidden = "<hidden: agent env --show-secrets>";

int cmd_env(const Args& a) {
  Config cfg;
  if (!load(a, &cfg)) return 1;
  const AppConfig* app = pick_app(cfg, a, 0);
  if (!app) return 1;
  releases::ReleaseStore store(app->app_dir(cfg.agent));

  LaunchContext ctx;
  std::string note;
  if (auto it = a.options.find("release"); it != a.options.end()) {
    ctx.release_id = it->second;
    if (!releases::valid_release_id(ctx.release_id) || !base::is_directory(store.release_dir(ctx.release_id))) {
      std::fprintf(stderr, "agent: app %s has no release %s (see agent releases %s)\n", app->name.c_str(),
                   ctx.release_id.c_str(), app->name.c_str());
      return 1;
    }
    ctx.release_dir = store.release_dir(ctx.release_id);
  } else if (auto cur = store.current()) {
    ctx.release_id = *cur;
    ctx.release_dir = store.release_dir(*cur);
  } else if (!app->source.empty()) {
    ctx.release_dir = app->source;
    note = "nothing is deployed yet: showing the environment for a release staged from " + app->source;
    ctx.release_id = "(given when staged)";
  } else {
    std::fprintf(stderr, "agent: app %s has no release and no source yet\n", app->name.c_str());
    return 1;
  }
  std::string raw, err;
  if (!releases::read_version(ctx.release_dir, app->watch, &ctx.version, &raw, &err)) {
    if (note.empty()) note = "version unknown: " + err;
    else note += "; version unknown: " + err;
  }
  for (char** e = environ; *e; ++e) ctx.agent_environ.emplace_back(*e);
  ctx.notify_socket = app->app_dir(cfg.agent) + "/notify.sock";
  ctx.node_shim = find_node_shim(nullptr);
  if (!lookup_account(*app, &ctx.account, &err)) {
    std::fprintf(stderr, "agent: app %s: %s\n", app->name.c_str(), err.c_str());
    return 1;
  }
  LaunchEnv env;
  if (!LaunchEnv::build(*app, ctx, &env, &err)) {
    std::fprintf(stderr, "agent: app %s: %s\n", app->name.c_str(), err.c_str());
    return 1;
  }
  std::string resolved, resolve_err;
  bool ok = resolve_command(app->command[0], env, ctx.release_dir, ctx.account, &resolved, &resolve_err);

  if (a.json) {
    nlohmann::json j = {{"app", app->name}, {"release", note.starts_with("nothing is deployed") ? nlohmann::json(nullptr) : nlohmann::json(ctx.release_id)}, {"release_dir", ctx.release_dir},
                        {"version", ctx.version}, {"user", ctx.account.name}};
    bool show = a.options.count("show-secrets") > 0;
    for (const auto& v : env.vars) {
      bool hide = !show && looks_secret(v.name);
      j["env"].push_back({{"name", v.name}, {"value", hide ? nlohmann::json(nullptr) : nlohmann::json(v.value)}, {"origin", v.origin}});
      if (hide) j["env"].back()["hidden"] = true;
    }
    for (const auto& p : env.path) j["path"].push_back({{"dir", p.dir}, {"origin", p.origin}, {"exists", base::is_directory(p.dir)}});
    j["path_dropped"] = env.dropped;
    j["command"] = app->command;
    j["command_resolved"] = ok ? nlohmann::json(resolved) : nlohmann::json(nullptr);
    if (!ok) j["error"] = resolve_err;
    if (!note.empty()) j["note"] = note;
    std::printf("%s\n", j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
    return ok ? 0 : 1;
  }

  std::printf("# app %s, release %s, as user %s\n", app->name.c_str(), ctx.release_id.c_str(), ctx.account.name.c_str());
  std::printf("# release dir %s\n", ctx.release_dir.c_str());
  if (!note.empty()) std::printf("# %s\n", note.c_str());
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ORIGIN", "VARIABLE"});
  for (const auto& v : env.vars)
    rows.push_back({v.origin, v.name + "=" + (!a.options.count("show-secrets") && looks_secret(v.name) ? kHidden : v.value)});
  print_table(rows);
  std::printf("\nPATH, in order:\n");
  rows.clear();
  for (const auto& p : env.path)
    rows.push_back({"  " + p.dir, p.origin + (base::is_directory(p.dir) ? "" : " (missing)")});
  print_table(rows);
  for (const auto& d : env.dropped) std::printf("  dropped %s\n", d.c_str());
  if (ok) {
    std::printf("\ncommand: %s -> %s\n", app->command[0].c_str(), resolved.c_str());
    return 0;
  }
  std::printf("\n");
  std::fprintf(stderr, "agent: refused: app %s: %s\n", app->name.c_str(), resolve_err.c_str());
  return 1;
}

nlohmann::json release_json(const releases::ReleaseInfo& r) {
  return {{"id", r.id.empty() ? nlohmann::json(nullptr) : nlohmann::json(r.id)}, {"version", r.version}, {"source", r.source}, {"revision", r.revision},
          {"state", releases::state_name(r.state)}, {"current", r.current}, {r.id.empty() ? "refused_at" : "staged_at", r.time},
          {"reason", r.reason}};
}

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
    std::vector<std::vector<std::string>> rows = {{"", "ID", "VERSION", "SOURCE", "STATE", "NOTE"}};
    for (const auto& r : list) {
      bool why = r.state == releases::ReleaseState::Failed || r.state == releases::ReleaseState::RolledBack ||
                 r.state == releases::ReleaseState::Bad ||
                 r.state == releases::ReleaseState::Refused;
      rows.push_back({r.current ? "*" : " ", r.id.empty() ? "(none: " + r.time + ")" : r.id, r.version.empty() ? "-" : r.version,
                      r.source, releases::state_name(r.state), why ? r.reason : ""});
    }
    print_table(rows);
  }
  if (a.json) std::printf("%s\n", (a.positional.empty() ? out : out[0]).dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str());
  return rc;
}

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

// Sends one request to the daemon, printing its progress; exit 0 if it says ok.
int call(const Config& cfg, const nlohmann::json& req, bool print_final = true) {
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

int cmd_status(const Args& a) {
  Config cfg;
  bool check = a.options.count("check") > 0;
  if (!load_for_client(a, &cfg)) return check ? 2 : 1;
  nlohmann::json req = {{"verb", "status"}};
  if (!a.positional.empty()) req["app"] = a.positional[0];
  nlohmann::json data;
  std::string err, failure;
  bool reached = call_daemon(cfg.agent.control_socket, req, [&](const nlohmann::json& j) {
    if (j.value("ok", false)) data = j.value("data", nlohmann::json());
    else failure = j.value("message", "failed");
  }, &err);
  if (check) {
    if (!reached || !failure.empty()) return std::printf("DOWN: %s\n", (reached ? failure : err).c_str()), 2;
    std::string report;
    int rc = status_check(data, &report);
    std::fputs(report.c_str(), stdout);
    return rc;
  }
  if (!reached) return std::fprintf(stderr, "agent: %s\n", err.c_str()), 1;
  if (!failure.empty()) return std::fprintf(stderr, "agent: %s\n", failure.c_str()), 1;
  if (a.json) return std::printf("%s\n", data.dump(2, ' ', false, nlohmann::json::error_handler_t::replace).c_str()), 0;
  bool first = true;
  for (const auto& app : data["apps"]) {
    if (!first) std::printf("\n");
    first = false;
    std::string cur = app["current"].is_null() ? "(nothing deployed)" : app["current"].get<std::string>();
    std::printf("%s: %s, current %s", app["app"].get<std::string>().c_str(), app["state"].get<std::string>().c_str(), cur.c_str());
    if (!app["version"].get<std::string>().empty()) std::printf(" (version %s)", app["version"].get<std::string>().c_str());
    if (!app["operation"].get<std::string>().empty()) std::printf(", %s in progress", app["operation"].get<std::string>().c_str());
    if (app.contains("fleet_waiting"))
      std::printf(", %s (version %s) waiting for a fleet slot", app["fleet_waiting"].get<std::string>().c_str(),
                  app["fleet_waiting_version"].get<std::string>().c_str());
    if (app.contains("health")) std::printf(", %s", app["health"].get<std::string>().c_str());
    if (app.contains("bake_left_s")) std::printf(", baking %s: %llds left", app["baking"].get<std::string>().c_str(), app["bake_left_s"].get<long long>());
    std::printf("\n");
    if (app.value("health", "") == "unhealthy" && app.contains("health_last_failure"))
      std::printf("  last failed probe: %s\n", app["health_last_failure"].get<std::string>().c_str());
    std::vector<std::vector<std::string>> rows = {{"  SLOT", "PID", "RELEASE", "STATE", "ROLE", "UPTIME", "RSS", "RESTARTS"}};
    for (const auto& w : app["workers"])
      rows.push_back({"  " + std::to_string(w["slot"].get<int>()), std::to_string(w["pid"].get<int>()), w["release"].get<std::string>(),
                      w["state"].get<std::string>(), w["role"].get<std::string>(), human_uptime(w["uptime_s"].get<long>()),
                      human_size(w["rss"].get<std::uint64_t>()), std::to_string(w["restarts"].get<int>())});
    if (rows.size() > 1) print_table(rows);
    else std::printf("  no workers\n");
  }
  return 0;
}

int cmd_op(const Args& a) {
  Config cfg;
  if (!load_for_client(a, &cfg)) return 1;
  nlohmann::json req = {{"verb", a.verb}};
  std::vector<std::string> pos = a.positional;
  if (a.verb == "rollback" && !pos.empty() && !pos[0].empty() && std::isdigit(static_cast<unsigned char>(pos[0][0]))) {
    char* end = nullptr;
    long n = std::strtol(pos[0].c_str(), &end, 10);
    if (*end || n < 1 || n > 1000) return usage_error("rollback N: N must be a whole number from 1");
    req["steps"] = n;
    pos.erase(pos.begin());
  }
  if (pos.size() > 1) return usage_error(a.verb + " takes one APP");
  if (!pos.empty()) req["app"] = pos[0];  // the daemon knows which apps it runs
  else if (cfg.apps.size() == 1) req["app"] = cfg.apps[0].name;
  if (auto it = a.options.find("from"); it != a.options.end()) {
    char real[PATH_MAX];
    if (!::realpath(it->second.c_str(), real)) return std::fprintf(stderr, "agent: --from %s: %s\n", it->second.c_str(), std::strerror(errno)), 1;
    req["from"] = real;
  }
  if (a.options.count("no-fleet")) {
    if (a.verb != "deploy") return usage_error("--no-fleet is for deploy");
    req["no_fleet"] = true;
  }
  if (auto it = a.options.find("to"); it != a.options.end()) req["to"] = it->second;
  if (auto it = a.options.find("rev"); it != a.options.end()) {
    if (a.verb != "deploy") return usage_error("--rev is for deploy");
    if (a.options.count("from")) return usage_error("deploy takes --from or --rev, not both");
    req["rev"] = it->second;
  }
  return call(cfg, req);
}

// The git hook's side: one deploy request per pushed ref; the daemon decides which ref counts.
int cmd_post_receive(const Args& a) {
  if (a.positional.size() != 1) return usage_error("post-receive takes one APP (the hook gives it)");
  Config cfg;
  if (auto it = a.options.find("socket"); it != a.options.end()) cfg.agent.control_socket = it->second;
  else if (!load_for_client(a, &cfg)) return 1;
  const std::string& app = a.positional[0];
  std::string branch;
  if (auto it = a.options.find("branch"); it != a.options.end()) branch = it->second;
  int rc = 0;
  char line[1200];
  while (std::fgets(line, sizeof line, stdin)) {
    char old_id[128] = {}, new_id[128] = {}, ref[900] = {};  // sha-256 ids are 64 hex digits
    if (std::sscanf(line, "%127s %127s %899s", old_id, new_id, ref) != 3) continue;
    std::string rev = new_id;
    if (std::string why; !branch.empty() && !hooks::is_deploy_branch(app, branch, ref, &why)) {
      std::printf("agent: %s\n", why.c_str());
      continue;
    }
    if (rev.find_first_not_of('0') == std::string::npos) {
      std::printf("agent: %s deleted: nothing to deploy\n", ref);
      continue;
    }
    std::printf("agent: %s %s pushed to %s\n", app.c_str(), rev.substr(0, 7).c_str(), ref);
    std::fflush(stdout);
    nlohmann::json req = {{"verb", "deploy"}, {"app", app}, {"rev", rev}, {"ref", ref}};
    std::string err;
    bool ok = false, ignored = false;
    std::string message;
    bool reached = call_daemon(cfg.agent.control_socket, req, [&](const nlohmann::json& j) {
      if (j.contains("progress")) {
        std::printf("agent: %s\n", j["progress"].get<std::string>().c_str());
        std::fflush(stdout);
        return;
      }
      ok = j.value("ok", false);
      message = j.value("message", "");
      ignored = j.contains("data") && j["data"].is_object() && j["data"].value("ignored", false);
    }, &err);
    if (!reached) message = err + " (the push is stored; deploy it with: agent deploy " + app + " --rev " + rev.substr(0, 7) + ")";
    if (ignored) std::printf("agent: %s\n", message.c_str());
    else if (reached && ok) std::printf("agent: %s%s\n", message.starts_with("live") ? "" : "live: ", message.c_str());
    else std::printf("agent: NOT deployed: %s\n", message.c_str()), rc = 1;
    std::fflush(stdout);
  }
  return rc;
}

// Where the last `n` lines of `text` begin (a final newline does not start an empty line).
size_t tail_start(const std::string& text, long n) {
  if (n <= 0) return text.size();
  size_t pos = text.size();
  if (pos > 0 && text[pos - 1] == '\n') --pos;
  for (long lines = 0; lines < n; ++lines) {
    size_t nl = pos == 0 ? std::string::npos : text.rfind('\n', pos - 1);
    if (nl == std::string::npos) return 0;
    pos = nl;
  }
  return pos + 1;
}

// Prints the last `n` lines of the app's log, then (with -f) follows it across rotations.
int cmd_logs(const Args& a) {
  Config cfg;
  if (!load(a, &cfg)) return 1;
  const AppConfig* app = pick_app(cfg, a, 0);
  if (!app) return 1;
  long n = 50;
  if (auto it = a.options.find("n"); it != a.options.end()) n = std::max(0L, std::strtol(it->second.c_str(), nullptr, 10));
  std::string path = cfg.agent.log_dir + "/" + app->name + "/app.log";
  std::string text, err;
  if (!base::read_file(path, &text, &err) && !a.follow) {
    std::fprintf(stderr, "agent: %s\n", err.c_str());
    return 1;
  }
  size_t start = tail_start(text, n);
  std::fwrite(text.data() + start, 1, text.size() - start, stdout);
  std::fflush(stdout);
  if (!a.follow) return 0;
  struct stat st {};
  ino_t ino = ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
  std::uint64_t offset = text.size();
  while (true) {  // until interrupted
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (::stat(path.c_str(), &st) != 0) continue;
    if (st.st_ino != ino) ino = st.st_ino, offset = 0;  // rotated: read the new file from its start
    if (static_cast<std::uint64_t>(st.st_size) < offset) offset = 0;
    if (static_cast<std::uint64_t>(st.st_size) == offset) continue;
    std::ifstream in(path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(offset));
    std::string chunk((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    offset += chunk.size();
    std::fwrite(chunk.data(), 1, chunk.size(), stdout);
    std::fflush(stdout);
  }
}

}  // namespace

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

int run_cli(int argc, char** argv) {
  Args a;
  a.config = default_config_path();
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&](const char* name) -> const char* {
      if (i + 1 >= argc) return nullptr;
      (void)name;
      return argv[++i];
    };
    if (s == "-h" || s == "--help") a.help = true;
    else if (s == "--version") {
      std::printf("agent %s\n", AGENT_VERSION);
      return 0;
    } else if (s == "-c" || s == "--config") {
      const char* v = value("config");
      if (!v) return usage_error(s + " needs a file");
      a.config = v;
    } else if (s == "--json") a.json = true;
    else if (s == "--release") {
      const char* v = value("release");
      if (!v) return usage_error("--release needs a release id");
      a.options["release"] = v;
    } else if (s == "--from" || s == "--to" || s == "--rev" || s == "--socket" || s == "--branch" || s == "-n") {
      const char* v = value(s.c_str());
      if (!v) return usage_error(s + " needs a value");
      a.options[s == "-n" ? "n" : s.substr(2)] = v;
    } else if (s == "--no-fleet") a.options["no-fleet"] = "1";
    else if (s == "--show-secrets") a.options["show-secrets"] = "1";
    else if (s == "--check") a.options["check"] = "1";
    else if (s == "-f" || s == "--follow") a.follow = true;
    else if (s.starts_with("-") && s != "-") return usage_error("unknown option " + s);
    else if (a.verb.empty()) a.verb = s;
    else a.positional.push_back(s);
  }
  if (a.verb.empty()) {
    std::fputs(kUsage, a.help ? stdout : stderr);
    return a.help ? 0 : 2;
  }
  if (a.help) {
    auto it = kVerbHelp.find(a.verb);
    std::fputs(it != kVerbHelp.end() ? it->second.c_str() : kUsage, stdout);
    return 0;
  }
  if (a.verb == "check") return a.positional.empty() ? cmd_check(a) : usage_error("check takes no arguments (use -c FILE)");
  if (a.options.count("show-secrets") && a.verb != "env") return usage_error("--show-secrets is for env");
  if (a.options.count("check") && a.verb != "status") return usage_error("--check is for status");
  if (a.options.count("check") && a.json) return usage_error("status takes --check or --json, not both");
  if (a.verb == "env") return a.positional.size() <= 1 ? cmd_env(a) : usage_error("env takes one APP");
  if (a.verb == "releases") return a.positional.size() <= 1 ? cmd_releases(a) : usage_error("releases takes one APP");
  if (a.verb == "run") return a.positional.empty() ? cmd_run(a) : usage_error("run takes no arguments (use -c FILE)");
  if (a.verb == "status") return a.positional.size() <= 1 ? cmd_status(a) : usage_error("status takes one APP");
  if (a.verb == "post-receive") return cmd_post_receive(a);
  if (a.verb == "logs") return a.positional.size() <= 1 ? cmd_logs(a) : usage_error("logs takes one APP");
  if (a.verb == "fleet") {
    Config cfg;
    if (!load_for_client(a, &cfg)) return 1;
    return run_fleet_cli(cfg.agent.control_socket, a.positional, a.json);
  }
  for (const char* op : {"deploy", "reload", "start", "stop", "restart", "rollback"})
    if (a.verb == op) return cmd_op(a);
  return usage_error("unknown command '" + a.verb + "'");
}

}  // namespace agent
