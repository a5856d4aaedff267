#include "agent/process/orphans.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <memory>
#include <sstream>

#include "base/listen.h"
#include "base/fs.h"

namespace agent {

// Through syscall(2): Debian 12's <sys/pidfd.h> (glibc 2.36) declares these without C linkage.
int pidfd_signal(int pidfd, int sig) { return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0)); }

namespace {
int open_pidfd(pid_t pid) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd >= 0) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}
int dup_from(int pidfd, int target) { return static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd, target, 0)); }

}  // namespace

std::vector<std::string> stat_fields(pid_t pid) {
  std::vector<std::string> out;
  std::string stat, err;
  if (pid < 0 || !base::read_file(pid == 0 ? "/proc/self/stat" : "/proc/" + std::to_string(pid) + "/stat", &stat, &err)) return out;
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return out;
  std::istringstream in(stat.substr(close + 1));
  for (std::string f; in >> f;) out.push_back(f);
  return out;
}

unsigned long long process_start_time(pid_t pid) {
  if (pid <= 0) return 0;
  auto f = stat_fields(pid);  // starttime is field 22
  return f.size() > 19 ? std::strtoull(f[19].c_str(), nullptr, 10) : 0;
}

namespace {
// Start times count from boot, and the state directory outlives a reboot: the record is only
// good for the boot it was written in.
std::string boot_id() {
  std::string id, err;
  base::read_file("/proc/sys/kernel/random/boot_id", &id, &err);
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id.empty() ? "unknown" : id;
}

pid_t parent_of(pid_t pid) {
  auto f = stat_fields(pid);  // ppid is field 4
  return f.size() > 1 ? static_cast<pid_t>(std::strtol(f[1].c_str(), nullptr, 10)) : 0;
}
}  // namespace

bool write_workers_record(const std::string& path, const std::vector<RecordedProcess>& procs, std::string* err) {
  std::string text = "boot " + boot_id() + "\n";
  for (const auto& p : procs)
    if (p.pid > 0 && p.start) text += std::to_string(p.pid) + " " + std::to_string(p.start) + "\n";
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return *err = base::errno_message("open", tmp), false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  int e = errno;
  ::close(fd);
  if (!ok) return errno = e, *err = base::errno_message("write", tmp), false;
  if (::rename(tmp.c_str(), path.c_str()) != 0) return *err = base::errno_message("rename", path), false;
  return true;
}

std::vector<Orphan> find_orphans(const std::string& path) {
  std::vector<Orphan> out;
  std::string text, err;
  if (!base::read_file(path, &text, &err)) return out;
  std::istringstream in(text);
  std::string word, boot;
  if (!(in >> word >> boot) || word != "boot" || boot != boot_id()) return out;
  long long pid = 0;
  unsigned long long start = 0;
  while (in >> pid >> start) {
    if (pid <= 1 || pid == ::getpid() || start == 0 || process_start_time(static_cast<pid_t>(pid)) != start) continue;
    if (parent_of(static_cast<pid_t>(pid)) == ::getpid()) continue;  // ours already
    int fd = open_pidfd(static_cast<pid_t>(pid));
    // Checked again through the pidfd: the pid cannot be reused while we hold it.
    if (fd < 0) continue;
    if (process_start_time(static_cast<pid_t>(pid)) != start) {
      ::close(fd);
      continue;
    }
    out.push_back({static_cast<pid_t>(pid), start, fd});
  }
  return out;
}

int take_listen_socket(const Orphan& o, const std::string& canonical, std::string* err) {
  // Handed over at fd 3.., but the app may have moved it: look at every socket it holds.
  std::string dir = "/proc/" + std::to_string(o.pid) + "/fd";
  std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(dir.c_str()), ::closedir);
  if (!d) return *err = base::errno_message("open", dir), -1;
  std::string why = "no socket listening on " + canonical;
  while (const dirent* e = ::readdir(d.get())) {
    char* end = nullptr;
    long n = std::strtol(e->d_name, &end, 10);
    if (*end || n < 0) continue;
    char target[64] = {};
    std::string link = dir + "/" + e->d_name;
    if (::readlink(link.c_str(), target, sizeof target - 1) <= 0 || std::strncmp(target, "socket:", 7) != 0) continue;
    int fd = dup_from(o.pidfd, static_cast<int>(n));
    if (fd < 0) {
      why = "pidfd_getfd(pid " + std::to_string(o.pid) + "): " + std::strerror(errno);
      if (errno == EPERM || errno == ESRCH) break;
      continue;
    }
    if (base::canonical_address_of(fd) == canonical) return fd;  // pidfd_getfd sets FD_CLOEXEC
    ::close(fd);
  }
  *err = why;
  return -1;
}

void stop_orphans(const std::vector<Orphan>& orphans, int sig) {
  auto wait_all = [&](int ms) {
    std::vector<pollfd> fds;
    for (const auto& o : orphans) fds.push_back({o.pidfd, POLLIN, 0});
    auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    while (true) {
      bool all = true;
      for (auto& p : fds) all = all && (p.revents & POLLIN);
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()).count();
      if (all || left <= 0) return all;
      ::poll(fds.data(), fds.size(), static_cast<int>(left));
    }
  };
  for (const auto& o : orphans) pidfd_signal(o.pidfd, sig);
  if (wait_all(10'000)) return;
  for (const auto& o : orphans) pidfd_signal(o.pidfd, SIGKILL);
  wait_all(2'000);
}

double cpu_seconds_of(pid_t pid) {
  auto f = stat_fields(pid);
  if (f.size() < 13) return -1;
  double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
  return (std::stod(f[11]) + std::stod(f[12])) / ticks;  // utime, stime (fields 14, 15)
}

}  // namespace agent
