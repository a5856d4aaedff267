// An app handed from one image of the agent to the next (`agent upgrade`,
// agent/daemon/handoff.h): the machine's snapshot (snapshot.cc) and what the shell holds for
// each worker, its pidfd and its output pipes, whose fds stay open across execve. Times are
// the steady clock's (CLOCK_MONOTONIC), which execve does not reset.
#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include "agent/rollout/supervisor.h"

namespace agent {

namespace {

using nlohmann::json;

long long ticks(base::Clock::time_point t) { return static_cast<long long>(t.time_since_epoch().count()); }
base::Clock::time_point at(const json& j) { return base::Clock::time_point(base::Clock::duration(j.get<long long>())); }

json histogram_json(const Histogram& h) { return {{"counts", h.counts}, {"sum", h.sum}, {"count", h.count}}; }
void histogram_from(const json& j, Histogram* h) {
  auto counts = j.at("counts").get<std::vector<std::uint64_t>>();
  if (counts.size() == h->counts.size()) h->counts = counts;  // the same buckets, or none carried
  h->sum = j.at("sum").get<double>();
  h->count = j.at("count").get<std::uint64_t>();
}

const char* state_key(WorkerState s) { return s == WorkerState::Draining ? "draining" : s == WorkerState::Ready ? "ready" : "starting"; }
WorkerState state_of(const std::string& s) {
  return s == "draining" ? WorkerState::Draining : s == "ready" ? WorkerState::Ready : WorkerState::Starting;
}

}  // namespace

json snapshot_json(const AppMachine::Snapshot& s) {
  json workers = json::array(), slots = json::array();
  for (const auto& w : s.workers)
    workers.push_back({{"pid", w.pid}, {"slot", w.slot}, {"release", w.release}, {"state", state_key(w.state)},
                       {"started", ticks(w.started)}, {"ready_at", ticks(w.ready_at)}, {"drain_started", ticks(w.drain_started)}});
  for (const auto& sl : s.slots)
    slots.push_back({{"serving", sl.serving}, {"release", sl.release}, {"last_exit", sl.last_exit}, {"crashes", sl.crashes},
                     {"restarts", sl.restarts}, {"loop_alerted", sl.loop_alerted}});
  return {{"workers", workers},
          {"slots", slots},
          {"stopped", s.stopped},
          {"sockets_closed", s.sockets_closed},
          {"health", static_cast<int>(s.health)},
          {"probe_fails", s.probe_fails},
          {"unhealthy_alerted", s.unhealthy_alerted},
          {"deploys", s.stats.deploys},
          {"bakes", s.stats.bakes},
          {"restarts", s.stats.restarts},
          {"rollout", histogram_json(s.stats.rollout)},
          {"drain", histogram_json(s.stats.drain)}};
}

AppMachine::Snapshot snapshot_from_json(const json& j) {
  AppMachine::Snapshot s;
  for (const auto& w : j.at("workers")) {
    AppMachine::Worker& to = s.workers.emplace_back();
    to.pid = w.at("pid").get<pid_t>();
    to.slot = w.at("slot").get<int>();
    to.release = w.at("release").get<std::string>();
    to.state = state_of(w.at("state").get<std::string>());
    to.started = at(w.at("started"));
    to.ready_at = at(w.at("ready_at"));
    to.drain_started = at(w.at("drain_started"));
  }
  for (const auto& sl : j.at("slots")) {
    AppMachine::Slot& to = s.slots.emplace_back();
    to.serving = sl.at("serving").get<pid_t>();
    to.release = sl.at("release").get<std::string>();
    to.last_exit = sl.at("last_exit").get<std::string>();
    to.crashes = sl.at("crashes").get<int>();
    to.restarts = sl.at("restarts").get<int>();
    to.loop_alerted = sl.at("loop_alerted").get<bool>();
  }
  s.stopped = j.at("stopped").get<bool>();
  s.sockets_closed = j.at("sockets_closed").get<bool>();
  int health = j.at("health").get<int>();
  s.health = health == 1 ? Health::Healthy : health == 2 ? Health::Unhealthy : Health::Unknown;
  s.probe_fails = j.at("probe_fails").get<int>();
  s.unhealthy_alerted = j.at("unhealthy_alerted").get<bool>();
  s.stats.deploys = j.at("deploys").get<std::map<std::string, std::uint64_t>>();
  s.stats.bakes = j.at("bakes").get<std::map<std::string, std::uint64_t>>();
  s.stats.restarts = j.at("restarts").get<std::uint64_t>();
  histogram_from(j.at("rollout"), &s.stats.rollout);
  histogram_from(j.at("drain"), &s.stats.drain);
  return s;
}

std::string AppSupervisor::busy() const {
  if (!booted_) return "starting up";
  if (std::string b = machine_.busy(); !b.empty()) return b;
  if (store_busy_ || !store_jobs_.empty()) return "writing its release store";
  if (cancel_) return "staging or building a release";
  if (!threads_.empty()) return "writing its state (the workers record)";
  for (const auto& [pid, p] : procs_)
    if (p.adopted) return "a worker of a previous agent (pid " + std::to_string(pid) + ") is still to be drained";
  return "";
}

json AppSupervisor::handoff(std::vector<int>* keep) {
  json procs = json::array(), pipes = json::array();
  for (const auto& [pid, p] : procs_) {
    procs.push_back({{"pid", pid}, {"release_dir", p.release_dir}, {"path", p.path}, {"start_time", p.start_time}, {"pidfd", p.pidfd}});
    keep->push_back(p.pidfd);
  }
  for (const auto& [fd, p] : pipes_) {
    pipes.push_back({{"fd", fd}, {"pid", p->pid}, {"prefix", p->prefix}, {"partial", p->lines.partial()}});
    keep->push_back(fd);
  }
  if (log_ && !log_->flush(std::chrono::milliseconds(2000))) spdlog::warn("{}: app.log: lines still queued are lost with this image", app_.name);
  return {{"machine", snapshot_json(machine_.snapshot())}, {"procs", procs}, {"pipes", pipes}};
}

bool AppSupervisor::take_over(const json& state, std::string* err) {
  try {
    AppMachine::Snapshot snap = snapshot_from_json(state.at("machine"));
    for (const auto& j : state.at("procs")) {
      pid_t pid = j.at("pid").get<pid_t>();
      Process& p = procs_[pid];
      p.pid = pid;
      p.release_dir = j.at("release_dir").get<std::string>();
      p.path = j.at("path").get<std::string>();
      p.start_time = j.at("start_time").get<unsigned long long>();
      p.pidfd = j.at("pidfd").get<int>();
      ::fcntl(p.pidfd, F_SETFD, FD_CLOEXEC);  // only across the upgrade's execve were they not
      // Still our child: a worker that exited meanwhile is a zombie, and its pidfd is
      // readable at once, so its exit is seen (and reaped) like any other.
      p.pid_watch = loop_.add(p.pidfd, EPOLLIN, [this, pid](std::uint32_t) { on_process_exit(pid); });
    }
    for (const auto& j : state.at("pipes")) {
      int fd = j.at("fd").get<int>();
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      auto p = std::make_unique<OutputPipe>();
      p->fd = fd;
      p->pid = j.at("pid").get<pid_t>();
      p->prefix = j.at("prefix").get<std::string>();
      p->lines.set_partial(j.at("partial").get<std::string>());
      p->watch = loop_.add(fd, EPOLLIN, [this, fd](std::uint32_t) { read_output(fd); });
      pipes_[fd] = std::move(p);
    }
    sockets_closed_ = snap.sockets_closed;
    machine_.restore(snap);
  } catch (const std::exception& e) {
    return *err = std::string("the previous image's state of ") + app_.name + " is unreadable: " + e.what(), false;
  }
  taken_over_ = true;
  record_workers();
  return true;
}

}  // namespace agent
