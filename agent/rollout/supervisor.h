// AppSupervisor: one app's workers, and every change to them.
//
// Slots. An app has `instances` slots. Each slot has at most one *serving* worker (the one
// that counts toward capacity) and, while it is being replaced, one *incoming* worker. A slot
// also names the release it should run; crash restarts use that release.
//
// A worker's life (WorkerState):
//   Starting  forked; not yet ready. Ready by: a newline on READY_FD (ready = "fd"),
//             READY=1 from its own pid on NOTIFY_SOCKET ("notify"), or ready_delay ("delay").
//             Not ready within ready_timeout, or exiting first, is a failure.
//   Ready     serving (or, as an incoming worker, ready to take over its slot).
//   Draining  sent drain_signal. After drain_timeout an alert; after kill_timeout SIGKILL to
//             its process group and another alert. Nothing waits on a draining worker.
//   (exited)  reaped through its pidfd and forgotten. A serving worker that exits is a
//             crash: restarted after a backoff (100ms doubling to 30s, reset by 30s of
//             health); five in a row raise a crash_loop alert.
//
// Operations. Everything an operator or trigger asks (deploy, reload, rollback, start, stop,
// restart) is an operation. One runs at a time per app; one more may wait, and a newer request
// replaces the waiting one (its requester is told it was superseded): the latest wins.
//
// The rolling swap, batch by batch of max_surge slots: start incoming workers on the target
// release; when all of the batch are Ready, each becomes its slot's serving worker and the old
// one drains. Capacity never drops below `instances`: an old worker drains only after its
// replacement is ready. If an incoming worker fails, the batch's incoming workers are drained,
// the slots already swapped are swapped back the same way (old release, new worker, wait
// ready, then drain), the release is journaled failed, and `current` never moved. Only a
// successful rollout moves `current` (deploy, rollback) and journals it.
//
// Nothing here blocks: staging and pruning run on threads and report back through the loop.
#pragma once

#include <sys/types.h>

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
#include "hooks/build.h"
#include "agent/config/config.h"
#include "base/event_loop.h"
#include "agent/process/orphans.h"
#include "agent/process/launch_env.h"
#include "agent/process/notify_socket.h"
#include "base/log_file.h"
#include "releases/store.h"
#include "watchers/file_watch.h"

namespace agent {

enum class WorkerState { Starting, Ready, Draining };
const char* worker_state_name(WorkerState s);

struct OpRequest {
  enum class Kind { Deploy, Reload, Rollback, Start, Stop, Restart, Replace };
  Kind kind = Kind::Reload;
  std::string from;         // Deploy: the directory to stage
  std::string source = "cli";
  std::string revision;
  int steps = 1;            // Rollback N
  std::string to;           // Rollback --to ID
  int slot = -1;            // Replace (max_memory)
  long uid = -1;
  std::function<void(const std::string&)> progress;             // optional
  std::function<void(bool ok, const std::string& message)> done;  // optional
};
const char* op_name(OpRequest::Kind k);

class AppSupervisor {
 public:
  AppSupervisor(base::EventLoop& loop, Alerts& alerts, AgentSettings agent, AppConfig app, std::vector<int> listen_fds,
                std::vector<std::string> agent_environ);
  ~AppSupervisor();
  AppSupervisor(const AppSupervisor&) = delete;
  AppSupervisor& operator=(const AppSupervisor&) = delete;

  /// Prepares the release store (cleaning what a crash left), the log file and the notify socket.
  bool init(std::string* err);
  /// At daemon start: run the current release, or stage the source if nothing is deployed.
  void boot();
  /// Workers a killed agent left serving (agent/process/orphans.h): drained once this agent's own
  /// workers serve, i.e. when an operation next succeeds. Called before boot().
  void adopt(std::vector<Orphan> orphans);
  void submit(OpRequest op);
  /// A reloaded config (SIGHUP): used for every later start; `instances` is applied now (or
  /// when the running operation ends).
  /// The watch of `source` follows a change of source, watch, settle or poll_interval at once;
  /// the log file takes the new log_max_size and log_max_files.
  void update_config(AppConfig app, const AgentSettings& agent);
  /// Stops everything: cancels operations, drains every worker, calls `when_empty` once none
  /// is left.
  void shutdown(std::function<void()> when_empty);

