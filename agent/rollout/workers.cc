#include "agent/rollout/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstring>
#include <utility>
#include <spdlog/spdlog.h>

#include "agent/process/spawn.h"
#include "agent/rollout/supervisor_util.h"
#include "releases/version.h"

// One worker's life: spawning it with its launch environment, its readiness, its output, its
// exit (a crash, or the end of a drain), the drain itself, the memory check, sd_notify.
namespace agent {

using namespace supervisor_util;

// ---------------------------------------------------------------------------------------------
// Workers

void AppSupervisor::release_plumbing(Worker& w) {
  for (base::EventLoop::Id* t : {&w.ready_timer, &w.delay_timer, &w.drain_timer, &w.kill_timer}) loop_.cancel(std::exchange(*t, 0));
  for (base::EventLoop::Id* watch : {&w.pid_watch, &w.ready_watch}) loop_.remove(std::exchange(*watch, 0));
  for (int* fd : {&w.pidfd, &w.errpipe, &w.ready_fd})
    if (*fd >= 0) ::close(std::exchange(*fd, -1));
}

AppSupervisor::Worker* AppSupervisor::find(pid_t pid) {
  auto it = workers_.find(pid);
  return it == workers_.end() ? nullptr : it->second.get();
}

std::string AppSupervisor::version_of(const std::string& release) const {
  std::string v, raw, err;
  return releases::read_version(store_.release_dir(release), app_.watch, &v, &raw, &err) ? v : "";
}

LaunchContext AppSupervisor::launch_context(const std::string& release, int slot) const {
  LaunchContext ctx;
  ctx.release_dir = store_.release_dir(release);
  ctx.release_id = release;
  ctx.version = version_of(release);
  ctx.agent_environ = environ_;
  ctx.notify_socket = notify_.path();
  ctx.node_shim = find_node_shim(nullptr);
  ctx.worker = slot;
  return ctx;
}

std::string AppSupervisor::worker_name(const Worker& w) const {
  return "worker " + std::to_string(w.slot) + " (pid " + std::to_string(w.pid) + ", release " + w.release + ")";
}

pid_t AppSupervisor::spawn_worker(int slot, const std::string& release, bool incoming, std::string* err) {
  // The environment is built now, from the config as it is now: nothing is cached.
  LaunchContext ctx = launch_context(release, slot);
  LaunchEnv env;
  std::string path;
  if (!account(&ctx.account, err) || !LaunchEnv::build(app_, ctx, &env, err) ||
      !resolve_command(app_.command[0], env, ctx.release_dir, ctx.account, &path, err))
    return 0;

  int ready[2] = {-1, -1}, out[2] = {-1, -1}, errp[2] = {-1, -1};
  auto close_all = [&] {
    for (int fd : {ready[0], ready[1], out[0], out[1], errp[0], errp[1]})
      if (fd >= 0) ::close(fd);
  };
  if ((app_.ready == ReadyMode::Fd && ::pipe2(ready, O_CLOEXEC | O_NONBLOCK) != 0) || ::pipe2(out, O_CLOEXEC) != 0 ||
      ::pipe2(errp, O_CLOEXEC) != 0) {
    *err = std::string("pipe: ") + std::strerror(errno);
    close_all();
    return 0;
  }
  // The worker's ends block as usual; ours do not.
  ::fcntl(out[0], F_SETFL, O_NONBLOCK);
  ::fcntl(errp[0], F_SETFL, O_NONBLOCK);

  SpawnRequest req;
  req.path = path;
  req.argv = app_.command;
  req.envp = env.envp();
  req.listen_fds = listen_fds_;
  req.ready_fd = ready[1];
  req.stdout_fd = out[1];
  req.stderr_fd = errp[1];
  req.cwd = ctx.release_dir;
  bool drop = ::geteuid() == 0 && ctx.account.uid != 0;
  req.drop_to = drop ? &ctx.account : nullptr;
  Spawned sp;
  if (!spawn_process(req, &sp, err)) {
    close_all();
    return 0;
  }
  for (int fd : {ready[1], out[1], errp[1]})
    if (fd >= 0) ::close(fd);

  auto w = std::make_unique<Worker>();
  w->slot = slot;
  w->pid = sp.pid;
  w->release = release;
  w->release_dir = ctx.release_dir;
  w->path = path;
  w->started = base::Clock::now();
  w->start_time = process_start_time(sp.pid);
  w->pidfd = sp.pidfd;
  w->errpipe = sp.errpipe;
  w->ready_fd = ready[0];
  pid_t pid = sp.pid;
  w->pid_watch = loop_.add(sp.pidfd, EPOLLIN, [this, pid](std::uint32_t) { on_exit(pid); });
  if (w->ready_fd >= 0) w->ready_watch = loop_.add(w->ready_fd, EPOLLIN, [this, pid](std::uint32_t) { on_ready_data(pid); });
  w->ready_timer = loop_.after(app_.ready_timeout, [this, pid] { on_ready_timeout(pid); });
  if (app_.ready == ReadyMode::Delay) w->delay_timer = loop_.after(app_.ready_delay, [this, pid] { mark_ready(pid); });
  watch_output(out[0], slot, pid, "out");
  watch_output(errp[0], slot, pid, "err");
  workers_[pid] = std::move(w);
  record_workers();
  Slot& s = slots_[static_cast<size_t>(slot)];
  (incoming ? s.incoming : s.serving) = pid;  // an incoming worker's release becomes the slot's only when it takes over
  spdlog::info("{}: started worker {} (pid {}) on {}", app_.name, slot, pid, release);
  return pid;
}

void AppSupervisor::watch_output(int fd, int slot, pid_t pid, const char* stream) {
  auto p = std::make_unique<OutputPipe>();
  p->fd = fd;
  p->pid = pid;
  p->prefix = std::to_string(slot) + "/" + std::to_string(pid) + " " + stream;
  p->watch = loop_.add(fd, EPOLLIN, [this, fd](std::uint32_t) { read_output(fd); });
  pipes_[fd] = std::move(p);
}

void AppSupervisor::read_output(int fd) {
  auto it = pipes_.find(fd);
  if (it == pipes_.end()) return;
  OutputPipe& pipe = *it->second;
  auto emit = [&](std::string_view line) {
    log_->write_line(now_stamp() + " " + pipe.prefix + " " + std::string(line));
    if (line.find_first_not_of(" \t\r") == std::string_view::npos || !find(pipe.pid)) return;
    auto& recent = recent_output_[pipe.pid];
    recent.emplace_back(line.substr(0, 300));
    if (recent.size() > 20) recent.erase(recent.begin());
  };
  char buf[16384];
  // A few reads per wakeup: a worker that never stops writing must not starve the loop. The
  // fd stays readable, so epoll calls back for the rest.
  for (int reads = 0; reads < 4; ++reads) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      pipe.lines.feed(std::string_view(buf, static_cast<size_t>(n)), emit);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
    pipe.lines.flush(emit);  // EOF (or error): the worker and all its children closed it
    loop_.remove(pipe.watch);
    ::close(fd);
    pipes_.erase(it);
    return;
  }
}

