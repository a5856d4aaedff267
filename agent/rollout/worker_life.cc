// A worker's life in AppMachine (machine.h): started, ready, crashed and restarted after a
// backoff, replaced over max_memory, drained with its stall alert and kill timer; workers of a
// previous agent adopted and drained. No I/O here: every effect goes through Effects.
#include <signal.h>

#include <spdlog/spdlog.h>

#include "agent/rollout/machine.h"
#include "agent/rollout/timing.h"
#include "releases/version.h"

namespace agent {

using namespace timing;

const char* worker_state_name(WorkerState s) {
  switch (s) {
    case WorkerState::Starting: return "starting";
    case WorkerState::Ready: return "ready";
    case WorkerState::Draining: return "draining";
  }
  return "?";
}

AppMachine::AppMachine(base::EventLoop& loop, Effects& fx, AppConfig app) : loop_(loop), fx_(fx), app_(std::move(app)) {
  slots_.resize(static_cast<size_t>(app_.instances));
  if (app_.max_memory > 0) memory_timer_ = loop_.after(kMemoryCheck, [this] { check_memory(); });
}

AppMachine::~AppMachine() {
  // Nothing armed on the loop may outlive us.
  for (auto& [pid, w] : workers_) cancel_timers(w);
  for (auto& slot : slots_) loop_.cancel(slot.restart_timer);
  loop_.cancel(memory_timer_);
  stop_bake_timers();
}

void AppMachine::cancel_timers(const Worker& w) {
  for (auto t : {w.ready_timer, w.delay_timer, w.drain_timer, w.kill_timer}) loop_.cancel(t);
}

AppMachine::Worker* AppMachine::get(pid_t pid) {
  auto it = workers_.find(pid);
  return it == workers_.end() ? nullptr : &it->second;
}

const AppMachine::Worker* AppMachine::find(pid_t pid) const {
  auto it = workers_.find(pid);
  return it == workers_.end() ? nullptr : &it->second;
}

std::string AppMachine::worker_name(const Worker& w) const {
  if (w.adopted) return "worker of the previous agent (pid " + std::to_string(w.pid) + ")";
  return "worker " + std::to_string(w.slot) + " (pid " + std::to_string(w.pid) + ", release " + w.release + ")";
}

int AppMachine::ready_slots() const {
  int n = 0;
  for (const auto& slot : slots_)
    if (const Worker* w = slot.serving ? find(slot.serving) : nullptr; w && w->state == WorkerState::Ready) ++n;
  return n;
}

std::string AppMachine::role_of(const Worker& w) const {
  if (w.adopted) return "adopted";
  if (w.state == WorkerState::Draining) return "draining";
  const Slot* slot = w.slot >= 0 && w.slot < static_cast<int>(slots_.size()) ? &slots_[static_cast<size_t>(w.slot)] : nullptr;
  return slot && slot->incoming == w.pid ? "incoming" : "serving";
}

pid_t AppMachine::spawn(int slot, const std::string& release, bool incoming, std::string* err) {
  pid_t pid = fx_.spawn(slot, release, err);
  if (!pid) return 0;
  // A pid reused by the kernel may still name an adopted worker whose exit was not yet seen.
  if (auto stale = workers_.find(pid); stale != workers_.end()) {
    cancel_timers(stale->second);
    workers_.erase(stale);
  }
  Worker& w = workers_[pid];
  w.slot = slot;
  w.pid = pid;
  w.release = release;
  w.started = loop_.now();
  w.ready_timer = loop_.after(app_.ready_timeout, [this, pid] { on_ready_timeout(pid); });
  if (app_.ready == ReadyMode::Delay) w.delay_timer = loop_.after(app_.ready_delay, [this, pid] { mark_ready(pid); });
  Slot& s = slots_[static_cast<size_t>(slot)];
  (incoming ? s.incoming : s.serving) = pid;  // an incoming worker's release becomes the slot's only when it takes over
  spdlog::info("{}: started worker {} (pid {}) on {}", app_.name, slot, pid, release);
  fx_.workers_changed();
  return pid;
}

void AppMachine::on_ready(pid_t pid) { mark_ready(pid); }

void AppMachine::on_ready_closed(pid_t pid) {
  if (Worker* w = get(pid)) w->ready_closed = true;
}

void AppMachine::mark_ready(pid_t pid) {
  Worker* w = get(pid);
  if (!w || w->adopted || w->state != WorkerState::Starting) return;
  w->state = WorkerState::Ready;
  w->ready_at = loop_.now();
  loop_.cancel(std::exchange(w->ready_timer, 0));
  loop_.cancel(std::exchange(w->delay_timer, 0));
  fx_.ready_seen(pid);
  say("worker " + std::to_string(w->slot) + " (pid " + std::to_string(pid) + ") ready in " + ms_text(w->ready_at - w->started));
  advance();
  // Crash restarts may bring ours up without an operation.
  loop_.post([this, alive = std::weak_ptr<bool>(alive_)] {
    if (!alive.expired()) maybe_drain_adopted();
  });
}

void AppMachine::on_ready_timeout(pid_t pid) {
  Worker* w = get(pid);
  if (!w || w->state != WorkerState::Starting) return;
  w->ready_timer = 0;
  std::string how = app_.ready == ReadyMode::Fd ? (w->ready_closed ? "it closed $READY_FD without writing a newline"
                                                                   : "it never wrote a newline to $READY_FD")
                  : app_.ready == ReadyMode::Notify ? "it never sent READY=1 to $NOTIFY_SOCKET" : "";
  std::string reason = worker_name(*w) + " not ready within " + base::format_duration(app_.ready_timeout) + (how.empty() ? "" : ": " + how);
  Slot& slot = slots_[static_cast<size_t>(w->slot)];
  if (slot.incoming == pid && phase_ == Phase::Rolling) return fail_rollout(reason);
  // A crash restart or a start that hangs: count it as a crash and try again later.
  if (slot.serving == pid) slot.serving = 0, slot.crashes++;
  drain(pid, "not ready in time");
  if (phase_ == Phase::Launching) return finish_op(false, reason);
  spdlog::warn("{}: {}", app_.name, reason);
  advance();
}

void AppMachine::on_exit(pid_t pid, const std::string& how, const std::string& last_output) {
  auto it = workers_.find(pid);
  if (it == workers_.end()) return;
  Worker gone = it->second;
  cancel_timers(gone);
  workers_.erase(it);
  fx_.workers_changed();
  if (gone.adopted) {
    spdlog::info("{}: worker of the previous agent (pid {}) exited", app_.name, pid);
    return maybe_empty();
  }
  std::string reason = how + (gone.state == WorkerState::Starting ? last_output : "");
  Slot* slot = gone.slot < static_cast<int>(slots_.size()) ? &slots_[static_cast<size_t>(gone.slot)] : nullptr;
  std::string name = worker_name(gone);
  if (gone.state == WorkerState::Draining) {
    stats_.drain.observe(std::chrono::duration<double>(loop_.now() - gone.drain_started).count());
    spdlog::info("{}: {} {} after draining {}", app_.name, name, reason, ms_text(loop_.now() - gone.drain_started));
  } else if (slot && slot->incoming == pid) {
    slot->incoming = 0;
    if (phase_ == Phase::Rolling)
      fail_rollout(name + (gone.state == WorkerState::Starting ? " exited before ready: " : " exited before taking over: ") + reason);
  } else if (slot && slot->serving == pid) {
    slot->serving = 0;
    if (phase_ == Phase::Baking && !stopped_ && !shutting_down_) {
      // During its bake a release does not get restarted: it goes back out (bake.cc).
      slot->restarts++;
      stats_.restarts++;
      slot->last_exit = releases::now_stamp().substr(11, 8) + " " + how + " (bake)";
      crash_history(name + " " + how + " during the bake (not restarted)", gone.release);
      fail_bake(name + " exited during the bake: " + how + last_output);
    } else if (!stopped_ && !shutting_down_) {
      bool healthy = gone.state == WorkerState::Ready && loop_.now() - gone.ready_at >= kHealthyPeriod;
      if (healthy) slot->crashes = 0, slot->loop_alerted = false;
      slot->crashes++;
      slot->restarts++;
      stats_.restarts++;
      spdlog::warn("{}: {} {}{}; restarting in {}", app_.name, name, reason,
                   gone.state == WorkerState::Starting ? " before ready" : "", base::format_duration(backoff(slot->crashes)));
      slot->last_exit = releases::now_stamp().substr(11, 8) + " " + how;
      crash_history(name + " " + reason + (gone.state == WorkerState::Starting ? " before ready" : "") + "; restarting in " +
                        base::format_duration(backoff(slot->crashes)),
                    gone.release);
      if (slot->crashes >= kCrashLoop && !slot->loop_alerted) {
        slot->loop_alerted = true;
        fx_.alert({app_.name, "crash_loop",
                   "worker " + std::to_string(gone.slot) + " crashed " + std::to_string(slot->crashes) + " times in a row (last: " + reason + ")",
                   "restarting with backoff, now " + base::format_duration(backoff(slot->crashes)) + "; see agent logs " + app_.name,
                   pid, gone.release});
      }
      // A start waits for every slot to be ready at once: a worker that dies meanwhile, before
      // or after its ready, ends it (the restarts go on), so the queue behind it is not held.
      if (phase_ == Phase::Launching)
        finish_op(false, name + (gone.state == WorkerState::Starting ? " exited before ready: " : " exited after ready: ") +
                             reason + " (restarting with backoff)");
    }
  }
  advance();
  reconcile();
  maybe_empty();
}

void AppMachine::drain(pid_t pid, const std::string& why) {
  Worker* w = get(pid);
  if (!w || w->state == WorkerState::Draining) return;
  w->state = WorkerState::Draining;
  w->drain_started = loop_.now();
  loop_.cancel(std::exchange(w->ready_timer, 0));
  loop_.cancel(std::exchange(w->delay_timer, 0));
  fx_.signal(pid, app_.drain_signal);
  say("draining " + worker_name(*w) + " with " + base::signal_name(app_.drain_signal) + ": " + why);
  arm_drain_timers(pid, base::Clock::duration::zero());
}

void AppMachine::arm_drain_timers(pid_t pid, base::Clock::duration elapsed) {
  Worker* w = get(pid);
  if (!w) return;
  std::string name = worker_name(*w), release = w->release;
  auto kill_timeout = app_.kill_timeout;
  auto left = [elapsed](base::Millis total) {
    return std::max(base::Millis::zero(), total - std::chrono::duration_cast<base::Millis>(elapsed));
  };
  if (!w->adopted && elapsed < app_.drain_timeout) {
    w->drain_timer = loop_.after(left(app_.drain_timeout), [this, pid, name, release, kill_timeout] {
      Worker* d = get(pid);
      if (!d) return;
      d->drain_timer = 0;
      std::string next = "waiting: kill_timeout = \"never\"";
      if (kill_timeout) {
        auto at = std::chrono::system_clock::now() + (*kill_timeout - app_.drain_timeout);
        next = "SIGKILL at " + releases::iso_time(std::chrono::system_clock::to_time_t(at)) + ", " +
               base::format_duration(*kill_timeout) + " after the drain began (kill_timeout)";
      }
      fx_.alert({app_.name, "drain_stalled", "drain of " + name + " stalled " + base::format_duration(app_.drain_timeout),
                 "still alive " + base::format_duration(app_.drain_timeout) + " after " + base::signal_name(app_.drain_signal) +
                     "; next: " + next + "; look: agent status " + app_.name,
                 pid, release});
    });
  }
  if (kill_timeout) {
    w->kill_timer = loop_.after(left(*kill_timeout), [this, pid, name, release, kill_timeout] {
      Worker* d = get(pid);
      if (!d) return;
      d->kill_timer = 0;
      fx_.kill(pid);
      if (d->adopted) {
        spdlog::warn("{}: {} still alive after kill_timeout: SIGKILL", app_.name, name);
        return;
      }
      fx_.alert({app_.name, "worker_killed", "killed " + name + " with SIGKILL after " + base::format_duration(*kill_timeout) + " of draining",
                 "requests still open on it were cut", pid, release});
    });
  }
}

// Keeps every slot staffed: a slot with no worker (a crash, a revert that lost one, a new
// slot) gets one after its backoff.
void AppMachine::reconcile() {
  // After a stop closed the sockets, only an operation (which binds them first) starts workers.
  if (stopped_ || shutting_down_ || sockets_closed_ || phase_ == Phase::Stopping) return;
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    if (slot.serving || slot.incoming || slot.restart_timer || slot.release.empty()) continue;
    slot.restart_timer = loop_.after(backoff(slot.crashes), [this, i] {
      if (i >= slots_.size()) return;
      Slot& s = slots_[i];
      s.restart_timer = 0;
      if (s.serving || s.incoming || stopped_ || shutting_down_) return;
      std::string err;
      if (!spawn(static_cast<int>(i), s.release, false, &err)) {
        spdlog::error("{}: restarting slot {}: {}", app_.name, i, err);
        s.crashes++;
        loop_.post([this, alive = std::weak_ptr<bool>(alive_)] {
          if (!alive.expired()) reconcile();
        });
      }
    });
  }
}

