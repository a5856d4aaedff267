// agent.toml: the operator's contract. Key names come from DESIGN.md and do not change.
//
// Loading never throws and never stops at the first problem: every error found is returned
// with the file, line and column it belongs to, so `agent check` can list them all at once.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "base/listen.h"
#include "base/units.h"

namespace agent {

/// A worker gets its listen sockets at fds 3.. : at most this many per app.
constexpr size_t kMaxListen = 64;

struct ConfigError {
  std::string file;
  int line = 0;
  int column = 0;
  std::string message;
  /// "file:line:col: message", the form editors and CI annotate.
  std::string format() const;
};

struct AgentSettings {
  std::string state_dir = "/var/lib/agent";
  std::string log_dir = "/var/log/agent";
  std::string control_socket = "/run/agent/agent.sock";
  std::string control_group;  // empty: socket is 0600, owner only
  std::uint64_t log_max_size = 10ull << 20;  // a worker log rotates past this
  int log_max_files = 5;                     // rotated files kept per app
  std::optional<base::ListenAddress> metrics_listen;  // /metrics and /healthz (docs/reference.md "Metrics")
};

struct AlertSettings {
  std::vector<std::string> email_to;
  std::string email_from;
  std::string smtp_url;
  std::string smtp_user;
  std::string smtp_password_file;  // the password itself never lives in the config
  std::string webhook_url;
  std::string tls_ca_file;              // extra CA certificates for smtps/STARTTLS and https (e.g. a private CA)
  base::Millis min_interval{300'000};         // repeats of one (app, event) within this are folded into one message
  base::Millis retry_for{600'000};            // a delivery that keeps failing is retried this long, then dropped
};

// [fleet] (docs/operating.md "Fleets"): the hosts that share apps coordinate their rollouts through etcd.
struct FleetSettings {
  std::vector<std::string> etcd;  // client URLs of the etcd members: "http://10.0.0.5:2379"
  std::string name;               // keys live under /deploy-agent/<name>/
  std::string host;               // this host in the fleet; default: the hostname
  base::Millis lease_ttl{10'000};  // a dead agent's slot frees itself this long after it stopped renewing
  base::Millis unreachable_alert{60'000};  // etcd out of reach this long raises fleet_unreachable
  std::string etcd_user, etcd_password_file, etcd_ca_file, etcd_cert_file, etcd_key_file;
  bool operator==(const FleetSettings&) const = default;
};

/// One entry of fleet_waves: a number of hosts, or a percentage of the registered ones.
struct FleetWave {
  int count = 0;
  bool percent = false;
  bool operator==(const FleetWave&) const = default;
};

enum class ReadyMode { Fd, Notify, Delay };
const char* ready_mode_name(ReadyMode m);

struct AppConfig {
  std::string name;
  std::string source;                   // where the package manager drops code; watched
  std::string watch = "package.json";   // relative to source: package.json or a marker file
  std::string git;                      // bare repository for `git push` deploys
  std::string branch = "main";
  std::vector<std::string> command;
  int instances = 1;
  std::vector<base::ListenAddress> listen;
  std::string shim;                     // "" or "node"
  ReadyMode ready = ReadyMode::Fd;
  base::Millis ready_timeout{30'000};
  base::Millis ready_delay{1'000};            // ready = "delay"
  int max_surge = 1;
  int drain_signal = 15;                // SIGTERM
  base::Millis drain_timeout{10'000};
  std::optional<base::Millis> kill_timeout = base::Millis{60'000};  // nullopt = "never"
  std::uint64_t max_memory = 0;         // bytes of RSS; 0 = no limit
  int keep_releases = 5;
  std::string build;                    // run by /bin/sh in each staged release, before preflight
  base::Millis build_timeout{600'000};        // a build still running after this is killed and fails
  std::string user;
  std::string group;
  std::string env_file;
  std::vector<std::string> inherit = {"PATH", "LANG", "TZ"};
  std::vector<std::string> path_prepend;
  std::vector<std::string> path_append;
  std::vector<std::string> linked_dirs;
  std::vector<std::pair<std::string, std::string>> env;  // [app.env], sorted by name
  // Health and bake (docs/operating.md "Health and bake"): a probe through the first listen address, and
  // how long a new release is watched after its rollout before it counts as good.
  std::string health_method, health_path;     // "GET", "/healthz"; empty: no probe
  std::string health_host;                    // the Host header; "": the listen address
  base::Millis health_interval{2'000};
  base::Millis health_timeout{2'000};
  int health_failures = 3;                    // failed probes in a row that make it unhealthy
  base::Millis bake{0};                       // 0: no bake
  // Fleets: hosts of [fleet] that may roll a new version of this app at once, wave by wave.
  // Empty: the app rolls on its own, whatever the other hosts do.
  std::vector<FleetWave> fleet_waves;
  base::Millis settle{2'000};                 // quiet time after a change of source/watch before deploying
  std::optional<base::Millis> poll_interval;  // also read the watched file this often (NFS)

  /// `<state_dir>/<name>`: releases/, current, shared/, journal.jsonl.
  std::string app_dir(const AgentSettings& a) const { return a.state_dir + "/" + name; }
};

struct Config {
  std::string path;        // the file it was read from
  std::string text;        // what it read there (a reload names the keys that changed from it)
  bool syntax_ok = false;  // the TOML parsed: what was valid in it has been read, even with errors
  AgentSettings agent;
  AlertSettings alerts;
  std::optional<FleetSettings> fleet;  // set when the file has [fleet]
  std::vector<AppConfig> apps;

  const AppConfig* find_app(std::string_view name) const;
};

/// Reads and validates `path`. Returns true when there are no errors; otherwise `errors`
/// holds every problem found, each with its location.
bool load_config(const std::string& path, Config* out, std::vector<ConfigError>* errors);

/// Same, from text already in memory (`path` is only used in the error locations).
bool parse_config(std::string_view text, const std::string& path, Config* out,
                  std::vector<ConfigError>* errors);

/// The config path the CLI uses when -c is not given: $AGENT_CONFIG, then /etc/agent/agent.toml.
std::string default_config_path();

/// Variables only the agent sets (LISTEN_*, READY_FD, NOTIFY_SOCKET, APP_*, AGENT_*): no config
/// layer may supply them (part of the contract: [app.env], env_file, inherit).
bool is_agent_variable(std::string_view name);

/// App names become directory names: letters, digits, '.', '_', '-', at most 64, no leading '.'.
bool valid_app_name(std::string_view name);

}  // namespace agent
