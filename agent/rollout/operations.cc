// The operations of AppMachine (machine.h): one at a time, the latest waiting request wins;
// a deploy's pipeline (stage -> build -> preflight -> roll -> commit | abort) and the rolling
// swap itself. No I/O here: every effect goes through Effects.
#include <algorithm>
#include <spdlog/spdlog.h>

#include "agent/rollout/machine.h"
#include "agent/rollout/timing.h"
#include "base/units.h"

namespace agent {

namespace {

// Deploys and rollbacks are journaled against their release; the other operations run what
// is already current.
bool marks_release(OpRequest::Kind k) { return k == OpRequest::Kind::Deploy || k == OpRequest::Kind::Rollback; }

std::string nothing_deployed(const std::string& app) { return "nothing is deployed yet: agent deploy " + app + " --from DIR"; }

}  // namespace

const char* op_name(OpRequest::Kind k) {
  switch (k) {
    case OpRequest::Kind::Deploy: return "deploy";
    case OpRequest::Kind::Reload: return "reload";
    case OpRequest::Kind::Rollback: return "rollback";
    case OpRequest::Kind::Start: return "start";
    case OpRequest::Kind::Stop: return "stop";
    case OpRequest::Kind::Restart: return "restart";
    case OpRequest::Kind::Replace: return "replace";
  }
  return "?";
}

std::string AppMachine::progress() const {
  if (phase_ != Phase::Rolling) return "";
  if (rollout_.reverting) return "reverting " + rollout_.version + ": " + rollout_.failure;
  return "rolling " + rollout_.version + ", batch " + std::to_string(std::min(rollout_.batches_done + 1, rollout_.batches_total)) + "/" +
         std::to_string(rollout_.batches_total);
}

void AppMachine::say(const std::string& line) {
  spdlog::info("{}: {}", app_.name, line);
  if (running_ && running_->progress) running_->progress(line);
}

void AppMachine::submit(OpRequest op) {
  if (shutting_down_) {
    if (op.done) op.done(false, "the agent is shutting down");
    return;
  }
  if (op.kind == OpRequest::Kind::Replace && (running_ || pending_)) return;  // that work replaces it anyway
  // A newer deploy or a rollback replaces a deploy waiting for its fleet slot; the other
  // operations run beside it (they never wait on etcd).
  if (waiting_ && (op.kind == OpRequest::Kind::Deploy || op.kind == OpRequest::Kind::Rollback))
    abandon_waiting(std::string("superseded by a newer request (") + op_name(op.kind) + ")");
  if (!running_) return start_op(std::move(op));
  if (pending_ && pending_->done) pending_->done(false, std::string("superseded by a newer request (") + op_name(op.kind) + ")");
  if (op.progress) op.progress(std::string("queued: waiting for the running ") + op_name(running_->kind) + " of " + app_.name);
  pending_ = std::move(op);
}

void AppMachine::start_op(OpRequest op) {
  // A deploy or rollback that starts (also from the queue) replaces a deploy waiting for its
  // fleet slot: the latest wins.
  if (waiting_ && (op.kind == OpRequest::Kind::Deploy || op.kind == OpRequest::Kind::Rollback))
    abandon_waiting(std::string("superseded by a newer request (") + op_name(op.kind) + ")");
  if (!op.restart) op_started_ = loop_.now();
  running_ = std::move(op);
  fleet_rolled_ = false;
  deploy_result_.clear();
  const OpRequest& r = *running_;
  switch (r.kind) {
    case OpRequest::Kind::Deploy: {
      stopped_ = false;
      phase_ = Phase::Staging;
      say(r.source == "git" ? "deploying " + r.revision + " from " + app_.git : "staging " + r.from);
      return fx_.stage(r, [this, alive = std::weak_ptr<bool>(alive_)](const StageOutcome& s) {
        if (!alive.expired()) on_staged(s);
      });
    }
    case OpRequest::Kind::Reload: {
      auto cur = fx_.current();
      if (!cur) return finish_op(false, nothing_deployed(app_.name));
      stopped_ = false;
      return begin_rollout(r.kind, *cur, all_slots());
    }
    case OpRequest::Kind::Rollback: {
      // The target comes from the journal, read after whatever is still being written.
      phase_ = Phase::Disk;
      return fx_.rollback_target(r.steps, r.to, [this, alive = std::weak_ptr<bool>(alive_)](bool ok, const std::string& target,
                                                                                            const std::string& err) {
        if (alive.expired() || !running_ || phase_ != Phase::Disk) return;  // cancelled by a shutdown meanwhile
        if (!ok) return finish_op(false, err);
        say("rolling back to " + target);
        stopped_ = false;
        begin_rollout(OpRequest::Kind::Rollback, target, all_slots());
      });
    }
    case OpRequest::Kind::Replace: {
      int s = r.slot;
      if (s < 0 || s >= static_cast<int>(slots_.size()) || slots_[static_cast<size_t>(s)].release.empty())
        return finish_op(false, "no such slot");
      return begin_rollout(r.kind, slots_[static_cast<size_t>(s)].release, {s});
    }
    case OpRequest::Kind::Start: {
      auto cur = fx_.current();
      if (!cur) return finish_op(false, nothing_deployed(app_.name));
      stopped_ = false;
      phase_ = Phase::Launching;
      if (!reopen_sockets() || !preflight(*cur)) return;
      for (size_t i = 0; i < slots_.size(); ++i) {
        Slot& slot = slots_[i];
        if (slot.serving || slot.incoming) continue;
        slot.release = *cur;  // a start runs what is current, whatever a slot ran before
        loop_.cancel(std::exchange(slot.restart_timer, 0));
        std::string err;
        if (!spawn(static_cast<int>(i), slot.release, false, &err)) return finish_op(false, err);
      }
      say("starting " + std::to_string(slots_.size()) + " workers on " + *cur);
      return advance();
    }
    case OpRequest::Kind::Stop:
    case OpRequest::Kind::Restart: {
      stopped_ = true;
      phase_ = Phase::Stopping;
      for (auto& slot : slots_) {
        loop_.cancel(std::exchange(slot.restart_timer, 0));
        for (pid_t* p : {&slot.serving, &slot.incoming})
          if (*p) drain(std::exchange(*p, 0), "stopping");
      }
      say("stopping: draining " + std::to_string(workers_.size()) + " workers");
      return advance();
    }
  }
}

void Histogram::observe(double seconds) {
  size_t i = 0;
  while (i < bounds.size() && seconds > bounds[i]) ++i;
  counts[i]++;
  sum += seconds;
  count++;
}

void AppMachine::finish_op(bool ok, const std::string& message) {
  phase_ = Phase::Idle;
  if (!running_) return;
  if (running_->kind == OpRequest::Kind::Deploy) stats_.deploys[ok ? "ok" : deploy_result_.empty() ? "failed" : deploy_result_]++;
  // The verdict of a turn in the fleet: done, or failed (the version halts fleet-wide). A
  // refusal before any worker was touched (preflight, sockets) says nothing of the version:
  // the slot is given back instead.
  if (!fleet_version_.empty()) {
    std::string v = std::exchange(fleet_version_, "");
    if (ok || fleet_rolled_) fx_.fleet_finish(v, ok, message, std::nullopt);
    else fx_.fleet_abandon(v);
  }
  releases::HistoryEntry h;
  h.app = app_.name;
  h.op = running_->restart ? "restart" : op_name(running_->kind);
  h.ok = ok;
  h.detail = message;
  h.uid = running_->uid;
  h.source = running_->source;
  h.seconds = std::chrono::duration<double>(loop_.now() - op_started_).count();
  // The release it was about: the target of its rollout, or else (a first deploy starts every
  // worker at once; start and stop have none) what is current.
  if (rollout_.started >= op_started_ && !rollout_.target.empty()) h.release = rollout_.target;
  else if (ok || running_->kind == OpRequest::Kind::Stop) h.release = fx_.current().value_or("");
  fx_.history(std::move(h));
  OpRequest op = std::move(*running_);
  running_.reset();
  if (ok) spdlog::info("{}: {} done: {}", app_.name, op_name(op.kind), message);
  else spdlog::warn("{}: {} failed: {}", app_.name, op_name(op.kind), message);
  // This agent's workers serve now: the previous agent's may go. After a failure they keep
  // serving, until as many of ours as configured are ready (maybe_drain_adopted).
  if (ok) drain_adopted();
  if (op.done) op.done(ok, message);
  if (next_app_) {
    app_ = std::move(*next_app_);
    next_app_.reset();
    fx_.config_applied(app_);
    apply_instances();
  }
  if (pending_) {
    start_pending();
  } else if (waiting_ && waiting_->turn) {
    loop_.post([this, alive = std::weak_ptr<bool>(alive_)] {
      if (!alive.expired() && !running_ && waiting_ && waiting_->turn) resume_waiting();
    });
  }
  reconcile();
}

void AppMachine::start_pending() {
  OpRequest next = std::move(*pending_);
  pending_.reset();
  loop_.post([this, alive = std::weak_ptr<bool>(alive_), next = std::move(next)]() mutable {
    if (alive.expired()) return;
    if (!running_) start_op(std::move(next));
    else submit(std::move(next));
  });
}

void AppMachine::record(JournalWrite write, std::function<void()> then) {
  phase_ = Phase::Disk;
  fx_.journal(write, [alive = std::weak_ptr<bool>(alive_), then = std::move(then)](bool, const std::string&) {
    if (!alive.expired()) then();
  });
}

JournalWrite AppMachine::journal_write(JournalWrite::Kind kind, const std::string& release, const std::string& reason) const {
  JournalWrite w;
  w.kind = kind;
  w.release = release;
  w.reason = reason;
  w.uid = running_ ? running_->uid : -1;
  return w;
}

void AppMachine::record_failed(const std::string& release, const std::string& reason, std::function<void()> then) {
  record(journal_write(JournalWrite::Kind::Failed, release, reason), std::move(then));
}

// stage -> build
void AppMachine::on_staged(const StageOutcome& s) {
  if (!running_ || phase_ != Phase::Staging) return;  // cancelled by a shutdown meanwhile
  if (!s.ok) {
    deploy_result_ = "refused";
    fx_.alert({app_.name, "deploy_refused", "deploy refused: " + s.error, "nothing running was touched", 0, ""});
    JournalWrite w;
    w.kind = JournalWrite::Kind::Refused;
    w.reason = s.error;
    w.request.source = running_->source;
    w.request.revision = s.revision.empty() ? running_->revision : s.revision;
    w.request.uid = running_->uid;
    return record(std::move(w), [this, err = s.error] { finish_op(false, "refused: " + err); });
  }
  say("staged " + s.release + " (version " + s.version + ")");
  if (!app_.build.empty()) return start_build(s.release);
  begin_rollout(OpRequest::Kind::Deploy, s.release, all_slots());
}

// The build runs in the staged release before any worker starts on it. Nothing running is
// touched: a failed build marks the release failed and the old workers keep serving.
void AppMachine::start_build(const std::string& release) {
  phase_ = Phase::Building;
  fx_.build(release, [this, alive = std::weak_ptr<bool>(alive_), release](const BuildOutcome& b) {
    if (!alive.expired()) on_built(release, b);
  });
}

// build -> preflight -> roll
void AppMachine::on_built(const std::string& release, const BuildOutcome& b) {
  if (!running_ || phase_ != Phase::Building) return;  // cancelled by a shutdown meanwhile
  if (b.ok) {
    say("build " + b.message);
    return begin_rollout(OpRequest::Kind::Deploy, release, all_slots());
  }
  std::string why = "build failed: " + b.message;
  if (!b.tail.empty()) {
    why += "; last output:";
    size_t from = b.tail.size() > 5 ? b.tail.size() - 5 : 0;
    for (size_t i = from; i < b.tail.size(); ++i) why += (i == from ? " " : " | ") + b.tail[i];
  }
  deploy_result_ = "refused";
  fx_.alert({app_.name, "deploy_refused", why + " (release " + release + ")", "nothing running was touched; see agent logs " + app_.name, 0, release});
  record_failed(release, why, [this, why] { finish_op(false, "refused: " + why); });
}

// The launch environment builds and the command resolves, before any worker is touched.
bool AppMachine::preflight(const std::string& release, bool journal_refusal) {
  std::string err, resolved;
  if (fx_.preflight(release, &resolved, &err)) {
    say("preflight: " + app_.command[0] + " -> " + resolved);
    return true;
  }
  std::string why = "preflight of " + release + ": " + err;
  if (running_ && running_->kind == OpRequest::Kind::Deploy && deploy_result_.empty()) deploy_result_ = "refused";
  fx_.alert({app_.name, "deploy_refused", why, "nothing running was touched; see agent env " + app_.name + " --release " + release, 0, release});
  if (journal_refusal && running_ && running_->kind == OpRequest::Kind::Deploy) {
    record_failed(release, err, [this, why] { finish_op(false, "refused: " + why); });
    return false;
  }
  finish_op(false, "refused: " + why);
  return false;
}

bool AppMachine::reopen_sockets() {
  if (!sockets_closed_) return true;
  std::string err;
  if (!fx_.open_sockets(&err)) {
    finish_op(false, "cannot listen again: " + err);
    return false;
  }
  sockets_closed_ = false;
  return true;
}

std::vector<int> AppMachine::all_slots() const {
  std::vector<int> all(slots_.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  return all;
}

void AppMachine::begin_rollout(OpRequest::Kind kind, const std::string& target, std::vector<int> slots, bool journal_refusal) {
  if (!reopen_sockets() || !preflight(target, journal_refusal)) return;
  if (gated(kind)) return wait_for_fleet(target);
  if (!fleet_version_.empty()) fleet_rolled_ = true;  // from here a failure is the version's
  if (kind == OpRequest::Kind::Deploy && running_ && running_->no_fleet && fx_.in_fleet()) {
    say("deploying past the fleet's gate (--no-fleet): the other hosts are not asked");
    fx_.journal(journal_write(JournalWrite::Kind::Note, target, "deployed past the fleet's gate (--no-fleet)"), [](bool, const std::string&) {});
  }
  rollout_ = Rollout{};
  rollout_.started = loop_.now();
  rollout_.kind = kind;
  rollout_.target = target;
  rollout_.version = fx_.version_of(target);
  rollout_.was_current = fx_.current().value_or("");
  rollout_.todo = std::move(slots);
  int surge = std::max(1, app_.max_surge);
  rollout_.batches_total = (static_cast<int>(rollout_.todo.size()) + surge - 1) / surge;
  phase_ = Phase::Rolling;
  say("rolling " + target + " onto " + std::to_string(rollout_.todo.size()) + " worker" +
      (rollout_.todo.size() == 1 ? "" : "s") + ", " + std::to_string(surge) + " at a time");
  advance();
}

// Moves the running operation forward as far as the workers' states allow. Posted after every
// event that could matter; safe to call any number of times.
void AppMachine::advance() {
  loop_.post([this, alive = std::weak_ptr<bool>(alive_)] {
    if (alive.expired()) return;
    switch (phase_) {
      case Phase::Idle:
      case Phase::Staging:
      case Phase::Building:
      case Phase::Disk:
      case Phase::Baking:
        return reconcile();
      case Phase::Launching: {
        for (const auto& slot : slots_) {
          const Worker* w = slot.serving ? find(slot.serving) : nullptr;
          if (!w || w->state != WorkerState::Ready) return;
        }
        return finish_op(true, "running " + std::to_string(slots_.size()) + " workers on " + (slots_.empty() ? "" : slots_[0].release));
      }
      case Phase::Stopping: {
        for (const auto& [pid, w] : workers_)
          if (!w.adopted) return;
        if (running_ && running_->kind == OpRequest::Kind::Restart) {
          say("all workers stopped; starting again");
          OpRequest op = std::move(*running_);
          op.kind = OpRequest::Kind::Start;
          op.restart = true;
          running_.reset();
          return start_op(std::move(op));
        }
        if (!sockets_closed_) {
          // Stopped: its addresses are closed so clients are refused at once rather than left
          // waiting in a queue nobody accepts from. start binds them again.
          fx_.close_sockets();
          sockets_closed_ = true;
        }
        return finish_op(true, "stopped");
      }
      case Phase::Rolling:
        return advance_rollout();
    }
  });
}

void AppMachine::advance_rollout() {
  Rollout& ro = rollout_;
  if (ro.batch.empty()) {
    if (ro.todo.empty()) return complete_rollout();
    size_t n = std::min(ro.todo.size(), static_cast<size_t>(std::max(1, app_.max_surge)));
    std::vector<int> batch(ro.todo.begin(), ro.todo.begin() + static_cast<long>(n));
    ro.todo.erase(ro.todo.begin(), ro.todo.begin() + static_cast<long>(n));
    std::string started;
    for (int s : batch) {
      std::string release = ro.reverting ? ro.previous[s] : ro.target;
      std::string err;
      pid_t pid = spawn(s, release, true, &err);
      if (!pid) return fail_rollout("starting a worker for slot " + std::to_string(s) + ": " + err);
      ro.batch.push_back(s);
      started += (started.empty() ? "" : ", ") + std::to_string(s) + " (pid " + std::to_string(pid) + ")";
    }
    say(std::string(ro.reverting ? "reverting" : "batch " + std::to_string(ro.batches_done + 1) + "/" + std::to_string(ro.batches_total)) +
        ": starting slot" + (batch.size() == 1 ? " " : "s ") + started + " on " + (ro.reverting ? ro.previous[batch[0]] : ro.target));
    return;
  }
  for (int s : ro.batch) {
    const Worker* w = find(slots_[static_cast<size_t>(s)].incoming);
    if (!w || w->state != WorkerState::Ready) return;  // still waiting
  }
  // The whole batch is ready: each new worker takes its slot, the old one drains.
  for (int s : ro.batch) {
    Slot& slot = slots_[static_cast<size_t>(s)];
    pid_t old = slot.serving;
    if (!ro.reverting) ro.previous[s] = slot.release;  // "" when the slot never ran anything
    slot.serving = slot.incoming;
    slot.incoming = 0;
    slot.release = ro.reverting ? ro.previous[s] : ro.target;
    if (!ro.reverting) ro.swapped.push_back(s);
    if (old) drain(old, "replaced by pid " + std::to_string(slot.serving));
  }
  ro.batch.clear();
  ro.batches_done++;
  advance();
}

// abort: the batch's incoming workers drain, and the slots already swapped are swapped back
// with the same rolling swap (old release, new worker, wait ready, then drain).
void AppMachine::fail_rollout(const std::string& reason) {
  Rollout& ro = rollout_;
  for (int s : ro.batch) {
    Slot& slot = slots_[static_cast<size_t>(s)];
    if (slot.incoming) drain(slot.incoming, "rollout failed");
    slot.incoming = 0;
  }
  ro.batch.clear();
  if (ro.reverting) {
    // The old release does not start either: keep whatever serves, and say so loudly.
    fx_.alert({app_.name, "rollout_failed", "reverting " + ro.target + " failed too: " + reason,
               "the workers that still run keep serving; see agent status " + app_.name, 0, ro.target});
    std::string message = ro.failure + "; and reverting failed: " + reason;
    if (!ro.bad_release.empty()) {
      Rollout gone = std::exchange(rollout_, Rollout{});
      gone.failure = message;
      return finish_bake_rollback(gone);
    }
    if (!marks_release(ro.kind)) return finish_op(false, message);
    return record_failed(ro.target, ro.failure, [this, message] { finish_op(false, message); });
  }
  say("failed: " + reason + (ro.swapped.empty() ? "" : "; swapping " + std::to_string(ro.swapped.size()) + " slots back"));
  ro.failure = reason;
  ro.reverting = true;
  ro.todo.clear();
  for (auto it = ro.swapped.rbegin(); it != ro.swapped.rend(); ++it) {
    Slot& slot = slots_[static_cast<size_t>(*it)];
    if (!ro.previous[*it].empty()) {
      ro.todo.push_back(*it);
      continue;
    }
    // Nothing ran here before (a first deploy): going back means running nothing.
    if (slot.serving) drain(slot.serving, "rollout failed; nothing to go back to");
    slot.serving = 0;
    slot.release.clear();
  }
  advance();
}

// commit (or the end of an abort): `current` and the journal are written on the store thread;
// the operation ends when they are, so its requester never hears "live" before the disk says so.
void AppMachine::complete_rollout() {
  Rollout ro = std::move(rollout_);
  rollout_ = Rollout{};
  phase_ = Phase::Idle;
  stats_.rollout.observe(std::chrono::duration<double>(loop_.now() - ro.started).count());
  if (!ro.bad_release.empty()) return finish_bake_rollback(ro);
  if (!ro.failure.empty()) {
    auto reverted = [this, ro] {
      auto cur = fx_.current();
      failure_alert({app_.name, "rollout_failed",
                     std::string(op_name(ro.kind)) + " of " + ro.target + " failed and was reverted: " + ro.failure,
                     "the previous workers kept serving; current is still " + (cur ? *cur : std::string("unset")) +
                         "; see agent releases " + app_.name,
                     0, ro.target},
                    "rollout failed: " + ro.failure);
      finish_op(false, "reverted: " + ro.failure);
    };
    if (!marks_release(ro.kind)) return reverted();
    return record_failed(ro.target, ro.failure, reverted);
  }
  auto live = [this, ro] {
    auto took = timing::ms_text(loop_.now() - op_started_);
    if (ro.kind == OpRequest::Kind::Replace)
      return finish_op(true, "replaced slot " + std::to_string(ro.swapped.empty() ? -1 : ro.swapped[0]));
    std::string message = "live: " + ro.target + " (version " + ro.version + ") on " + std::to_string(slots_.size()) + " workers in " + took;
    // A deploy is watched a while longer before it counts as good (bake.cc). This agent's
    // workers serve now: a previous agent's go at once, not after the bake.
    if (ro.kind == OpRequest::Kind::Deploy && app_.bake.count() > 0) {
      drain_adopted();
      return start_bake(ro.target, ro.was_current, message);
    }
    finish_op(true, message);
  };
  if (!marks_release(ro.kind)) return live();
  JournalWrite w = journal_write(ro.kind == OpRequest::Kind::Deploy ? JournalWrite::Kind::Activate : JournalWrite::Kind::RollbackTo,
                                 ro.target);
  phase_ = Phase::Disk;
  fx_.journal(w, [this, alive = std::weak_ptr<bool>(alive_), ro, live](bool ok, const std::string& err) {
    if (alive.expired()) return;
    if (!ok) {
      fx_.alert({app_.name, "rollout_failed", "workers run " + ro.target + " but recording it failed: " + err,
                 "current was not switched; fix the state directory and run agent reload " + app_.name, 0, ro.target});
      return finish_op(false, "workers run " + ro.target + " but " + err);
    }
    // Queued behind the activation and before the next staging: it can never remove a
    // release another operation is about to use.
    std::set<std::string> in_use;
    for (const auto& [pid, wk] : workers_) in_use.insert(wk.release);
    // What a failed bake goes back to must still be there, whatever keep_releases says.
    if (ro.kind == OpRequest::Kind::Deploy && app_.bake.count() > 0 && !ro.was_current.empty()) in_use.insert(ro.was_current);
    fx_.prune(in_use);
    live();
  });
}

void AppMachine::set_config(AppConfig app) {
  if (running_) {
    next_app_ = std::move(app);  // applied by finish_op
    return;
  }
  app_ = std::move(app);
  fx_.config_applied(app_);
  apply_instances();
  reconcile();
}

void AppMachine::apply_instances() {
  size_t want = static_cast<size_t>(app_.instances);
  while (slots_.size() > want) {
    Slot& slot = slots_.back();
    loop_.cancel(slot.restart_timer);
    for (pid_t p : {slot.serving, slot.incoming})
      if (p) drain(p, "instances lowered to " + std::to_string(want));
    slots_.pop_back();
  }
  auto cur = slots_.size() < want ? fx_.current() : std::nullopt;
  while (slots_.size() < want) {
    slots_.emplace_back();
    if (cur) slots_.back().release = *cur;
  }
  if (app_.max_memory > 0 && !memory_timer_) memory_timer_ = loop_.after(timing::kMemoryCheck, [this] { check_memory(); });
}

}  // namespace agent
