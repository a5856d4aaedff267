// AppMachine: one app's operations and its workers' lives, as one state machine. It decides;
// it does no I/O. Every effect on the world (fork a worker, send a signal, stage a release,
// write the journal, raise an alert) is a call on its Effects, which the supervisor shell
// (supervisor.h) implements with real processes and disks, and the unit tests with fakes.
// Time comes from the EventLoop's clock, which a test replaces (EventLoop::set_clock).
// Model: s6-supervise's state table, dinit's bp_sys seam, ninja's FakeCommandRunner.
//
// Slots. An app has `instances` slots. Each slot has at most one *serving* worker (the one
// that counts toward capacity) and, while it is being replaced, one *incoming* worker. A slot
// also names the release it should run; crash restarts use that release.
//
// A worker's life (WorkerState), events -> actions:
//   Starting  + ready (a newline on READY_FD, READY=1, ready_delay)  -> Ready; advance the operation
//             + ready_timeout                -> fail the rollout (incoming) or drain it and count a crash
//             + exit                         -> fail the rollout (incoming) or restart after backoff
//   Ready     + exit                         -> crash: restart after backoff (100ms doubling to 30s,
//                                               reset by 30s up); 5 in a row raise crash_loop
//             + over max_memory              -> a Replace operation of its slot
//             + replaced, stop, shutdown     -> Draining: drain_signal
//   Draining  + drain_timeout                -> drain_stalled alert
//             + kill_timeout                 -> SIGKILL to its process group, worker_killed alert
//             + exit                         -> forgotten; nothing waits on a draining worker
//   Adopted   a worker a killed agent left (orphans.h): serves until as many of ours as
//             configured are ready, then Draining like any other.
//
// Operations (Phase). Everything an operator or trigger asks (deploy, reload, rollback, start,
// stop, restart, replace) is an operation. One runs at a time; one more may wait, and a newer
// request replaces the waiting one (its requester is told): the latest wins.
//   deploy:   Staging -> Building (if `build`) -> preflight -> Rolling -> Disk (journal, current)
//             -> Baking (if `bake`): passes -> Disk (baked); fails (probe unhealthy, a worker
//             exits) -> Rolling back to the release live before -> Disk (rolled_back, bad)
//   rollback: Disk (read the target) -> preflight -> Rolling -> Disk
//   reload, replace: preflight -> Rolling;  start: Launching;  stop: Stopping;
//   restart: Stopping -> Launching
// A refusal before Rolling touches nothing running. Rolling swaps batches of max_surge slots:
// start incoming workers; when all of the batch are Ready, each takes its slot and the old one
// drains, so capacity never drops below `instances`. If an incoming worker fails, the batch is
// drained, the slots already swapped are swapped back the same way, the release is journaled
// failed and `current` never moved (abort). Only a rollout that completes moves `current`
// (commit).
#pragma once

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/alerts/alerts.h"
#include "agent/config/config.h"
#include "base/event_loop.h"
#include "releases/history.h"

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
  bool no_fleet = false;      // Deploy: past the fleet's gate (agent deploy --no-fleet), journaled
  bool resumed = false;       // Deploy: again after `agent fleet resume` (even what failed its bake)
  bool fleet_passed = false;  // Deploy: its turn in the fleet came (set by the machine)
  bool restart = false;       // Start: the second half of a restart (one operation, one line of history)
  std::function<void(const std::string&)> progress;             // optional
  std::function<void(bool ok, const std::string& message)> done;  // optional
};
const char* op_name(OpRequest::Kind k);

// Where the running operation is. Launching: a start's workers are launched, all at once, and
// it waits for every slot to be ready (not a worker's Starting). Disk: waiting for the store
// thread (the journal, `current`) before it goes on or ends.
enum class Phase { Idle, Staging, Building, Rolling, Launching, Stopping, Disk, Baking };

// What the health probe says of the app (docs/operating.md "Health and bake").
enum class Health { Unknown, Healthy, Unhealthy };
const char* health_name(Health h);

