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

bool preview_launch(const Config& cfg, const AppConfig& app, const std::optional<std::string>& release, LaunchPreview* out,
                    std::string* err) {
  releases::ReleaseStore store(app.app_dir(cfg.agent));
  LaunchContext& ctx = out->ctx;
  if (release) {
    ctx.release_id = *release;
    if (!releases::valid_release_id(ctx.release_id) || !base::is_directory(store.release_dir(ctx.release_id)))
      return *err = "app " + app.name + " has no release " + ctx.release_id + " (see agent releases " + app.name + ")", false;
    ctx.release_dir = store.release_dir(ctx.release_id);
  } else if (auto cur = store.current()) {
    ctx.release_id = *cur;
    ctx.release_dir = store.release_dir(*cur);
  } else if (!app.source.empty()) {
    ctx.release_dir = app.source;
    out->staged_from_source = true;
    out->note = "nothing is deployed yet: showing the environment for a release staged from " + app.source;
    ctx.release_id = "(given when staged)";
  } else {
    return *err = "app " + app.name + " has no release and no source yet", false;
  }
  std::string raw, why;
  if (!releases::read_version(ctx.release_dir, app.watch, &ctx.version, &raw, &why))
    out->note += (out->note.empty() ? "" : "; ") + std::string("version unknown: ") + why;
  for (char** e = environ; *e; ++e) ctx.agent_environ.emplace_back(*e);
  ctx.notify_socket = app.app_dir(cfg.agent) + "/notify.sock";
  ctx.node_shim = find_node_shim(nullptr);
  if (!lookup_account(app, &ctx.account, &why)) return *err = "app " + app.name + ": " + why, false;
  if (!LaunchEnv::build(app, ctx, &out->env, &why)) return *err = "app " + app.name + ": " + why, false;
  out->resolves = resolve_command(app.command[0], out->env, ctx.release_dir, ctx.account, &out->resolved, &out->resolve_error);
  return true;
}

int cmd_env(const Args& a) {
  Config cfg;
  if (!load(a, &cfg)) return 1;
  const AppConfig* app = pick_app(cfg, a, 0);
  if (!app) return 1;
  LaunchPreview p;
  std::string err;
  if (!preview_launch(cfg, *app, a.release, &p, &err)) return std::fprintf(stderr, "agent: %s\n", err.c_str()), 1;
  const LaunchContext& ctx = p.ctx;
  const LaunchEnv& env = p.env;
  const std::string& note = p.note;
  const std::string& resolved = p.resolved;
  const std::string& resolve_err = p.resolve_error;
  bool ok = p.resolves;

  if (a.json) {
    nlohmann::json j = {{"app", app->name}, {"release", p.staged_from_source ? nlohmann::json(nullptr) : nlohmann::json(ctx.release_id)}, {"release_dir", ctx.release_dir},
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
