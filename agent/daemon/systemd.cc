#include "agent/daemon/systemd.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace agent {

namespace {
std::string g_notify_socket;  // captured once at start, before any thread
}

std::optional<std::chrono::microseconds> capture_notify_socket() {
  if (const char* s = std::getenv("NOTIFY_SOCKET")) g_notify_socket = s;
  std::optional<std::chrono::microseconds> watchdog;
  const char* usec = std::getenv("WATCHDOG_USEC");
  const char* pid = std::getenv("WATCHDOG_PID");
  if (usec && (!pid || std::strtol(pid, nullptr, 10) == ::getpid())) {
    long long v = std::strtoll(usec, nullptr, 10);
    if (v > 0) watchdog = std::chrono::microseconds(v);
  }
  for (const char* v : {"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"}) ::unsetenv(v);
  return watchdog;
}

const char* journal_priority(int level) {
  static const char* const kPrefix[] = {"<7>", "<7>", "<6>", "<4>", "<3>", "<2>"};  // trace debug info warn err critical
  return level >= 0 && level < 6 ? kPrefix[level] : "<6>";
}

bool notify_socket_set() { return !g_notify_socket.empty(); }
const std::string& notify_socket_path() { return g_notify_socket; }
void restore_notify_socket(const std::string& path) { g_notify_socket = path; }

bool journal_stream_is(const char* value, int fd) {
  if (!value) return false;
  unsigned long long dev = 0, ino = 0;
  char tail = 0;
  if (std::sscanf(value, "%llu:%llu%c", &dev, &ino, &tail) != 2) return false;
  struct stat st {};
  return ::fstat(fd, &st) == 0 && st.st_dev == dev && st.st_ino == ino;
}

bool sd_notify(const std::string& state) {
  if (g_notify_socket.empty() || g_notify_socket.size() >= sizeof(sockaddr_un::sun_path)) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, g_notify_socket.data(), g_notify_socket.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';  // abstract namespace
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + g_notify_socket.size());
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = ::sendto(fd, state.data(), state.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr), len) ==
            static_cast<ssize_t>(state.size());
  ::close(fd);
  return ok;
}

std::map<std::string, int> take_activated_sockets(std::vector<std::string>* notes) {
  std::map<std::string, int> out;
  const char* pid = std::getenv("LISTEN_PID");
  const char* fds = std::getenv("LISTEN_FDS");
  const char* names = std::getenv("LISTEN_FDNAMES");
  std::vector<std::string> name_list;
  if (names)
    for (const char *p = names, *q; *p; p = *q ? q + 1 : q) {
      q = std::strchr(p, ':');
      if (!q) q = p + std::strlen(p);
      name_list.emplace_back(p, static_cast<size_t>(q - p));
    }
  bool ours = pid && fds && std::strtol(pid, nullptr, 10) == ::getpid();
  int n = ours ? static_cast<int>(std::strtol(fds, nullptr, 10)) : 0;
  if (!ours && fds) notes->push_back("socket activation: LISTEN_PID is not ours: LISTEN_FDS ignored");
  for (const char* v : {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"}) ::unsetenv(v);
  for (int i = 0; i < n && i < 1024; ++i) {
    int fd = 3 + i;
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    std::string addr = base::canonical_address_of(fd);
    std::string name = static_cast<size_t>(i) < name_list.size() ? name_list[static_cast<size_t>(i)] : "";
    if (addr.empty() || addr == "dual-stack" || out.count(addr)) {
      notes->push_back("socket activation: fd " + std::to_string(fd) + (name.empty() ? "" : " (" + name + ")") +
                       (addr == "dual-stack" ? " is a dual-stack IPv6 socket (set BindIPv6Only=ipv6-only in the .socket unit)"
                                             : " is not a listening stream socket the agent can use") + ": closed");
      ::close(fd);
      continue;
    }
    out[addr] = fd;
    notes->push_back("socket activation: fd " + std::to_string(fd) + (name.empty() ? "" : " (" + name + ")") + " is " + addr);
  }
  return out;
}

}  // namespace agent