std::string AppSupervisor::last_output(pid_t pid) {
  // The exit can be seen before the pipes are read: read what is left first.
  std::vector<int> fds;
  for (const auto& [fd, p] : pipes_)
    if (p->pid == pid) fds.push_back(fd);
  for (int fd : fds)
    for (int i = 0; i < 16 && pipes_.count(fd); ++i) read_output(fd);
  auto it = recent_output_.find(pid);
  if (it == recent_output_.end()) return "";
  // What a person needs from a crash is its headline: stack frames and code excerpts are
  // indented, and Node ends with its version banner; the log file has everything.
  std::vector<std::string> headline;
  for (const auto& l : it->second) {
    if (l[0] == ' ' || l[0] == '\t' || l.starts_with("Node.js v")) continue;
    headline.push_back(l);
  }
  if (headline.empty()) return "";
  if (headline.size() > 2) headline.erase(headline.begin(), headline.end() - 2);
  std::string out;
  for (const auto& l : headline) out += (out.empty() ? "" : " | ") + l;
  return "; last output: " + out;
}

void AppSupervisor::on_ready_data(pid_t pid) {
  Worker* w = find(pid);
  if (!w || w->ready_fd < 0) return;
  char buf[256];
  ssize_t n;
  bool got_newline = false;
  while ((n = ::read(w->ready_fd, buf, sizeof buf)) > 0)
    if (std::memchr(buf, '\n', static_cast<size_t>(n))) got_newline = true;
  if (got_newline) return mark_ready(pid);
  if (n == 0) {  // closed without a newline: it can no longer report ready
    w->ready_eof = true;
    loop_.remove(w->ready_watch);
    w->ready_watch = 0;
    ::close(w->ready_fd);
    w->ready_fd = -1;
  }
}

