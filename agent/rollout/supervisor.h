// AppSupervisor: the shell around one app's AppMachine (machine.h). The machine decides; this
// does what it decides, with real processes, pipes, threads and disks, and turns what happens
// (a pidfd readable, a readiness newline, a finished stage) back into the machine's events.
//
// It owns: the workers' processes (pidfd, readiness and output pipes, the app log), the
// sd_notify socket, the release store and its store thread (staging, builds, journal writes,
// `current`, pruning, one job at a time in order), the file watch of `source` (the RPM/yum
// trigger), the git hook, the workers' account, and the workers record orphans.h reads.
//
// Nothing here blocks the loop: staging, builds and store writes run on threads and report
// back through EventLoop::post_from_thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/alerts/alerts.h"
#include "agent/config/config.h"
#include "agent/fleet/fleet.h"
#include "agent/health/probe.h"
#include "agent/process/launch_env.h"
#include "agent/process/notify_socket.h"
#include "agent/process/orphans.h"
#include "agent/rollout/machine.h"
#include "base/event_loop.h"
#include "base/log_file.h"
#include "releases/store.h"
#include "watchers/file_watch.h"

namespace agent {

class AppSupervisor : private Effects {
 public:
  AppSupervisor(base::EventLoop& loop, Alerts& alerts, releases::HistoryLog& history, AgentSettings agent, AppConfig app,
                std::vector<int> listen_fds, std::vector<std::string> agent_environ);
  ~AppSupervisor() override;
  AppSupervisor(const AppSupervisor&) = delete;
  AppSupervisor& operator=(const AppSupervisor&) = delete;

  /// Prepares the release store (cleaning what a crash left), the log file and the notify socket.
  bool init(std::string* err);
  /// At daemon start: run the current release, or stage the source if nothing is deployed.
  void boot();
  /// Workers a killed agent left serving (agent/process/orphans.h): drained once this agent's
  /// own workers serve, i.e. when an operation next succeeds. Called before boot().
  void adopt(std::vector<Orphan> orphans);

  // `agent upgrade` (agent/daemon/handoff.h): the app handed to the next image of the agent.
  /// Why it cannot be handed over now, "" when it can (no operation, no thread at work).
  std::string busy() const;
  /// Its workers, slots, pidfds and output pipes as JSON; the fds to keep open across execve
  /// are added to `keep`. Queued log lines are written first.
  nlohmann::json handoff(std::vector<int>* keep);
  /// In the new image, after init() and instead of adopt(): takes the workers over. boot()
  /// then starts no worker: they run.
  bool take_over(const nlohmann::json& state, std::string* err);
  void submit(OpRequest op) {
    if ((op.kind == OpRequest::Kind::Deploy && !op.resumed) || op.kind == OpRequest::Kind::Rollback) forget_fleet_turns();
    machine_.submit(std::move(op));
  }
  /// A reloaded config (SIGHUP): used for every later start; `instances` is applied now (or
  /// when the running operation ends).
  /// The watch of `source` follows a change of source, watch, settle or poll_interval at once;
  /// the log file takes the new log_max_size and log_max_files.
  void update_config(AppConfig app, const AgentSettings& agent);
  /// Stops everything: cancels operations, drains every worker, calls `when_empty` once none
  /// is left and no thread runs.
  void shutdown(std::function<void()> when_empty);

  /// The daemon owns the listening sockets. After `agent stop` the supervisor gives them back
  /// (close), and before workers start after it, gets them again (open). Without these they
  /// stay open.
  struct ListenSockets {
    std::function<bool(std::vector<int>* fds, std::string* err)> open;
    std::function<void()> close;
  };
  void set_listen_sockets(ListenSockets sockets) { listen_sockets_ = std::move(sockets); }
  /// The fleet this host is in ([fleet]; null: none). The daemon owns it and outlives this.
  void set_fleet(fleet::Coordinator* fleet);
  /// `agent fleet resume` lifted the halt of `version`: a deploy of it that gave up (or failed
  /// here) runs again.
  void fleet_resumed(const std::string& version);

