#include "agent/orphans.h"

#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <sstream>

#include "agent/systemd.h"
#include "releases/fs.h"

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

unsigned long long process_start_time(pid_t pid) {
  std::string stat, err;
  if (pid <= 0 || !releases::read_file("/proc/" + std::to_string(pid) + "/stat", &stat, &err)) return 0;
  // "pid (comm) state ppid ...": comm may hold spaces and parentheses; the fields resume after
  // the last ')'. starttime is field 22, the 20th after it.
  size_t close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream in(stat.substr(close + 1));
  std::string field;
  for (int i = 3; i <= 22 && (in >> field); ++i)
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  return 0;
}

bool write_workers_record(const std::string& path, const std::vector<pid_t>& pids, std::string* err) {
  std::string text;
  for (pid_t p : pids)
    if (unsigned long long start = process_start_time(p)) text += std::to_string(p) + " " + std::to_string(start) + "\n";
  std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return *err = releases::errno_message("open", tmp), false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  int e = errno;
  ::close(fd);
  if (!ok) return errno = e, *err = releases::errno_message("write", tmp), false;
  if (::rename(tmp.c_str(), path.c_str()) != 0) return *err = releases::errno_message("rename", path), false;
  return true;
}

std::vector<Orphan> find_orphans(const std::string& path) {
  std::vector<Orphan> out;
  std::string text, err;
  if (!releases::read_file(path, &text, &err)) return out;
  std::istringstream in(text);
  long long pid = 0;
  unsigned long long start = 0;
  while (in >> pid >> start) {
    if (pid <= 1 || pid == ::getpid() || start == 0 || process_start_time(static_cast<pid_t>(pid)) != start) continue;
    int fd = open_pidfd(static_cast<pid_t>(pid));
    // Checked again through the pidfd: the pid cannot be reused while we hold it.
    if (fd < 0) continue;
    if (process_start_time(static_cast<pid_t>(pid)) != start) {
      ::close(fd);
      continue;
    }
    out.push_back({static_cast<pid_t>(pid), fd});
  }
  return out;
}

int take_listen_socket(const Orphan& o, size_t index, const std::string& canonical, std::string* err) {
  int fd = dup_from(o.pidfd, 3 + static_cast<int>(index));
  if (fd < 0) return *err = "pidfd_getfd(pid " + std::to_string(o.pid) + "): " + std::strerror(errno), -1;
  std::string got = canonical_address_of(fd);
  if (got != canonical) {
    ::close(fd);
    *err = "fd " + std::to_string(3 + index) + " of pid " + std::to_string(o.pid) + " is " +
           (got.empty() ? "not a listening stream socket" : "listening on " + got);
    return -1;
  }
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  return fd;
}

}  // namespace agent
