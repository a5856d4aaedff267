// Workers a killed agent left behind, and how the next agent takes over from them.
//
// The agent keeps <app_dir>/workers: one "pid starttime" line per live worker of the app,
// rewritten on every worker start and exit. When the agent dies without draining them
// (SIGKILL, a crash, an OOM kill outside systemd) its workers live on, still accepting on the
// listening sockets they inherited. The next agent finds them by that record (the start time
// rules out a reused pid), takes the listening sockets from one of them with pidfd_getfd(2) (they
// are at fd 3.., in the order of `listen`), so the port stays open across the restart and no
// connection is refused, then starts its own workers on `current` and, once they serve, drains
// the orphans like any replaced worker (drain_signal, SIGKILL after kill_timeout). Whatever
// release they ran, even a half-rolled one `current` never pointed to, is gone after that.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace agent {

struct Orphan {
  pid_t pid = 0;
  int pidfd = -1;  // owned: close when done
};

/// Rewrites the record at `path` with `pids` (tmp + rename; no fsync: the record only matters
/// while these processes live, and they do not outlive the machine). False with *err on failure.
bool write_workers_record(const std::string& path, const std::vector<pid_t>& pids, std::string* err);

/// The processes of the record at `path` that still run with the start time recorded, each
/// with a pidfd. A missing or unreadable record gives none.
std::vector<Orphan> find_orphans(const std::string& path);

/// A duplicate of the listening socket at fd 3 + `index` of `o`, if it is listening on
/// `canonical` (ListenAddress::canonical()); else -1 with *err saying why.
int take_listen_socket(const Orphan& o, size_t index, const std::string& canonical, std::string* err);

/// pidfd_send_signal(2): works on a process that is not our child.
int pidfd_signal(int pidfd, int sig);

/// "starttime" of /proc/<pid>/stat (clock ticks after boot), or 0 when the process is gone.
unsigned long long process_start_time(pid_t pid);

}  // namespace agent