  const std::string& name() const { return app_.name; }
  const AppConfig& config() const { return app_; }
  /// boot() has run and no operation is running or waiting: the app is as up as it will get.
  bool settled() const { return booted_ && !machine_.running() && !machine_.pending(); }
  nlohmann::json status() const;
  /// One line for systemd's STATUS=: "web: rolling 1.2.0, batch 3/14", "web: running, 2/2 ready".
  std::string summary() const;
  /// The machine: its workers, slots and counters (/metrics).
  const AppMachine& machine() const { return machine_; }
  std::optional<std::string> current_release() const { return store_.current(); }
  /// Resident memory of a process, from /proc (0 when it is gone).
  static std::uint64_t rss_of(pid_t pid);
  std::string version_of_release(const std::string& release) const { return release_version(release); }

 private:
  // Effects (machine.h), with the real world.
  pid_t spawn(int slot, const std::string& release, std::string* err) override;
  void signal(pid_t pid, int sig) override;
  void kill(pid_t pid) override;
  void ready_seen(pid_t pid) override;
  std::uint64_t rss(pid_t pid) override;
  void workers_changed() override;
  std::optional<std::string> current() override { return store_.current(); }
  std::string version_of(const std::string& release) override { return release_version(release); }
  void stage(const OpRequest& op, std::function<void(const StageOutcome&)> then) override;
  void build(const std::string& release, std::function<void(const BuildOutcome&)> then) override;
  bool preflight(const std::string& release, std::string* resolved, std::string* err) override;
  void rollback_target(int steps, const std::string& to,
                       std::function<void(bool, const std::string&, const std::string&)> then) override;
  void journal(const JournalWrite& write, std::function<void(bool, const std::string&)> then) override;
  void prune(const std::set<std::string>& in_use) override;
  void cancel_work() override;
  void close_sockets() override;
  bool open_sockets(std::string* err) override;
  void config_applied(const AppConfig& app) override;
  void alert(Alert a) override { alerts_.raise(std::move(a)); }
  void history(releases::HistoryEntry e) override { history_.add(std::move(e)); }
  bool in_fleet() override { return fleet_ && !app_.fleet_waves.empty(); }
  void fleet_acquire(const OpRequest& op, const std::string& release, const std::string& version, std::function<void(const std::string&)> progress,
                     std::function<void(const FleetTurn&)> then) override;
  void fleet_baking(const std::string& version) override;
  void fleet_finish(const std::string& version, bool ok, const std::string& reason, std::optional<Alert> failure) override;
  void fleet_abandon(const std::string& version) override;
  /// Tells the fleet which version runs here (fleet status), after `current` moved.
  void publish_version();
  void forget_fleet_turns();

  // A worker's process: what the shell holds for it while it lives (processes.cc).
  struct Process {
    pid_t pid = 0;
    std::string release_dir, path;
    unsigned long long start_time = 0;  // of the process (orphans.h), for the workers record
    int pidfd = -1, errpipe = -1, ready_fd = -1;
    bool adopted = false;
    base::EventLoop::Id pid_watch = 0, ready_watch = 0;
  };
  struct OutputPipe {
    int fd = -1;
    pid_t pid = 0;
    base::EventLoop::Id watch = 0;
    std::string prefix;  // "0/1234 out"
    base::LineSplitter lines;
  };
  struct StoreJob {
    std::function<void(releases::ReleaseStore&)> work;  // on the store thread
    std::function<void()> then;                         // on the loop, after it
  };

  void watch_output(int fd, int slot, pid_t pid, const char* stream);
  void read_output(int fd);
  /// The worker's last lines of output, for failure messages ("; last output: ...").
  std::string last_output(pid_t pid);
  void on_ready_data(pid_t pid);
  void on_process_exit(pid_t pid);
  void on_notify();
  /// The health probe, every health_interval while the app has `health`, something deployed
  /// and is not stopped; its results go to the machine.
  void schedule_probe();
  /// Cancels a process's watches and closes its fds: after this nothing the loop holds refers
  /// to it. Used when it exits and when the supervisor goes away.
  void release_plumbing(Process& p);
  /// Rewrites <app_dir>/workers with every live worker, adopted ones included.
  void record_workers();
  /// Calls when_empty_ once the machine has no worker left and no background thread runs.
  void maybe_empty();

