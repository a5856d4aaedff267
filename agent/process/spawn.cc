#include "agent/process/spawn.h"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <linux/close_range.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "agent/config/config.h"
#include "base/units.h"

namespace agent {
namespace {

enum Step : int { kSetsid = 1, kDupListen, kDupReady, kDevNull, kDupOutput, kSetgroups, kSetgid, kSetuid, kChdir, kExec };

struct ChildError {
  int step;
  int err;
};

const char* step_name(int step) {
  switch (step) {
    case kSetsid: return "setsid";
    case kDupListen: return "pass listen socket";
    case kDupReady: return "pass READY_FD";
    case kDevNull: return "open /dev/null";
    case kDupOutput: return "connect stdout/stderr";
    case kSetgroups: return "setgroups";
    case kSetgid: return "setgid";
    case kSetuid: return "setuid";
    case kChdir: return "chdir";
    case kExec: return "exec";
  }
  return "setup";
}

[[noreturn]] void child_fail(int errpipe, int step) {
  ChildError e{step, errno};
  [[maybe_unused]] auto n = ::write(errpipe, &e, sizeof e);
  ::_exit(127);
}

// Writes "LISTEN_PID=<pid>" into buf without allocating (we are between fork and exec).
void format_listen_pid(char* buf, pid_t pid) {
  const char prefix[] = "LISTEN_PID=";
  std::memcpy(buf, prefix, sizeof prefix - 1);
  char digits[24];
  int n = 0;
  do digits[n++] = static_cast<char>('0' + pid % 10); while ((pid /= 10) > 0);
  char* p = buf + sizeof prefix - 1;
  while (n > 0) *p++ = digits[--n];
  *p = '\0';
}

// Sets close-on-exec on every fd from `first` up. close_range(2) does it in one call (Linux
// 5.11); older kernels get the loop, bounded by the fd limit. No allocation: we are in a child.
void mark_cloexec_from(int first) {
  if (::syscall(SYS_close_range, static_cast<unsigned>(first), ~0U, CLOSE_RANGE_CLOEXEC) == 0) return;
  rlimit lim{};
  long top = ::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur != RLIM_INFINITY ? static_cast<long>(lim.rlim_cur) : 65536;
  for (long fd = first; fd < std::min(top, 1L << 20); ++fd) ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);
}

}  // namespace

