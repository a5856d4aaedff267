// Daemon: `agent run`. Owns the loop, the listening sockets (bound once, kept for life), one
// AppSupervisor per app, the control socket and the signals.
//   SIGTERM/SIGINT  drain every worker (bounded by kill_timeout) and exit 0
//   SIGHUP          reload the config, validated first; on any error keep the running one
// Once it is running, no error stops it: a failed deploy, a bad request, a broken config on
// SIGHUP each get a clear line and the workers keep serving.
#pragma once

#include <map>
#include <set>
#include <optional>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <spdlog/formatter.h>

#include "agent/alerts/alerts.h"
#include "agent/config/config.h"
#include "agent/daemon/control.h"
#include "agent/daemon/handoff.h"
#include "agent/daemon/metrics.h"
#include "agent/fleet/fleet.h"
#include "agent/process/orphans.h"
#include "base/event_loop.h"
#include "agent/rollout/supervisor.h"

namespace agent {

/// Blocks SIGTERM, SIGINT and SIGHUP (they are read from a signalfd) and ignores SIGPIPE. Call
/// it first in `agent run`, before any thread is started.
void block_daemon_signals();

/// The agent's log on stderr (spdlog, written by a thread of its own; journal priorities under
/// journald), daemon_systemd.cc.
void install_logger();
/// Its line format: "2026-12-04T12:00:00.000Z info ...", or "<6>..." under journald.
std::unique_ptr<spdlog::formatter> log_formatter();

class Daemon {
 public:
  explicit Daemon(std::string config_path);
  ~Daemon();
  /// Runs until SIGTERM/SIGINT. Returns the process exit code.
  int run();

 private:
  bool start(std::string* err);
  /// The app's listening sockets: ones already held, taken from a previous agent's workers, or
  /// bound now. `bound` gets the addresses this call added.
  bool bind_app_sockets(const AppConfig& app, const std::vector<Orphan>& orphans, bool at_start, std::vector<int>* fds,
                        std::vector<std::string>* bound, std::string* err);
  void check_ready();
  std::string status_line() const;
  void status_tick();
  void watchdog_ping(std::chrono::milliseconds every);
  /// An app ready to run, and the addresses bound for it (closed again if it is not added).
  struct PreparedApp {
    std::unique_ptr<AppSupervisor> sup;
    std::vector<std::string> bound;
  };
  /// Everything an app needs before it runs (sockets, store, log, notify socket); on failure
  /// what it bound is closed again and nothing is left behind.
  /// `taken`: the app as the previous image handed it over (`agent upgrade`): its workers run.
  bool prepare_app(const AppConfig& app, const AgentSettings& agent, bool at_start, PreparedApp* out, std::string* err,
                   const nlohmann::json* taken = nullptr);
  /// Closes the agent's socket for each of `addrs` it holds, except those systemd passed in;
  /// returns the addresses closed.
  std::vector<std::string> close_sockets(const std::vector<std::string>& addrs);
  /// Takes a prepared app into the running set and boots it.
  void add_app(std::unique_ptr<AppSupervisor> sup);
  void on_signal();
  /// SIGHUP from `uid`: apply_config, then a line of history with the keys that changed.
  void reload_config(long uid);
  /// A line of history about the agent itself (agent_start, agent_stop).
  void agent_history(const std::string& op, const std::string& detail, double seconds);
  /// The config file again: all of it applied, or (false, *why) none of it.
  bool apply_config(std::string* why);
  void begin_shutdown();
  void on_request(std::shared_ptr<Session> s, const ControlRequest& req);
  /// fleet-status and fleet-resume: answered from the fleet's thread, posted back here.
  void on_fleet_request(std::shared_ptr<Session> s, const ControlRequest& req);
  /// [fleet]: the coordinator, its events posted to the loop.
  void start_fleet();
  /// /metrics and /healthz (daemon_metrics.cc).
  std::string render_metrics() const;
  std::pair<bool, std::string> healthz() const;
  bool authorized(uid_t uid) const;
  void close_unused_sockets();

  // `agent upgrade` (upgrade.cc).
  /// Why the agent cannot be handed to a new image now, "" when it can.
  std::string upgrade_busy() const;
  void on_upgrade(std::shared_ptr<Session> s);
  void finish_upgrade_check(std::shared_ptr<Session> s, const std::string& failure, const std::string& version,
                            std::chrono::steady_clock::time_point began, long uid);
  /// Hands everything over and executes the binary; returns only when that failed (*err), the
  /// old image intact.
  bool exec_new_image(std::string* err);
  /// After the new image took over (start()): the history line, the log line.
  void upgraded();
  struct PendingExec {
    std::shared_ptr<Session> session;
    std::chrono::steady_clock::time_point began;
    long uid = -1;
  };

  std::string config_path_;
  Config cfg_;
  base::EventLoop loop_;
  std::unique_ptr<Alerts> alerts_;
  std::unique_ptr<releases::HistoryLog> history_;  // history.jsonl: every operation (agent history)
  std::chrono::steady_clock::time_point stop_began_;
  long stop_uid_ = -1;       // who sent the signal that stops the agent
  std::string stop_signal_;  // and which
  // Before the apps: they hold a pointer to it, and go first.
  std::unique_ptr<fleet::Coordinator> fleet_;
  bool fleet_unreachable_ = false;  // etcd out of reach for [fleet] unreachable_alert (/metrics)
  std::unique_ptr<ControlServer> control_;
  std::unique_ptr<MetricsServer> metrics_;
  std::map<std::string, int> sockets_;  // canonical address -> listening fd
  std::map<std::string, std::unique_ptr<AppSupervisor>> apps_;
  std::vector<std::unique_ptr<AppSupervisor>> retired_;  // removed by a reload, draining
  std::vector<std::string> environ_;
  int signal_fd_ = -1, lock_fd_ = -1;
  bool shutting_down_ = false;
  std::optional<std::chrono::microseconds> watchdog_;  // WATCHDOG_USEC from systemd
  base::EventLoop::Id ready_timer_ = 0, watchdog_timer_ = 0, status_timer_ = 0;
  std::string last_status_;  // the STATUS= systemd has
  std::set<std::string> activated_;  // addresses whose socket came from systemd: never closed
  std::string exe_path_;           // the binary this daemon was started from: what `agent upgrade` executes
  int generation_ = 0;             // upgrades this pid went through
  bool upgrading_ = false;         // the new binary is being checked
  std::thread upgrade_thread_;     // ... here
  std::optional<PendingExec> pending_exec_;  // checked: run() executes it once the loop is left
  std::optional<Handoff> handoff_;           // from the previous image, when this one is an upgrade
};

}  // namespace agent