/// Buckets of seconds, counts per bucket, sum: a Prometheus histogram (docs/reference.md "Metrics").
struct Histogram {
  std::vector<double> bounds;
  std::vector<std::uint64_t> counts;  // per bound, not cumulative; one more for +Inf
  double sum = 0;
  std::uint64_t count = 0;
  explicit Histogram(std::vector<double> b) : bounds(std::move(b)), counts(bounds.size() + 1, 0) {}
  void observe(double seconds);
};

/// What an app's machine counted since the agent started, for /metrics.
struct MachineStats {
  std::map<std::string, std::uint64_t> deploys;  // by result: ok, failed, refused, halted, bake_failed
  std::map<std::string, std::uint64_t> bakes;    // passed, failed
  std::uint64_t restarts = 0;                    // crash restarts, every slot
  Histogram rollout{{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}};  // a rollout, begin to commit or abort
  Histogram drain{{0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}};  // a worker, drain signal to exit
};

/// A journal write the machine asks for; the shell runs it on the store thread.
struct JournalWrite {
  // Halted: the fleet halted the release's version before it rolled here. Note: a line in the
  // journal that changes no state (a deploy past the fleet's gate, a wait for it).
  enum class Kind { Refused, Failed, Activate, RollbackTo, Baked, BakeFailed, Halted, Note };
  Kind kind = Kind::Failed;
  std::string release, reason;
  std::string to;     // BakeFailed: the release made current again ("" when there was none)
  OpRequest request;  // Refused: what was asked (source, revision, uid)
  long uid = -1;
};

struct StageOutcome {
  bool ok = false;
  std::string release, version, revision, error;
};

struct BuildOutcome {
  bool ok = false;
  std::string message;
  std::vector<std::string> tail;  // its last lines of output
};

/// A deploy's turn in the fleet (agent/fleet): go (a slot is held), go because this host is
/// done with the version already, or give up because a host halted it.
struct FleetTurn {
  enum class Kind { Go, AlreadyDone, Halted };
  Kind kind = Kind::Go;
  std::string reason;
};

/// Everything the machine does to the world. Continuations (`then`) are called later, on the
/// loop, once the work is done; never from inside the call that asked for it.
class Effects {
 public:
  virtual ~Effects() = default;
  // Processes.
  /// Forks a worker of `release` for `slot` with its launch environment; its pid, or 0 and *err.
  virtual pid_t spawn(int slot, const std::string& release, std::string* err) = 0;
  virtual void signal(pid_t pid, int sig) = 0;
  /// SIGKILL to the worker's process group: children must not keep the socket.
  virtual void kill(pid_t pid) = 0;
  /// The worker is ready: its readiness fds can be closed.
  virtual void ready_seen(pid_t pid) = 0;
  virtual std::uint64_t rss(pid_t pid) = 0;
  /// The set of live workers changed (the workers record, a shutdown waiting for the last).
  virtual void workers_changed() = 0;
  // The pipeline.
  virtual std::optional<std::string> current() = 0;
  virtual std::string version_of(const std::string& release) = 0;
  virtual void stage(const OpRequest& op, std::function<void(const StageOutcome&)> then) = 0;
  virtual void build(const std::string& release, std::function<void(const BuildOutcome&)> then) = 0;
  /// The launch environment of `release` builds and its command resolves: true and the path.
  virtual bool preflight(const std::string& release, std::string* resolved, std::string* err) = 0;
  virtual void rollback_target(int steps, const std::string& to,
                               std::function<void(bool ok, const std::string& target, const std::string& err)> then) = 0;
  virtual void journal(const JournalWrite& write, std::function<void(bool ok, const std::string& err)> then) = 0;
  /// Removes releases beyond keep_releases, never one of `in_use`; queued behind the commit.
  virtual void prune(const std::set<std::string>& in_use) = 0;
  /// Stops staging or a build at once (a shutdown).
  virtual void cancel_work() = 0;
  /// After a stop: the listening sockets are closed, and bound again before workers start.
  virtual void close_sockets() = 0;
  virtual bool open_sockets(std::string* err) = 0;
  /// A reloaded config now applies (at once, or when the operation it waited for ended):
  /// workers start with it from now on.
  virtual void config_applied(const AppConfig& app) = 0;
  // The fleet (docs/operating.md "Fleets"): the deploy of an app with fleet_waves waits for a slot between
  // preflight and its rollout, holds it through rollout and bake, then says how it went.
  virtual bool in_fleet() = 0;
  /// Asks for a slot for `version`; `progress` hears what it waits for, `then` the turn (once,
  /// unless fleet_abandon came first).
  virtual void fleet_acquire(const OpRequest& op, const std::string& release, const std::string& version, std::function<void(const std::string&)> progress,
                             std::function<void(const FleetTurn&)> then) = 0;
  virtual void fleet_baking(const std::string& version) = 0;
  /// The turn's end: done, or failed, which halts the version fleet-wide; `failure` is the
  /// alert the failure raises (the shell makes it fleet_halted when this host halted it).
  virtual void fleet_finish(const std::string& version, bool ok, const std::string& reason, std::optional<Alert> failure) = 0;
  /// Stops waiting, or frees the slot, with no verdict (superseded, shutting down).
  virtual void fleet_abandon(const std::string& version) = 0;
  // The operator.
  virtual void alert(Alert alert) = 0;
  /// One line of history.jsonl: an operation's end, or a crash restart (`agent history`).
  virtual void history(releases::HistoryEntry entry) = 0;
};

