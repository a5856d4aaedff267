// The shell's side of a worker (supervisor.h): forking it with its launch environment, its
// pidfd, readiness fd and output pipes, the sd_notify socket, the workers record; each turned
// into an event of the machine (on_ready, on_ready_closed, on_exit).
#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <spdlog/spdlog.h>

#include "agent/process/spawn.h"
#include "agent/rollout/supervisor.h"
#include "releases/version.h"

namespace agent {


std::uint64_t AppSupervisor::rss_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

void AppSupervisor::release_plumbing(Process& p) {
  for (base::EventLoop::Id* watch : {&p.pid_watch, &p.ready_watch}) loop_.remove(std::exchange(*watch, 0));
  for (int* fd : {&p.pidfd, &p.errpipe, &p.ready_fd})
    if (*fd >= 0) ::close(std::exchange(*fd, -1));
}

LaunchContext AppSupervisor::launch_context(const std::string& release, int slot) const {
  LaunchContext ctx;
  ctx.release_dir = store_.release_dir(release);
  ctx.release_id = release;
  ctx.version = release_version(release);
  ctx.agent_environ = environ_;
  ctx.notify_socket = notify_.path();
  ctx.node_shim = find_node_shim(nullptr);
  ctx.worker = slot;
  return ctx;
}

pid_t AppSupervisor::spawn(int slot, const std::string& release, std::string* err) {
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

  pid_t pid = sp.pid;
  // A pid reused by the kernel may still name an adopted worker whose exit was not yet seen:
  // that one is gone (our fork got its pid), so its pidfd and watch go too.
  if (auto stale = procs_.find(pid); stale != procs_.end()) {
    release_plumbing(stale->second);
    procs_.erase(stale);
  }
  Process& p = procs_[pid];
  p.pid = pid;
  p.release_dir = ctx.release_dir;
  p.path = path;
  p.start_time = process_start_time(pid);
  p.pidfd = sp.pidfd;
  p.errpipe = sp.errpipe;
  p.ready_fd = ready[0];
  p.pid_watch = loop_.add(sp.pidfd, EPOLLIN, [this, pid](std::uint32_t) { on_process_exit(pid); });
  if (p.ready_fd >= 0) p.ready_watch = loop_.add(p.ready_fd, EPOLLIN, [this, pid](std::uint32_t) { on_ready_data(pid); });
  watch_output(out[0], slot, pid, "out");
  watch_output(errp[0], slot, pid, "err");
  return pid;
}

void AppSupervisor::adopt(std::vector<Orphan> orphans) {
  std::string pids;
  std::vector<pid_t> adopted;
  for (auto& o : orphans) {
    pids += (pids.empty() ? "" : ", ") + std::to_string(o.pid);
    Process& p = procs_[o.pid];
    p.pid = o.pid;
    p.adopted = true;
    p.start_time = o.start;
    p.pidfd = o.pidfd;
    // Not our child: its pidfd turns readable when it exits (there is no status to collect).
    // Watched from now on, so one that dies before it is drained is forgotten too.
    p.pid_watch = loop_.add(o.pidfd, EPOLLIN, [this, pid = o.pid](std::uint32_t) { on_process_exit(pid); });
    adopted.push_back(o.pid);
  }
  if (!adopted.empty())
    spdlog::warn("{}: {} worker(s) of a previous agent still running (pid {}): they serve until this agent's own "
                 "workers are up, then drain",
                 app_.name, adopted.size(), pids);
  machine_.adopt(adopted);
}

void AppSupervisor::signal(pid_t pid, int sig) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return;
  // An adopted worker is not our child: only its pidfd names it safely.
  if (it->second.adopted) pidfd_signal(it->second.pidfd, sig);
  else ::kill(pid, sig);
}

void AppSupervisor::kill(pid_t pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return;
  if (it->second.adopted) {
    pidfd_signal(it->second.pidfd, SIGKILL);
    return;
  }
  ::kill(-pid, SIGKILL);  // its process group: children must not keep the socket
  ::kill(pid, SIGKILL);
}

void AppSupervisor::ready_seen(pid_t pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return;
  Process& p = it->second;
  loop_.remove(std::exchange(p.ready_watch, 0));
  if (p.ready_fd >= 0) ::close(std::exchange(p.ready_fd, -1));
  if (p.errpipe >= 0) ::close(std::exchange(p.errpipe, -1));  // it exec'd: nothing more to learn there
}

std::uint64_t AppSupervisor::rss(pid_t pid) { return rss_of(pid); }

void AppSupervisor::workers_changed() {
  record_workers();
  maybe_empty();
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
    log_->write_line(releases::now_stamp() + " " + pipe.prefix + " " + std::string(line));
    if (line.find_first_not_of(" \t\r") == std::string_view::npos || !procs_.count(pipe.pid)) return;
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
  auto it = procs_.find(pid);
  if (it == procs_.end() || it->second.ready_fd < 0) return;
  Process& p = it->second;
  char buf[256];
  ssize_t n;
  bool got_newline = false;
  while ((n = ::read(p.ready_fd, buf, sizeof buf)) > 0)
    if (std::memchr(buf, '\n', static_cast<size_t>(n))) got_newline = true;
  if (got_newline) return machine_.on_ready(pid);
  if (n == 0) {  // closed without a newline: it can no longer report ready
    loop_.remove(std::exchange(p.ready_watch, 0));
    ::close(std::exchange(p.ready_fd, -1));
    machine_.on_ready_closed(pid);
  }
}

void AppSupervisor::on_process_exit(pid_t pid) {
  auto it = procs_.find(pid);
  if (it == procs_.end()) return;
  Process& p = it->second;
  std::string reason, output;
  if (!p.adopted) {
    int status = 0;
    ::waitpid(pid, &status, WNOHANG);
    reason = describe_wait_status(status);
    if (auto failed = exec_failure(p.errpipe, p.release_dir, p.path)) reason = "could not start: " + *failed;
    else output = last_output(pid);
    p.errpipe = -1;  // exec_failure closed it
  }
  recent_output_.erase(pid);
  release_plumbing(p);
  procs_.erase(it);
  machine_.on_exit(pid, reason, output);
}

void AppSupervisor::record_workers() {
  // A supervisor on its way out (shutdown, or its app removed by SIGHUP) leaves the record as
  // it was: its draining workers are still alive, and an app added again writes its own.
  if (shutting_down_) return;
  // Written off the loop (a create and a rename in the state directory wait behind a staging
  // thread's sync of that filesystem), one write at a time; changes made meanwhile are
  // written, all at once, right after.
  if (record_inflight_) {
    record_dirty_ = true;
    return;
  }
  std::vector<RecordedProcess> procs;
  for (const auto& [pid, p] : procs_) procs.push_back({pid, p.start_time});
  record_inflight_ = true;
  auto err = std::make_shared<std::string>();
  off_loop([path = store_.app_dir() + "/workers", procs, err] {
    if (write_workers_record(path, procs, err.get())) err->clear();
  }, [this, err] {
    record_inflight_ = false;
    if (err->empty()) {
      record_error_.clear();
    } else if (*err != record_error_) {  // once per distinct failure, not once per worker
      spdlog::error("{}: cannot record the workers ({}): a restart after a crash of the agent will not find them", app_.name, *err);
      record_error_ = *err;
    }
    if (std::exchange(record_dirty_, false)) record_workers();
  });
}

void AppSupervisor::on_notify() {
  notify_.read(app_.name, [this](pid_t pid) { return machine_.find(pid) != nullptr; }, [this](pid_t pid) { machine_.on_ready(pid); });
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