void AppMachine::crash_history(const std::string& detail, const std::string& release) {
  releases::HistoryEntry h;
  h.app = app_.name;
  h.op = "crash";
  h.ok = false;
  h.detail = detail;
  h.source = "agent";
  h.release = release;
  fx_.history(std::move(h));
}

void AppMachine::check_memory() {
  memory_timer_ = 0;
  if (app_.max_memory == 0 || shutting_down_) return;
  memory_timer_ = loop_.after(kMemoryCheck, [this] { check_memory(); });
  if (running_ || pending_) return;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Worker* w = slots_[i].serving ? find(slots_[i].serving) : nullptr;
    if (!w || w->state != WorkerState::Ready) continue;
    std::uint64_t rss = fx_.rss(w->pid);
    if (rss <= app_.max_memory) continue;
    fx_.alert({app_.name, "memory_replaced",
               worker_name(*w) + " uses " + base::format_size(rss) + ", over max_memory " + base::format_size(app_.max_memory),
               "replacing it with a fresh worker (zero downtime)", w->pid, w->release});
    slots_[i].last_exit = releases::now_stamp().substr(11, 8) + " replaced: " + base::format_size(rss) + " over max_memory";
    OpRequest op;
    op.kind = OpRequest::Kind::Replace;
    op.slot = static_cast<int>(i);
    op.source = "max_memory";
    submit(std::move(op));
    return;  // one at a time
  }
}