void AppSupervisor::mark_ready(pid_t pid) {
  Worker* w = find(pid);
  if (!w || w->state != WorkerState::Starting) return;
  w->state = WorkerState::Ready;
  w->ready_at = base::Clock::now();
  if (w->ready_timer) loop_.cancel(w->ready_timer), w->ready_timer = 0;
  if (w->delay_timer) loop_.cancel(w->delay_timer), w->delay_timer = 0;
  if (w->ready_watch) loop_.remove(w->ready_watch), w->ready_watch = 0;
  if (w->ready_fd >= 0) ::close(w->ready_fd), w->ready_fd = -1;
  if (w->errpipe >= 0) ::close(w->errpipe), w->errpipe = -1;  // it exec'd: nothing more to learn there
  say("worker " + std::to_string(w->slot) + " (pid " + std::to_string(pid) + ") ready in " + ms_text(w->ready_at - w->started));
  loop_.post([this] {
    advance();
    maybe_drain_orphans();  // crash restarts may bring ours up without an operation
  });
}

void AppSupervisor::on_ready_timeout(pid_t pid) {
  Worker* w = find(pid);
  if (!w || w->state != WorkerState::Starting) return;
  w->ready_timer = 0;
  std::string how = app_.ready == ReadyMode::Fd ? (w->ready_eof ? "it closed $READY_FD without writing a newline"
                                                                : "it never wrote a newline to $READY_FD")
                  : app_.ready == ReadyMode::Notify ? "it never sent READY=1 to $NOTIFY_SOCKET" : "";
  std::string reason = worker_name(*w) + " not ready within " + base::format_duration(app_.ready_timeout) + (how.empty() ? "" : ": " + how);
  Slot& slot = slots_[static_cast<size_t>(w->slot)];
  if (slot.incoming == pid && phase_ == Phase::Rolling) return fail_rollout(reason);
  // A crash restart or a start that hangs: count it as a crash and try again later.
  if (slot.serving == pid) slot.serving = 0, slot.crashes++;
  drain(pid, "not ready in time");
  if (phase_ == Phase::Starting) return finish_op(false, reason);
  spdlog::warn("{}: {}", app_.name, reason);
  loop_.post([this] { advance(); });
}

void AppSupervisor::on_exit(pid_t pid) {
  Worker* w = find(pid);
  if (!w) return;
  int status = 0;
  ::waitpid(pid, &status, WNOHANG);
  std::string reason = describe_wait_status(status);
  if (auto failed = exec_failure(w->errpipe, w->release_dir, w->path)) reason = "could not start: " + *failed;
  else if (w->state == WorkerState::Starting) reason += last_output(pid);
  recent_output_.erase(pid);
  w->errpipe = -1;  // exec_failure closed it
  release_plumbing(*w);
  auto gone = std::move(workers_[pid]);  // freed at the end of this handler
  workers_.erase(pid);
  record_workers();

  Slot* slot = gone->slot < static_cast<int>(slots_.size()) ? &slots_[static_cast<size_t>(gone->slot)] : nullptr;
  std::string name = worker_name(*gone);
  if (gone->state == WorkerState::Draining) {
    spdlog::info("{}: {} {} after draining {}", app_.name, name, reason, ms_text(base::Clock::now() - gone->drain_started));
  } else if (slot && slot->incoming == pid) {
    slot->incoming = 0;
    if (phase_ == Phase::Rolling)
      fail_rollout(name + (gone->state == WorkerState::Starting ? " exited before ready: " : " exited before taking over: ") + reason);
  } else if (slot && slot->serving == pid) {
    slot->serving = 0;
    if (!stopped_ && !shutting_down_) {
      bool healthy = gone->state == WorkerState::Ready && base::Clock::now() - gone->ready_at >= kHealthyPeriod;
      if (healthy) slot->crashes = 0, slot->loop_alerted = false;
      slot->crashes++;
      slot->restarts++;
      spdlog::warn("{}: {} {}{}; restarting in {}", app_.name, name, reason,
                   gone->state == WorkerState::Starting ? " before ready" : "", base::format_duration(backoff(slot->crashes)));
      if (slot->crashes >= kCrashLoop && !slot->loop_alerted) {
        slot->loop_alerted = true;
        alerts_.raise({app_.name, "crash_loop",
                       "worker " + std::to_string(gone->slot) + " crashed " + std::to_string(slot->crashes) + " times in a row (last: " + reason + ")",
                       "restarting with backoff, now " + base::format_duration(backoff(slot->crashes)) + "; see agent logs " + app_.name,
                       pid, gone->release});
      }
      // A start waits for every slot to be ready at once: a worker that dies meanwhile, before
      // or after its ready, ends it (the restarts go on), so the queue behind it is not held.
      if (phase_ == Phase::Starting)
        finish_op(false, name + (gone->state == WorkerState::Starting ? " exited before ready: " : " exited after ready: ") +
                             reason + " (restarting with backoff)");
    }
  }
  loop_.post([this] { advance(); });
  reconcile();
  maybe_empty();
}

