#include "hooks/build.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <algorithm>
#include <deque>

#include "agent/process/spawn.h"
#include "base/log_file.h"

namespace hooks {

namespace {
constexpr size_t kTailLines = 20;
constexpr base::Millis kTermGrace{3000};  // after SIGTERM on timeout, SIGKILL
constexpr size_t kMaxLoggedLines = 10'000;     // beyond this, only the tail is kept
constexpr size_t kDrainBudget = 1 << 20;       // output read after the shell exited
constexpr base::Millis kDrainTime{200};
}  // namespace

std::vector<std::string> build_environment(const std::vector<std::string>& worker_envp) {
  std::vector<std::string> out;
  for (const auto& kv : worker_envp) {
    std::string_view name = std::string_view(kv).substr(0, kv.find('='));
    if (name.starts_with("LISTEN_") || name == "READY_FD" || name == "NOTIFY_SOCKET" || name == "APP_WORKER" ||
        name.starts_with("AGENT_"))
      continue;
    out.push_back(kv);
  }
  return out;
}

BuildResult run_build(const BuildRequest& req) {
  BuildResult res;
  auto began = std::chrono::steady_clock::now();
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) return res.message = std::string("pipe: ") + std::strerror(errno), res;
  agent::SpawnRequest sp;
  sp.path = "/bin/sh";
  sp.argv = {"sh", "-c", req.command};
  sp.envp = req.envp;
  sp.stdout_fd = out[1];
  sp.stderr_fd = out[1];
  sp.cwd = req.cwd;
  sp.drop_to = req.drop_to ? &*req.drop_to : nullptr;
  agent::Spawned child;
  std::string err;
  if (!agent::spawn_process(sp, &child, &err)) {
    ::close(out[0]);
    ::close(out[1]);
    return res.message = err, res;
  }
  ::close(out[1]);

  std::deque<std::string> tail;
  base::LineSplitter lines;
  size_t lines_seen = 0;
  auto emit = [&](std::string_view line) {
    std::string l(line);
    ++lines_seen;
    if (req.on_line && lines_seen <= kMaxLoggedLines) req.on_line(l);
    if (req.on_line && lines_seen == kMaxLoggedLines + 1) req.on_line("(more build output: only its last lines are kept)");
    tail.push_back(std::move(l));
    if (tail.size() > kTailLines) tail.pop_front();
  };
  auto deadline = began + req.timeout;
  std::optional<std::chrono::steady_clock::time_point> killed_at;
  std::string stop_reason;
  bool eof = false, reaped = false;
  int status = 0;
  for (;;) {
    auto now = std::chrono::steady_clock::now();
    bool cancelled = req.cancel && req.cancel->load();
    if (stop_reason.empty() && (now >= deadline || cancelled)) {
      stop_reason = cancelled ? "stopped: the agent is shutting down"
                              : "timed out after " + base::format_duration(req.timeout) + " (build_timeout)";
      ::kill(-child.pid, SIGTERM);  // its own session: everything it started
      killed_at = now;
    }
    if (killed_at && now - *killed_at >= kTermGrace) ::kill(-child.pid, SIGKILL);
    pollfd fds[2] = {{eof ? -1 : out[0], POLLIN, 0}, {child.pidfd, POLLIN, 0}};
    int n = ::poll(fds, 2, 100);
    if (n < 0 && errno != EINTR) break;
    if (!eof && (fds[0].revents & (POLLIN | POLLHUP | POLLERR))) {
      char buf[8192];
      ssize_t r = ::read(out[0], buf, sizeof buf);
      if (r > 0) lines.feed(std::string_view(buf, static_cast<size_t>(r)), emit);
      else if (r == 0 || (errno != EINTR && errno != EAGAIN)) eof = true;
    }
    // Done when the shell has exited and its output is drained (a background child still
    // holding the pipe does not keep the build alive past the shell: it is killed below).
    if (fds[1].revents & POLLIN) {
      if (::waitpid(child.pid, &status, WNOHANG) == child.pid) {
        reaped = true;
        break;
      }
    }
  }
  // Whatever the build left running dies with it: a background child that kept writing would
  // otherwise keep the pipe full forever. Then what is buffered is read, within a budget.
  ::kill(-child.pid, SIGKILL);
  if (!reaped) ::waitpid(child.pid, &status, 0);
  ::fcntl(out[0], F_SETFL, O_NONBLOCK);
  char buf[8192];
  ssize_t r;
  size_t budget = kDrainBudget;
  auto drain_until = std::chrono::steady_clock::now() + kDrainTime;
  while (budget > 0 && std::chrono::steady_clock::now() < drain_until && (r = ::read(out[0], buf, sizeof buf)) > 0) {
    lines.feed(std::string_view(buf, static_cast<size_t>(r)), emit);
    budget -= std::min(budget, static_cast<size_t>(r));
  }
  lines.flush(emit);
  ::close(out[0]);
  ::close(child.pidfd);
  auto failed_step = agent::exec_failure(child.errpipe, req.cwd, sp.path);
  res.tail.assign(tail.begin(), tail.end());
  res.took = std::chrono::duration_cast<base::Millis>(std::chrono::steady_clock::now() - began);
  if (failed_step) res.message = *failed_step;
  else if (!stop_reason.empty()) res.message = stop_reason;
  else if (WIFEXITED(status) && WEXITSTATUS(status) == 0) res.ok = true, res.message = "done in " + base::format_duration(res.took);
  else res.message = agent::describe_wait_status(status);
  return res;
}

}  // namespace hooks