  /// The daemon owns the listening sockets. After `agent stop` the supervisor gives them back
  /// (close), and before workers start after it, gets them again (open). Without these they
  /// stay open.
  struct ListenSockets {
    std::function<bool(std::vector<int>* fds, std::string* err)> open;
    std::function<void()> close;
  };
  void set_listen_sockets(ListenSockets sockets) { listen_sockets_ = std::move(sockets); }

  const std::string& name() const { return app_.name; }
  const AppConfig& config() const { return app_; }
  bool has_workers() const { return !workers_.empty(); }
  /// boot() has run and no operation is running or waiting: the app is as up as it will get.
  bool settled() const { return booted_ && !running_ && !pending_; }
  nlohmann::json status() const;

 private:
  struct Worker {
    int slot = -1;
    pid_t pid = -1;
    std::string release, release_dir, path;
    WorkerState state = WorkerState::Starting;
    base::Clock::time_point started, ready_at, drain_started;
    int pidfd = -1, errpipe = -1, ready_fd = -1;
    unsigned long long start_time = 0;  // of the process (orphans.h), for the workers record
    bool ready_eof = false;
    base::EventLoop::Id pid_watch = 0, ready_watch = 0, ready_timer = 0, delay_timer = 0, drain_timer = 0, kill_timer = 0;
  };
  struct Slot {
    pid_t serving = 0, incoming = 0;
    std::string release;
    int crashes = 0;   // in a row, without 30s of health
    int restarts = 0;  // in total
    base::EventLoop::Id restart_timer = 0;
    bool loop_alerted = false;
  };
  struct Rollout {
    OpRequest::Kind kind = OpRequest::Kind::Reload;
    std::string target, version;
    std::vector<int> todo, batch;
    std::map<int, std::string> previous;  // slot -> release it ran before being swapped
    std::vector<int> swapped;
    int batches_done = 0, batches_total = 0;
    bool reverting = false;
    std::string failure;
  };
  struct OutputPipe {
    int fd = -1;
    pid_t pid = 0;
    base::EventLoop::Id watch = 0;
    std::string prefix;  // "0/1234 out"
    base::LineSplitter lines;
  };
  // Disk: waiting for the store thread (the journal, `current`) before the operation goes on
  // or ends.
  enum class Phase { Idle, Staging, Building, Rolling, Starting, Stopping, Disk };
  struct StoreJob {
    std::function<void(releases::ReleaseStore&)> work;  // on the store thread
    std::function<void()> then;                         // on the loop, after it
  };

  void say(const std::string& line);
  void start_op(OpRequest op);
  void finish_op(bool ok, const std::string& message);
  void on_staged(bool ok, const releases::Release& r, const std::string& err);
  void begin_rollout(OpRequest::Kind kind, const std::string& target, std::vector<int> slots);
  void start_build(const std::string& release);
  void on_built(const std::string& release, const hooks::BuildResult& result);
  bool preflight(const std::string& release, std::string* err);
  void advance();
  /// After a stop closed the sockets: binds them again; false (and the operation failed) if
  /// that cannot be done.
  bool reopen_sockets();
  void fail_rollout(const std::string& reason);
  void complete_rollout();
  void reconcile();
  void apply_instances();
  /// Makes `app` the config: the git hook follows a new git/branch, the account is looked up
  /// again, `instances` applied.
  void apply_config(AppConfig app);
  /// Runs `work` on a thread, then `then` on the loop.
  void off_loop(std::function<void()> work, std::function<void()> then);
  /// Everything that writes the app's state on disk (staging, the journal, `current`,
  /// pruning, the source-seen record) runs here, one job at a time in the order queued, off
  /// the loop: fsync never holds it, and no job sees another's half-done work.
  void store_job(std::function<void(releases::ReleaseStore&)> work, std::function<void()> then);
  void next_store_job();
  /// A journal write on the store thread (its failure logged), then `then` on the loop. The
  /// operation waits for it in Phase::Disk.
  void record_then(std::function<bool(releases::ReleaseStore&, std::string*)> write, std::function<void()> then);
  /// record_then of "failed" for `release`, asked by the running operation's requester.
  void record_failed_then(const std::string& release, const std::string& reason, std::function<void()> then);