void AppMachine::adopt(const std::vector<pid_t>& pids) {
  for (pid_t pid : pids) {
    Worker& w = workers_[pid];
    w.pid = pid;
    w.adopted = true;
    w.state = WorkerState::Ready;
    w.started = w.ready_at = loop_.now();
  }
  fx_.workers_changed();
}

void AppMachine::maybe_drain_adopted() {
  if (running_ || slots_.empty()) return;
  for (const auto& slot : slots_) {
    const Worker* w = slot.serving ? find(slot.serving) : nullptr;
    if (!w || w->state != WorkerState::Ready) return;  // not yet as many of ours serving as configured
  }
  drain_adopted();
}

void AppMachine::drain_adopted() {
  std::vector<pid_t> pids;
  for (const auto& [pid, w] : workers_)
    if (w.adopted && w.state != WorkerState::Draining) pids.push_back(pid);
  for (pid_t pid : pids) drain(pid, "this agent's workers serve now");
}

void AppMachine::shutdown(std::function<void()> when_empty) {
  shutting_down_ = true;
  fx_.cancel_work();
  when_empty_ = std::move(when_empty);
  if (pending_ && pending_->done) pending_->done(false, "the agent is shutting down");
  pending_.reset();
  abandon_waiting("the agent is shutting down");
  if (!fleet_version_.empty()) fx_.fleet_abandon(std::exchange(fleet_version_, ""));
  if (running_) {
    if (running_->done) running_->done(false, "the agent is shutting down");
    running_.reset();
  }
  phase_ = Phase::Idle;
  stop_bake_timers();
  loop_.cancel(std::exchange(memory_timer_, 0));
  for (auto& slot : slots_) {
    loop_.cancel(std::exchange(slot.restart_timer, 0));
    slot.serving = slot.incoming = 0;
  }
  std::vector<pid_t> pids;
  for (const auto& [pid, w] : workers_)
    if (w.state != WorkerState::Draining) pids.push_back(pid);
  for (pid_t p : pids) drain(p, "agent shutting down");  // adopted ones too, up to kill_timeout
  maybe_empty();
}

void AppMachine::maybe_empty() {
  if (shutting_down_ && workers_.empty() && when_empty_) loop_.post(std::exchange(when_empty_, nullptr));
}

}  // namespace agent
