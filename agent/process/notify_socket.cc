#include "agent/process/notify_socket.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

namespace agent {

NotifySocket::~NotifySocket() {
  if (fd_ < 0) return;
  ::close(fd_);
  // An app removed and added again by SIGHUP binds the same path anew: leave that one alone.
  struct stat st {};
  if (::lstat(path_.c_str(), &st) == 0 && st.st_ino == ino_) ::unlink(path_.c_str());
}

bool NotifySocket::open(const std::string& path, std::string* err) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path)
    return *err = "notify socket path " + path + " is longer than " + std::to_string(sizeof addr.sun_path - 1) +
                  " bytes: choose a shorter state_dir",
           false;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return *err = path + " exists and is not a socket", false;
    ::unlink(path.c_str());
  }
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd_ < 0) return *err = "notify socket: " + std::string(std::strerror(errno)), false;
  mode_t old = ::umask(0177);  // never open to others, not even for a moment
  int rc = ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::umask(old);
  int one = 1;
  if (rc != 0 || ::setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
    return *err = "notify socket " + path + ": " + std::strerror(errno), false;
  path_ = path;
  if (::lstat(path.c_str(), &st) == 0) ino_ = st.st_ino;
  return true;
}

bool NotifySocket::set_owner(uid_t uid, gid_t gid, std::string* err) {
  if (::geteuid() != 0 || fd_ < 0) return true;  // not root: the workers run as we do
  if (::lchown(path_.c_str(), uid, gid) != 0)
    return *err = "notify socket " + path_ + ": chown: " + std::strerror(errno), false;
  return true;
}

void NotifySocket::read(const std::string& app, const std::function<bool(pid_t)>& is_worker,
                        const std::function<void(pid_t)>& on_ready) {
  for (int i = 0; i < kMaxPerWakeup; ++i) {
    char buf[4096];
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(ucred))];
    iovec iov{buf, sizeof buf};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd_, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    if (n < 0) break;
    pid_t sender = 0;
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS) {
        ucred cred;
        std::memcpy(&cred, CMSG_DATA(c), sizeof cred);
        sender = cred.pid;
      }
    std::string text(buf, static_cast<size_t>(n));
    bool ready = ("\n" + text + "\n").find("\nREADY=1\n") != std::string::npos;
    if (!ready) continue;  // STATUS=, WATCHDOG=1, ...: nothing the agent acts on
    if (sender > 0 && is_worker(sender)) {
      on_ready(sender);
      continue;
    }
    ++foreign_;
  }
  auto now = base::Clock::now();
  if (foreign_ > 0 && now - last_log_ >= kLogEvery) {
    spdlog::warn("{}: ignored {} READY=1 message(s) on {} from processes that are not its workers", app, foreign_, path_);
    foreign_ = 0;
    last_log_ = now;
  }
}

}  // namespace agent