  pid_t spawn_worker(int slot, const std::string& release, bool incoming, std::string* err);
  void watch_output(int fd, int slot, pid_t pid, const char* stream);
  void read_output(int fd);
  /// The worker's last lines of output, for failure messages ("; last output: ...").
  std::string last_output(pid_t pid);
  void on_ready_data(pid_t pid);
  void mark_ready(pid_t pid);
  void on_ready_timeout(pid_t pid);
  void on_exit(pid_t pid);
  void drain(pid_t pid, const std::string& why);
  void check_memory();
  /// Rewrites <app_dir>/workers with every live worker, orphans included.
  void record_workers();
  /// Sends the orphans drain_signal (SIGKILL after kill_timeout); each is forgotten as it exits.
  void drain_orphans();
  /// drain_orphans() once every slot has a ready worker of ours and no operation runs.
  void maybe_drain_orphans();
  void forget_orphan(pid_t pid);
  /// Watches source/watch (when the app has a source) and deploys what lands there.
  void start_watch(const AppConfig& app, const std::string& baseline);
  /// <app_dir>/source-seen: the content of source/watch last acted on, kept across restarts.
  std::string seen_path() const;
  void remember_seen(const std::string& content);
  /// Calls when_empty_ once no worker and no background thread is left (shutdown).
  void maybe_empty();
  void on_notify();
  void log_nothing_deployed();
  /// Makes or checks the bare repository's post-receive hook (apps with `git`), off the loop.
  void install_git_hook();
  /// Looks the workers' account up again (init, a reloaded config).
  void refresh_account();
  /// The cached account, or a fresh lookup when the last one failed.
  bool account(Account* out, std::string* err);
  Worker* find(pid_t pid);
  /// Cancels a worker's timers, unwatches its fds and closes them: after this nothing the loop
  /// holds refers to it. Used when it exits and when the supervisor goes away.
  void release_plumbing(Worker& w);
  /// Slots 0..instances-1: what a whole-app rollout swaps.
  std::vector<int> all_slots() const;
  std::string version_of(const std::string& release) const;
  /// What a worker of `release` in `slot` (-1: any) is launched with, read afresh.
  LaunchContext launch_context(const std::string& release, int slot) const;
  std::string worker_name(const Worker& w) const;

  base::EventLoop& loop_;
  Alerts& alerts_;
  AgentSettings agent_;
  AppConfig app_;
  std::optional<AppConfig> next_app_;  // a config reload waiting for the running operation
  std::vector<int> listen_fds_;
  ListenSockets listen_sockets_;
  bool sockets_closed_ = false;  // by a stop; reopened by the next operation that starts workers
  std::vector<std::string> environ_;
  releases::ReleaseStore store_;
  std::unique_ptr<base::LogFile> log_;
  NotifySocket notify_;
  base::EventLoop::Id notify_watch_ = 0, memory_timer_ = 0;
  /// The workers' account, looked up when the config is applied (init, SIGHUP), not at every
  /// spawn: NSS may be a network service, and the loop must not wait on it. A failed lookup
  /// is tried again at the next preflight.
  std::optional<Account> account_;
  std::string account_err_;

  std::map<pid_t, std::unique_ptr<Worker>> workers_;
  struct Adopted {
    Orphan orphan;
    base::EventLoop::Id watch = 0, kill_timer = 0;
    bool draining = false;
  };
  std::map<pid_t, Adopted> orphans_;
  std::string record_error_;  // the last failure to write <app_dir>/workers, logged once
  bool record_inflight_ = false, record_dirty_ = false;  // record_workers(): one write at a time
  std::map<int, std::unique_ptr<OutputPipe>> pipes_;  // by fd; live until EOF, even after the worker exits
  std::map<pid_t, std::vector<std::string>> recent_output_;  // last lines per worker, until it is reaped
  std::vector<Slot> slots_;
  bool stopped_ = false, shutting_down_ = false, restart_after_stop_ = false, booted_ = false;
  Phase phase_ = Phase::Idle;
  std::optional<OpRequest> running_, pending_;
  base::Clock::time_point op_started_;
  Rollout rollout_;
  std::function<void()> when_empty_;
  std::shared_ptr<std::atomic<bool>> cancel_;  // set while staging or a build runs; true stops it
  std::unique_ptr<watchers::FileWatch> watch_;  // source/watch: the RPM/yum trigger
  std::map<std::uint64_t, std::thread> threads_;  // staging and pruning; joined when they report back
  std::uint64_t next_thread_ = 1;
  std::deque<StoreJob> store_jobs_;
  bool store_busy_ = false;
  // Work posted back from threads checks this first: it expires when the supervisor is gone.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace agent
