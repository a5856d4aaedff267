// `agent env`: the launch environment a worker of the app gets, built the way the daemon builds
// it (agent/process/launch_env), each variable with where it came from.
#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

#include "agent/cli/cli.h"
#include "agent/cli/verbs.h"
#include "agent/process/launch_env.h"
#include "base/fs.h"
#include "releases/store.h"
#include "releases/version.h"

extern char** environ;

namespace agent {
namespace {

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

}  // namespace

int cmd_env(const Args& a) {
  Config cfg;
  if (!load(a, &cfg)) return 1;
  const AppConfig* app = pick_app(cfg, a, 0);
  if (!app) return 1;
  releases::ReleaseStore store(app->app_dir(cfg.agent));

  LaunchContext ctx;
  std::string note;
  if (a.release) {
    ctx.release_id = *a.release;
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
    bool show = a.show_secrets;
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
    print_json(j);
    return ok ? 0 : 1;
  }

  std::printf("# app %s, release %s, as user %s\n", app->name.c_str(), ctx.release_id.c_str(), ctx.account.name.c_str());
  std::printf("# release dir %s\n", ctx.release_dir.c_str());
  if (!note.empty()) std::printf("# %s\n", note.c_str());
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"ORIGIN", "VARIABLE"});
  for (const auto& v : env.vars)
    rows.push_back({v.origin, v.name + "=" + (!a.show_secrets && looks_secret(v.name) ? kHidden : v.value)});
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

}  // namespace agent
