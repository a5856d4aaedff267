// The verbs of the command line, one file each (cli_*.cc), and what they share (cli.cc).
// Internal to agent/cli/.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

#include "agent/cli/args.h"
#include "agent/config/config.h"
#include "agent/process/launch_env.h"

namespace agent {

/// "agent: <msg>\n(see agent --help)" on stderr; returns 2.
int usage_error(const std::string& msg);
/// Loads a->config; every error printed as file:line:col. False when it is not valid.
bool load(const Args& a, Config* cfg);
/// For verbs that talk to the daemon: the config is only needed to find the control socket, and
/// a config broken since the daemon started must not lock the operator out of it. False only
/// on a syntax error.
bool load_for_client(const Args& a, Config* cfg);
/// "web, api": the config's apps, for messages.
std::string app_names(const Config& cfg);
/// The app a verb is about: a.positional[index] if given, or the only one; else says why.
const AppConfig* pick_app(const Config& cfg, const Args& a, size_t index);
/// Sends one request to the daemon, printing its progress; exit 0 if it says ok.
int call(const Config& cfg, const nlohmann::json& req, bool print_final = true);
/// The daemon's status (of `app`, or every app when ""): false with *err when it cannot be
/// reached or refuses ("no app ...").
bool daemon_status(const Config& cfg, const std::string& app, nlohmann::json* data, std::string* err);
/// Prints JSON for scripts (invalid UTF-8 replaced).
void print_json(const nlohmann::json& j);

/// What a worker of `app` would start with, built as the daemon builds it (cli_env.cc): on
/// `release`, else the current one, else the app's source. False when it cannot be built (no
/// release, an unknown account, an unreadable env_file): *err says why.
struct LaunchPreview {
  LaunchContext ctx;
  LaunchEnv env;
  std::string note;  // "nothing is deployed yet: ...", "version unknown: ..."
  bool staged_from_source = false;
  bool resolves = false;  // command[0] found
  std::string resolved, resolve_error;
};
bool preview_launch(const Config& cfg, const AppConfig& app, const std::optional<std::string>& release, LaunchPreview* out,
                    std::string* err);

int cmd_run(const Args& a);
int cmd_check(const Args& a);
int cmd_status(const Args& a);
int cmd_op(const Args& a);  // deploy, reload, start, stop, restart, rollback
int cmd_post_receive(const Args& a);
int cmd_env(const Args& a);
int cmd_releases(const Args& a);
int cmd_logs(const Args& a);
int cmd_fleet(const Args& a);
int cmd_history(const Args& a);
int cmd_import_pm2(const Args& a);
int cmd_upgrade(const Args& a);
int cmd_systemd_socket(const Args& a);

}  // namespace agent