class AppMachine {
 public:
  AppMachine(base::EventLoop& loop, Effects& fx, AppConfig app);
  ~AppMachine();
  AppMachine(const AppMachine&) = delete;
  AppMachine& operator=(const AppMachine&) = delete;

  // --- events ------------------------------------------------------------------------------
  void submit(OpRequest op);
  /// A worker said it is ready (READY_FD, NOTIFY_SOCKET); ready_delay is the machine's own timer.
  void on_ready(pid_t pid);
  /// A worker closed READY_FD without a newline: it can no longer report ready (said at its
  /// ready_timeout).
  void on_ready_closed(pid_t pid);
  /// A worker exited. `reason` says how ("exited with status 3", "could not start: ..."),
  /// `last_output` its last lines ("; last output: ..."), said when it died before ready.
  void on_exit(pid_t pid, const std::string& reason, const std::string& last_output);
  /// One health probe's result (the shell probes every health_interval).
  void on_probe(bool ok, const std::string& detail);
  /// Workers a killed agent left serving: drained once ours serve.
  void adopt(const std::vector<pid_t>& pids);
  /// A reloaded config: timings for the next worker, `instances` now (or when the running
  /// operation ends).
  void set_config(AppConfig app);
  /// Stops everything: cancels operations, drains every worker, calls `when_empty` once none
  /// is left.
  void shutdown(std::function<void()> when_empty);


  // --- what it is --------------------------------------------------------------------------
  struct Worker {
    int slot = -1;  // -1: adopted from a previous agent
    pid_t pid = 0;
    std::string release;
    WorkerState state = WorkerState::Starting;
    bool adopted = false;
    bool ready_closed = false;
    base::Clock::time_point started, ready_at, drain_started;
    base::EventLoop::Id ready_timer = 0, delay_timer = 0, drain_timer = 0, kill_timer = 0;
  };
  struct Slot {
    pid_t serving = 0, incoming = 0;
    std::string release;
    int crashes = 0;   // in a row, without 30s of health
    int restarts = 0;  // in total
    std::string last_exit;  // how its last serving worker ended unasked ("12:00:01 exited with status 3")
    base::EventLoop::Id restart_timer = 0;
    bool loop_alerted = false;
  };

