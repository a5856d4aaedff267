#include "agent/cli.h"

#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "agent/config.h"
#include "agent/launch_env.h"
#include "releases/store.h"
#include "releases/version.h"

extern char** environ;

namespace agent {
namespace {

constexpr const char* kUsage = R"(agent: deploys apps with zero failed requests

Usage: agent [-c FILE] COMMAND [ARGS]

Commands available in this build:
  check    [-c FILE]                 validate the config; errors as file:line:col: message
  env      APP [--release ID] [--json]
                                     the launch environment a worker gets, where each
                                     variable comes from, and where command[0] resolves
  releases [APP] [--json]            releases on disk: id, version, source, state, current

Commands of the daemon (not in this build yet):
  run, status, deploy, reload, start, stop, restart, rollback, logs

Options:
  -c, --config FILE   the config (default: $AGENT_CONFIG, then /etc/agent/agent.toml)
  -h, --help          this text; `agent COMMAND --help` for one command
  --version           print the version

APP may be left out when the config has one app.
)";

const std::map<std::string, std::string> kVerbHelp = {
    {"check", "Usage: agent check [-c FILE]\n\nReads the config and reports every problem as file:line:col: message.\n"
              "Exit 0 when the file is valid, 1 when it is not.\n"},
    {"env", "Usage: agent env APP [--release ID] [--json] [-c FILE]\n\n"
            "Prints the exact environment a worker of APP starts with, built the way the daemon builds it:\n"
            "the inherit allow-list, the account's HOME/USER/LOGNAME, env_file, [app.env], then the agent's\n"
            "own variables, with PATH composed entry by entry. Each variable shows where it came from, and\n"
            "the last line says where command[0] resolves. Uses the current release (or --release ID; the\n"
            "source directory when nothing is deployed yet). Needs no daemon.\n"
            "Exit 1 when command[0] does not resolve: the daemon would refuse to deploy.\n"},
    {"releases", "Usage: agent releases [APP] [--json] [-c FILE]\n\n"
                 "Lists the releases of APP (all apps when left out) newest first: id, version, source, state\n"
                 "(active, previous, staged, failed, rolled_back) and a * on the current one. Needs no daemon.\n"},
};

struct Args {
  std::string verb;
  std::string config;
  std::vector<std::string> positional;
  std::map<std::string, std::string> options;  // --release ID
  bool json = false, help = false;
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

// The app a command is about: named, or the only one.
const AppConfig* pick_app(const Config& cfg, const Args& a, size_t index) {
  if (a.positional.size() > index) {
    if (const AppConfig* app = cfg.find_app(a.positional[index])) return app;
    std::string names;
    for (const auto& app : cfg.apps) names += (names.empty() ? "" : ", ") + app.name;
    std::fprintf(stderr, "agent: no app \"%s\" in %s (apps: %s)\n", a.positional[index].c_str(), cfg.path.c_str(), names.c_str());
    return nullptr;
  }
  if (cfg.apps.size() == 1) return &cfg.apps[0];
  std::string names;
  for (const auto& app : cfg.apps) names += (names.empty() ? "" : ", ") + app.name;
  std::fprintf(stderr, "agent: %s has %zu apps; name one: %s\n", cfg.path.c_str(), cfg.apps.size(), names.c_str());
  return nullptr;
}

// Left-aligned columns, two spaces apart.
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
    std::printf("%s\n", line.c_str());
  }
}

int cmd_check(const Args& a) {
  Config cfg;
  if (!load(a, &cfg)) return 1;
  std::string names;
  for (const auto& app : cfg.apps) names += (names.empty() ? "" : ", ") + app.name;
  std::printf("%s: ok (%zu app%s: %s)\n", a.config.c_str(), cfg.apps.size(), cfg.apps.size() == 1 ? "" : "s", names.c_str());
  return 0;
}

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
    if (!releases::is_directory(store.release_dir(ctx.release_id))) {
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
    for (const auto& v : env.vars) j["env"].push_back({{"name", v.name}, {"value", v.value}, {"origin", v.origin}});
    for (const auto& p : env.path) j["path"].push_back({{"dir", p.dir}, {"origin", p.origin}, {"exists", releases::is_directory(p.dir)}});
    j["path_dropped"] = env.dropped;
    j["command"] = app->command;
    j["command_resolved"] = ok ? nlohmann::json(resolved) : nlohmann::json(nullptr);
    if (!ok) j["error"] = resolve_err;
    if (!note.empty()) j["note"] = note;
    std::printf("%s\n", j.dump(2).c_str());
    return ok ? 0 : 1;
  }

  std::printf("# app %s, release %s, as user %s\n", app->name.c_str(), ctx.release_id.c_str(), ctx.account.name.c_str());
  std::printf("# release dir %s\n", ctx.release_dir.c_str());
  if (!note.empty()) std::printf("# %s\n", note.c_str());
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ORIGIN", "VARIABLE"});
  for (const auto& v : env.vars) rows.push_back({v.origin, v.name + "=" + v.value});
  print_table(rows);
  std::printf("\nPATH, in order:\n");
  rows.clear();
  for (const auto& p : env.path)
    rows.push_back({"  " + p.dir, p.origin + (releases::is_directory(p.dir) ? "" : " (missing)")});
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
  return {{"id", r.id},         {"version", r.version}, {"source", r.source}, {"revision", r.revision},
          {"state", releases::state_name(r.state)}, {"current", r.current}, {"staged_at", r.time},
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
    for (const auto& r : list)
      rows.push_back({r.current ? "*" : " ", r.id, r.version, r.source, releases::state_name(r.state),
                      r.state == releases::ReleaseState::Failed || r.state == releases::ReleaseState::RolledBack ? r.reason : ""});
    print_table(rows);
  }
  if (a.json) std::printf("%s\n", (a.positional.empty() ? out : out[0]).dump(2).c_str());
  return rc;
}

}  // namespace

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
    } else if (s.starts_with("-") && s != "-") return usage_error("unknown option " + s);
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
  if (a.verb == "env") return a.positional.size() <= 1 ? cmd_env(a) : usage_error("env takes one APP");
  if (a.verb == "releases") return a.positional.size() <= 1 ? cmd_releases(a) : usage_error("releases takes one APP");
  for (const char* later : {"run", "status", "deploy", "reload", "start", "stop", "restart", "rollback", "logs"})
    if (a.verb == later) {
      std::fprintf(stderr, "agent: '%s' needs the daemon, which this build does not include yet\n", later);
      return 2;
    }
  return usage_error("unknown command '" + a.verb + "'");
}

}  // namespace agent