void AppSupervisor::drain(pid_t pid, const std::string& why) {
  Worker* w = find(pid);
  if (!w || w->state == WorkerState::Draining) return;
  w->state = WorkerState::Draining;
  w->drain_started = base::Clock::now();
  if (w->ready_timer) loop_.cancel(w->ready_timer), w->ready_timer = 0;
  ::kill(pid, app_.drain_signal);
  say("draining " + worker_name(*w) + " with " + base::signal_name(app_.drain_signal) + ": " + why);
  std::string name = worker_name(*w), release = w->release;
  auto kill_timeout = app_.kill_timeout;
  w->drain_timer = loop_.after(app_.drain_timeout, [this, pid, name, release, kill_timeout] {
    Worker* d = find(pid);
    if (!d) return;
    d->drain_timer = 0;
    std::string next = "waiting: kill_timeout = \"never\"";
    if (kill_timeout) {
      auto at = std::chrono::system_clock::now() + (*kill_timeout - app_.drain_timeout);
      next = "SIGKILL at " + releases::iso_time(std::chrono::system_clock::to_time_t(at)) + ", " +
             base::format_duration(*kill_timeout) + " after the drain began (kill_timeout)";
    }
    alerts_.raise({app_.name, "drain_stalled",
                   "drain of " + name + " stalled " + base::format_duration(app_.drain_timeout),
                   "still alive " + base::format_duration(app_.drain_timeout) + " after " + base::signal_name(app_.drain_signal) +
                       "; next: " + next + "; look: agent status " + app_.name,
                   pid, release});
  });
  if (kill_timeout) {
    w->kill_timer = loop_.after(*kill_timeout, [this, pid, name, release, kill_timeout] {
      Worker* d = find(pid);
      if (!d) return;
      d->kill_timer = 0;
      ::kill(-pid, SIGKILL);  // its process group: children must not keep the socket
      ::kill(pid, SIGKILL);
      alerts_.raise({app_.name, "worker_killed", "killed " + name + " with SIGKILL after " + base::format_duration(*kill_timeout) + " of draining",
                     "requests still open on it were cut", pid, release});
    });
  }
}

void AppSupervisor::check_memory() {
  memory_timer_ = 0;
  if (app_.max_memory == 0 || shutting_down_) return;
  memory_timer_ = loop_.after(kMemoryCheck, [this] { check_memory(); });
  if (running_ || pending_) return;
  for (size_t i = 0; i < slots_.size(); ++i) {
    const Worker* w = slots_[i].serving ? find(slots_[i].serving) : nullptr;
    if (!w || w->state != WorkerState::Ready) continue;
    std::uint64_t rss = rss_of(w->pid);
    if (rss <= app_.max_memory) continue;
    alerts_.raise({app_.name, "memory_replaced",
                   worker_name(*w) + " uses " + base::format_size(rss) + ", over max_memory " + base::format_size(app_.max_memory),
                   "replacing it with a fresh worker (zero downtime)", w->pid, w->release});
    OpRequest op;
    op.kind = OpRequest::Kind::Replace;
    op.slot = static_cast<int>(i);
    op.source = "max_memory";
    submit(std::move(op));
    return;  // one at a time
  }
}

void AppSupervisor::on_notify() {
  notify_.read(app_.name, [this](pid_t pid) { return find(pid) != nullptr; }, [this](pid_t pid) { mark_ready(pid); });
}

void AppSupervisor::refresh_account() {
  Account a;
  account_err_.clear();
  if (lookup_account(app_, &a, &account_err_)) account_ = std::move(a);
  else account_.reset();
  std::string err;
  if (account_ && !notify_.set_owner(account_->uid, account_->gid, &err)) spdlog::error("{}: {}", app_.name, err);
}

bool AppSupervisor::account(Account* out, std::string* err) {
  if (!account_) refresh_account();
  if (!account_) return *err = account_err_, false;
  *out = *account_;
  return true;
}

}  // namespace agent