  // --- handed to the next image of the agent (`agent upgrade`, agent/daemon/handoff.h) ------
  /// The workers and slots as they are (their timer ids are this image's: restore() arms its
  /// own), the app's state and counters.
  struct Snapshot {
    std::vector<Worker> workers;
    std::vector<Slot> slots;
    bool stopped = false, sockets_closed = false;
    Health health = Health::Unknown;
    int probe_fails = 0;
    bool unhealthy_alerted = false;
    MachineStats stats;
  };
  /// Why the app cannot be handed over now ("deploy in progress", "worker 1/4321 is
  /// starting"); "" when it can: no operation runs or waits, every worker is ready or draining.
  std::string busy() const;
  Snapshot snapshot() const;
  /// In a machine that has no worker yet: takes the snapshot's workers and slots over as they
  /// were, arms the drain and kill timers of draining workers for what is left of them (one
  /// already past its drain_timeout was alerted by the image before), and staffs an empty slot.
  void restore(const Snapshot& s);
  const AppConfig& config() const { return app_; }
  const std::map<pid_t, Worker>& workers() const { return workers_; }
  const std::vector<Slot>& slots() const { return slots_; }
  const Worker* find(pid_t pid) const;
  /// Slots whose serving worker is ready: the app's capacity now.
  int ready_slots() const;
  Phase phase() const { return phase_; }
  bool reverting() const { return rollout_.reverting; }
  bool stopped() const { return stopped_; }
  bool shutting_down() const { return shutting_down_; }
  /// A deploy waiting for its fleet slot (not an operation meanwhile: others run): its release.
  const std::string* fleet_waiting() const { return waiting_ ? &waiting_->release : nullptr; }
  /// This host's turn in the fleet (/metrics): "waiting" for a slot, "rolling" or "baking" in
  /// the slot it holds, "idle" with none.
  const char* fleet_turn() const {
    if (waiting_) return "waiting";
    if (fleet_version_.empty()) return "idle";
    return phase_ == Phase::Baking ? "baking" : "rolling";
  }
  /// The running and the waiting operation, if any.
  const OpRequest* running() const { return running_ ? &*running_ : nullptr; }
  const OpRequest* pending() const { return pending_ ? &*pending_ : nullptr; }
  Health health() const { return health_; }
  /// What a rollout is at, for systemd's STATUS= and `agent status`: "rolling 1.2.0, batch 3/14",
  /// "reverting 1.2.0: <why>"; "" when no rollout runs.
  std::string progress() const;
  const MachineStats& stats() const { return stats_; }
  /// The last failed probe's detail ("GET /healthz: HTTP 500: ..."), "" when none failed yet.
  const std::string& last_probe_failure() const { return last_probe_failure_; }
  /// While baking: the release and the time left.
  std::optional<std::pair<std::string, base::Clock::duration>> baking() const;
  /// "role" of a worker for status: serving, incoming, draining, adopted.
  std::string role_of(const Worker& w) const;
  /// Says `line` in the log and to the running operation's requester.
  void say(const std::string& line);

 private:
  struct Rollout {
    OpRequest::Kind kind = OpRequest::Kind::Reload;
    std::string target, version;
    std::vector<int> todo, batch;
    std::map<int, std::string> previous;  // slot -> release it ran before being swapped
    std::vector<int> swapped;
    int batches_done = 0, batches_total = 0;
    bool reverting = false;
    std::string failure;
    std::string was_current;  // `current` when it began: what a failed bake goes back to
    std::string bad_release, bake_failure;  // set: this rollout takes a release that failed its bake out
    base::Clock::time_point started;
  };
  struct FleetWait {
    OpRequest op;
    std::string release, version;
    std::optional<FleetTurn> turn;  // it came while another operation ran
  };
  struct Bake {
    std::string release, previous, live_message;
    base::Clock::time_point until;
    int probes_ok = 0;
    base::EventLoop::Id timer = 0, tick = 0;
  };

