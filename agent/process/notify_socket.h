// The sd_notify socket of one app: where workers with ready = "notify" send READY=1.
//
// A datagram socket bound at <app_dir>/notify.sock, mode 0600, owned by the workers' account:
// only the agent (root, or the same account) and the workers can send to it; other local
// users get EACCES at connect. The sender's pid comes from SCM_CREDENTIALS, set by the kernel,
// so a worker cannot report ready for another. A wakeup reads at most kMaxPerWakeup
// datagrams: a flood cannot hold the loop, and what is left is read on the next turn.
// Datagrams from a pid that is not a worker are counted and logged at most once per
// kLogEvery, with the count.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <string>

#include "base/event_loop.h"

namespace agent {

class NotifySocket {
 public:
  static constexpr int kMaxPerWakeup = 32;
  static constexpr std::chrono::seconds kLogEvery{10};

  NotifySocket() = default;
  ~NotifySocket();
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;

  /// Binds `path` (replacing a stale socket file), mode 0600, owned by the agent.
  bool open(const std::string& path, std::string* err);
  /// Gives the socket file to the workers' account (when the agent is root).
  bool set_owner(uid_t uid, gid_t gid, std::string* err);
  const std::string& path() const { return path_; }
  int fd() const { return fd_; }

  /// Reads up to kMaxPerWakeup datagrams; calls `is_worker(pid)` for each READY=1 and
  /// `on_ready(pid)` when it says yes. `app` names the app in the log line.
  void read(const std::string& app, const std::function<bool(pid_t)>& is_worker, const std::function<void(pid_t)>& on_ready);

 private:
  int fd_ = -1;
  std::string path_;
  ino_t ino_ = 0;  // of the file we bound: unlinked at close only if it is still ours
  long foreign_ = 0;  // ignored datagrams since the last log line
  base::Clock::time_point last_log_{};
};

}  // namespace agent