  /// Runs `work` on a thread, then `then` on the loop.
  void off_loop(std::function<void()> work, std::function<void()> then);
  /// Everything that writes the app's state on disk (staging, the journal, `current`,
  /// pruning, the source-seen record) runs here, one job at a time in the order queued, off
  /// the loop: fsync never holds it, and no job sees another's half-done work.
  void store_job(std::function<void(releases::ReleaseStore&)> work, std::function<void()> then);
  void next_store_job();

  /// Watches source/watch (when the app has a source) and deploys what lands there.
  void start_watch(const AppConfig& app, const std::string& baseline);
  /// <app_dir>/source-seen: the content of source/watch last acted on, kept across restarts.
  std::string seen_path() const;
  void remember_seen(const std::string& content);
  /// The same, with the watched file's content in release directory `dir` ("" for none), read
  /// on the store thread.
  void remember_seen_of(const std::string& dir);
  void log_nothing_deployed();
  /// Makes or checks the bare repository's post-receive hook (apps with `git`), off the loop.
  void install_git_hook();
  /// Looks the workers' account up again (init, a reloaded config).
  void refresh_account();
  /// The cached account, or a fresh lookup when the last one failed.
  bool account(Account* out, std::string* err);
  /// The version `release` declares (package.json or the marker), "" if it says none.
  std::string release_version(const std::string& release) const;
  /// What a worker of `release` in `slot` (-1: any) is launched with, read afresh.
  LaunchContext launch_context(const std::string& release, int slot) const;

  base::EventLoop& loop_;
  Alerts& alerts_;
  releases::HistoryLog& history_;
  const char* state_word() const;  // running, stopped, staging, rolling, ... (status "state")
  mutable std::map<pid_t, std::pair<base::Clock::time_point, double>> cpu_seen_;  // status: CPU seconds when last asked
  AgentSettings agent_;
  AppConfig app_;      // as the machine last applied it (a reload waits for the running operation)
  AppConfig watched_;  // as last loaded: the file watch follows it at once
  std::vector<int> listen_fds_;
  ListenSockets listen_sockets_;
  bool sockets_closed_ = false;
  std::vector<std::string> environ_;
  releases::ReleaseStore store_;
  std::unique_ptr<base::LogFile> log_;
  NotifySocket notify_;
  base::EventLoop::Id notify_watch_ = 0;
  HealthProbe probe_{loop_};
  base::EventLoop::Id probe_timer_ = 0;
  /// The workers' account, looked up when the config is applied (init, SIGHUP), not at every
  /// spawn: NSS may be a network service, and the loop must not wait on it. A failed lookup
  /// is tried again at the next preflight.
  std::optional<Account> account_;
  std::string account_err_;
  fleet::Coordinator* fleet_ = nullptr;
  std::map<std::string, OpRequest> fleet_ops_;  // version -> the deploy that asked, to run again on resume

  std::map<pid_t, Process> procs_;
  std::string record_error_;  // the last failure to write <app_dir>/workers, logged once
  bool record_inflight_ = false, record_dirty_ = false;  // record_workers(): one write at a time
  std::map<int, std::unique_ptr<OutputPipe>> pipes_;  // by fd; live until EOF, even after the worker exits
  std::map<pid_t, std::vector<std::string>> recent_output_;  // last lines per worker, until it is reaped
  bool booted_ = false, shutting_down_ = false, machine_empty_ = false;
  bool taken_over_ = false;  // from the previous image (take_over): boot() starts nothing
  std::function<void()> when_empty_;
  std::shared_ptr<std::atomic<bool>> cancel_;  // set while staging or a build runs; true stops it
  std::unique_ptr<watchers::FileWatch> watch_;  // source/watch: the RPM/yum trigger
  std::map<std::uint64_t, std::thread> threads_;  // joined when they report back
  std::uint64_t next_thread_ = 1;
  std::deque<StoreJob> store_jobs_;
  bool store_busy_ = false;
  // Work posted back from threads checks this first: it expires when the supervisor is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  // Last: it is built from the members above, and its destructor cancels its timers first.
  AppMachine machine_;
};

/// A machine's snapshot as JSON and back (handoff.cc): what crosses execve in `agent upgrade`.
nlohmann::json snapshot_json(const AppMachine::Snapshot& s);
/// Throws (nlohmann::json::exception) when `j` is not one.
AppMachine::Snapshot snapshot_from_json(const nlohmann::json& j);

}  // namespace agent
