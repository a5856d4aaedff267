// The machine handed from one image of the agent to the next (`agent upgrade`): the workers
// and slots as they are, so the new image goes on where the old one stopped, no worker
// restarted. Taken only when the app is quiet (busy() is ""): no operation, no worker
// starting, nothing adopted. What is in flight then is only time: a draining worker's
// drain_timeout and kill_timeout, which the new image arms again for what is left of them.
#include <spdlog/spdlog.h>

#include "agent/rollout/machine.h"

namespace agent {

std::string AppMachine::busy() const {
  if (running_) return std::string(op_name(running_->kind)) + " in progress" + (progress().empty() ? "" : " (" + progress() + ")");
  if (pending_) return std::string(op_name(pending_->kind)) + " waiting to run";
  if (waiting_) return "a deploy of " + waiting_->version + " waits for its fleet slot";
  if (shutting_down_) return "shutting down";
  for (const auto& [pid, w] : workers_) {
    if (w.adopted) return worker_name(w) + " is still to be drained";
    if (w.state == WorkerState::Starting) return worker_name(w) + " is starting";
  }
  return "";
}

AppMachine::Snapshot AppMachine::snapshot() const {
  Snapshot s;
  for (const auto& [pid, w] : workers_) s.workers.push_back(w);
  s.slots = slots_;
  s.stopped = stopped_;
  s.sockets_closed = sockets_closed_;
  s.health = health_;
  s.probe_fails = probe_fails_;
  s.unhealthy_alerted = unhealthy_alerted_;
  s.stats = stats_;
  return s;
}

void AppMachine::restore(const Snapshot& s) {
  stopped_ = s.stopped;
  sockets_closed_ = s.sockets_closed;
  health_ = s.health;
  probe_fails_ = s.probe_fails;
  unhealthy_alerted_ = s.unhealthy_alerted;
  stats_ = s.stats;
  // The previous image's timers are not ours: a slot's restart comes from reconcile() below,
  // a draining worker's timers are armed again here.
  for (size_t i = 0; i < slots_.size() && i < s.slots.size(); ++i) {
    slots_[i] = s.slots[i];
    slots_[i].incoming = 0;
    slots_[i].restart_timer = 0;
  }
  base::Clock::time_point now = loop_.now();
  std::vector<pid_t> extra;
  for (const Worker& from : s.workers) {
    Worker& w = workers_[from.pid] = from;
    w.ready_timer = w.delay_timer = w.drain_timer = w.kill_timer = 0;
    if (w.state == WorkerState::Draining) arm_drain_timers(w.pid, now - w.drain_started);
    else if (w.slot < 0 || w.slot >= static_cast<int>(slots_.size()) || slots_[static_cast<size_t>(w.slot)].serving != w.pid)
      extra.push_back(w.pid);  // serving no slot of this config: not expected, but not left behind
  }
  for (auto& slot : slots_)
    if (slot.serving && !workers_.count(slot.serving)) slot.serving = 0;  // staffed again below
  for (pid_t pid : extra) drain(pid, "it serves no slot of the config the new agent runs");
  spdlog::info("{}: took over {} worker(s) from the previous image of the agent", app_.name, s.workers.size());
  reconcile();
}

}  // namespace agent
