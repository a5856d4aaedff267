// LaunchEnv: the exact environment a worker starts with, built fresh for every start.
//
// Never the agent's environment wholesale (seed 000: a start script lost the global PATH and
// the pages broke while the API answered). Layers, each overriding the one before:
//   inherited  the `inherit` allow-list from the agent's environment (default PATH, LANG, TZ)
//   account    HOME, USER, LOGNAME of the account the worker runs as
//   env_file   KEY=VALUE lines from the app's env_file
//   config     the [app.env] table
//   agent      LISTEN_*, READY_FD / NOTIFY_SOCKET, APP_*, AGENT_LISTEN (cannot be overridden);
//              with shim = "node" also NODE_OPTIONS (+= --require the shim), AGENT_DRAIN_SIGNAL,
//              and PORT (the first TCP port) unless a layer above set it
// PATH is composed, in order, duplicates and empty or relative entries dropped:
//   <release>/node_modules/.bin, <release>/.node/bin, path_prepend, the inherited global PATH
//   (a default system PATH if the agent has none), path_append. PATH itself cannot come from
//   env_file or [app.env], nor can the agent's own variables: those are dropped, with a note.
#pragma once

#include <sys/types.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "agent/config/config.h"

namespace agent {

/// The account a worker runs as: `user` (and `group`) from the config, else the agent's own.
struct Account {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::string home;
  std::vector<gid_t> groups;  // supplementary, as initgroups() would set them
};
bool lookup_account(const AppConfig& app, Account* out, std::string* err);

/// The groups `user` belongs to, primary `gid` included (getgrouplist, as initgroups sets them).
std::vector<gid_t> groups_of(const std::string& user, gid_t gid);

struct EnvVar {
  std::string name, value;
  std::string origin;  // inherited | account | env_file FILE:LINE | config [app.env] | agent | composed
};

struct PathEntry {
  std::string dir;
  std::string origin;  // release | path_prepend | inherited | env_file | config | path_append | default
};

/// The running agent binary's absolute path (also after it was replaced on disk by an upgrade);
/// empty if /proc does not say.
std::string self_executable();
/// Where the Node shim is: beside an installed binary (<prefix>/share/deploy-agent/shims/node)
/// or in the source tree next to a build directory. Empty if not found; *searched lists where.
std::string find_node_shim(std::string* searched);

struct LaunchContext {
  std::string release_dir;                 // the resolved release directory (never via `current`)
  std::string release_id, version;
  std::vector<std::string> agent_environ;  // the agent's own environment, "K=V"
  Account account;
  std::string notify_socket;               // ready = "notify"
  std::string node_shim;                   // shim = "node": the shim's path (find_node_shim)
  int worker = -1;                         // the slot; -1 when only showing the environment
};

/// KEY=VALUE lines; '#' comments, blank lines, an optional `export `, and single or double
/// quotes around the value are understood. Errors say FILE:LINE.
bool parse_env_file(std::string_view text, const std::string& path,
                    std::vector<std::pair<std::string, int>>* lines_out,  // "K=V" with its line
                    std::string* err);

class LaunchEnv {
 public:
  /// Builds the environment for `app` in `ctx`. Fails (with the file and line) only when the
  /// env_file cannot be read or parsed.
  static bool build(const AppConfig& app, const LaunchContext& ctx, LaunchEnv* out, std::string* err);

  std::vector<EnvVar> vars;           // the final environment, sorted by name
  std::vector<PathEntry> path;        // PATH, entry by entry, with where each came from
  std::vector<std::string> dropped;   // PATH entries and variables left out, and why

  const EnvVar* find(std::string_view name) const;
  /// "K=V" strings for execve.
  std::vector<std::string> envp() const;
};

/// Where `command0` resolves for a worker: a name is searched on the launch PATH, a path with
/// '/' is taken relative to the release directory. The file must be executable by `account`.
/// On failure *err says what was searched.
bool resolve_command(const std::string& command0, const LaunchEnv& env, const std::string& release_dir,
                     const Account& account, std::string* resolved, std::string* err);

}  // namespace agent