bool spawn_process(const SpawnRequest& req, Spawned* out, std::string* err) {
  std::vector<char*> argv, envp;
  for (const auto& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : req.envp) envp.push_back(const_cast<char*>(e.c_str()));
  char listen_pid[48];
  if (!req.listen_fds.empty()) envp.push_back(listen_pid);
  envp.push_back(nullptr);
  std::vector<gid_t> groups = req.drop_to ? req.drop_to->groups : std::vector<gid_t>{};
  int nlisten = static_cast<int>(req.listen_fds.size());
  if (req.listen_fds.size() > kMaxListen)  // the config refuses more; never cut them silently
    return *err = "more than " + std::to_string(kMaxListen) + " listen sockets", false;
  int highest = 3 + nlisten + 1;

  int errpipe[2];
  if (::pipe2(errpipe, O_CLOEXEC) != 0) return *err = std::string("pipe: ") + std::strerror(errno), false;
  pid_t pid = ::fork();
  if (pid < 0) {
    *err = std::string("fork: ") + std::strerror(errno);
    ::close(errpipe[0]);
    ::close(errpipe[1]);
    return false;
  }
  if (pid == 0) {
    // The child: system calls only.
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    for (int s : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD}) ::signal(s, SIG_DFL);
    // The error pipe and /dev/null go above the fds we hand over first, so no dup2 below can
    // overwrite them (and /dev/null never lands on 0-2 with close-on-exec still set).
    int ep = ::fcntl(errpipe[1], F_DUPFD_CLOEXEC, highest);
    if (ep < 0) ::_exit(127);
    errpipe[1] = ep;
    if (::setsid() < 0) child_fail(errpipe[1], kSetsid);
    // Move every fd we pass above the target range first, so dup2 cannot clobber a source.
    int moved[kMaxListen];
    for (int i = 0; i < nlisten; ++i)
      if ((moved[i] = ::fcntl(req.listen_fds[static_cast<size_t>(i)], F_DUPFD_CLOEXEC, highest)) < 0) child_fail(errpipe[1], kDupListen);
    int ready = -1;
    if (req.ready_fd >= 0 && (ready = ::fcntl(req.ready_fd, F_DUPFD_CLOEXEC, highest)) < 0) child_fail(errpipe[1], kDupReady);
    int outfd = req.stdout_fd >= 0 ? ::fcntl(req.stdout_fd, F_DUPFD_CLOEXEC, highest) : -1;
    int errfd = req.stderr_fd >= 0 ? ::fcntl(req.stderr_fd, F_DUPFD_CLOEXEC, highest) : -1;
    for (int i = 0; i < nlisten; ++i)
      if (::dup2(moved[i], 3 + i) < 0) child_fail(errpipe[1], kDupListen);  // dup2 clears CLOEXEC
    if (ready >= 0 && ::dup2(ready, 3 + nlisten) < 0) child_fail(errpipe[1], kDupReady);
    int devnull_low = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    int devnull = devnull_low < 0 ? -1 : ::fcntl(devnull_low, F_DUPFD_CLOEXEC, highest);
    if (devnull < 0) child_fail(errpipe[1], kDevNull);
    if (::dup2(devnull, 0) < 0 || ::dup2(outfd >= 0 ? outfd : devnull, 1) < 0 || ::dup2(errfd >= 0 ? errfd : devnull, 2) < 0)
      child_fail(errpipe[1], kDupOutput);
    // Nothing else crosses exec: fds some library opened without close-on-exec (libcurl's
    // sockets on Debian 12, std::ifstream's files), taken by a thread while we forked, would
    // stay open in the worker for its whole life. Marked close-on-exec rather than closed, so
    // the error pipe still reports a failed step below.
    mark_cloexec_from(3 + nlisten + (ready >= 0 ? 1 : 0));
    if (req.drop_to) {
      if (::setgroups(groups.size(), groups.data()) != 0) child_fail(errpipe[1], kSetgroups);
      if (::setgid(req.drop_to->gid) != 0) child_fail(errpipe[1], kSetgid);
      if (::setuid(req.drop_to->uid) != 0) child_fail(errpipe[1], kSetuid);
    }
    if (::chdir(req.cwd.c_str()) != 0) child_fail(errpipe[1], kChdir);
    if (nlisten > 0) format_listen_pid(listen_pid, ::getpid());
    ::execve(req.path.c_str(), argv.data(), envp.data());
    child_fail(errpipe[1], kExec);
  }
  ::close(errpipe[1]);
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd < 0) {
    *err = std::string("pidfd_open: ") + std::strerror(errno);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    ::close(errpipe[0]);
    return false;
  }
  ::fcntl(pidfd, F_SETFD, FD_CLOEXEC);
  ::fcntl(errpipe[0], F_SETFL, O_NONBLOCK);
  *out = Spawned{pid, pidfd, errpipe[0]};
  return true;
}

std::optional<std::string> exec_failure(int errpipe, const std::string& cwd, const std::string& path) {
  if (errpipe < 0) return std::nullopt;
  ChildError e{};
  ssize_t n = ::read(errpipe, &e, sizeof e);
  ::close(errpipe);
  if (n != sizeof e) return std::nullopt;
  std::string what = step_name(e.step);
  if (e.step == kChdir) what += " " + cwd;
  if (e.step == kExec) what += " " + path;
  return what + ": " + std::strerror(e.err);
}

std::string describe_wait_status(int status) {
  if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return "killed by " + base::signal_name(WTERMSIG(status));
  return "stopped";
}

}  // namespace agent