  // Operations (operations.cc).
  void start_op(OpRequest op);
  void finish_op(bool ok, const std::string& message);
  void on_staged(const StageOutcome& s);
  void start_build(const std::string& release);
  void on_built(const std::string& release, const BuildOutcome& b);
  /// False: refused, and the operation finished; a deploy's release is journaled failed when
  /// `journal_refusal` (not when the release is the one a failed bake goes back to).
  bool preflight(const std::string& release, bool journal_refusal = true);
  bool reopen_sockets();
  void begin_rollout(OpRequest::Kind kind, const std::string& target, std::vector<int> slots, bool journal_refusal = true);
  void advance();
  void advance_rollout();
  void fail_rollout(const std::string& reason);
  void complete_rollout();
  /// A journal write about `release`, asked by the running operation's requester.
  JournalWrite journal_write(JournalWrite::Kind kind, const std::string& release, const std::string& reason = "") const;
  void record(JournalWrite write, std::function<void()> then);
  void record_failed(const std::string& release, const std::string& reason, std::function<void()> then);
  void apply_instances();
  std::vector<int> all_slots() const;
  void start_pending();

  // The fleet's gate (operations.cc).
  bool gated(OpRequest::Kind kind) const;
  void wait_for_fleet(const std::string& release);
  void on_fleet_turn(const std::string& version, const FleetTurn& turn);
  void resume_waiting();
  void abandon_waiting(const std::string& why);
  /// A failed rollout's or bake's alert: through the fleet's verdict when a slot is held.
  void failure_alert(Alert alert, const std::string& reason);

  // Bake (bake.cc).
  void start_bake(const std::string& release, const std::string& previous, const std::string& live_message);
  void bake_tick();
  void end_bake();
  void fail_bake(const std::string& reason);
  void finish_bake_rollback(const Rollout& ro);
  void stop_bake_timers();

  // A worker's life (worker_life.cc).
  Worker* get(pid_t pid);
  /// Cancels every timer a worker has armed (it exits, its pid is reused, we go away).
  void cancel_timers(const Worker& w);
  pid_t spawn(int slot, const std::string& release, bool incoming, std::string* err);
  void mark_ready(pid_t pid);
  void on_ready_timeout(pid_t pid);
  void drain(pid_t pid, const std::string& why);
  /// drain_timeout's alert and kill_timeout's SIGKILL, `elapsed` after the drain began.
  void arm_drain_timers(pid_t pid, base::Clock::duration elapsed);
  void forget(pid_t pid);
  void reconcile();
  void check_memory();
  /// A line of history for a worker that ended unasked.
  void crash_history(const std::string& detail, const std::string& release);
  void drain_adopted();
  void maybe_drain_adopted();
  std::string worker_name(const Worker& w) const;
  void maybe_empty();

  base::EventLoop& loop_;
  Effects& fx_;
  AppConfig app_;
  std::optional<AppConfig> next_app_;  // a config reload waiting for the running operation
  std::map<pid_t, Worker> workers_;
  std::vector<Slot> slots_;
  bool stopped_ = false, shutting_down_ = false;
  bool sockets_closed_ = false;  // by a stop; reopened by the next operation that starts workers
  Phase phase_ = Phase::Idle;
  std::optional<OpRequest> running_, pending_;
  base::Clock::time_point op_started_;
  Rollout rollout_;
  Bake bake_;
  std::optional<FleetWait> waiting_;
  MachineStats stats_;
  std::string deploy_result_;  // how the running deploy ends when it fails: refused, halted, bake_failed (else failed)
  std::string fleet_version_;  // the version whose fleet slot the running deploy holds
  bool fleet_rolled_ = false;  // ... and its rollout began: a failure now halts the version
  Health health_ = Health::Unknown;
  int probe_fails_ = 0;  // in a row
  bool unhealthy_alerted_ = false;  // an `unhealthy` alert went out; the next passing probe says `healthy`
  std::string last_probe_failure_;
  base::EventLoop::Id memory_timer_ = 0;
  std::function<void()> when_empty_;
  // Work posted to the loop checks this first: it expires with the machine.
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace agent
