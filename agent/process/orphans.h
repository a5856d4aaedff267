// Workers a killed agent left behind, and how the next agent takes over from them.
//
// The agent keeps <app_dir>/workers: the boot id, then one "pid starttime" line per live
// worker of the app, rewritten on every worker start and exit. When the agent dies without draining them
// (SIGKILL, a crash, an OOM kill outside systemd) its workers live on, still accepting on the
// listening sockets they inherited. The next agent finds them by that record (the start time
// rules out a reused pid), takes the listening sockets from one of them with pidfd_getfd(2) (they
// were handed over at fd 3.., but any of their fds is searched), so the port stays open across
// the restart and no
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
  unsigned long long start = 0;  // its start time, as recorded
  int pidfd = -1;                // owned: close when done
};

/// One live process for the record: its pid and start time (process_start_time()).
struct RecordedProcess {
  pid_t pid = 0;
  unsigned long long start = 0;
};

/// Rewrites the record at `path` (tmp + rename; no fsync: the record only matters while these
/// processes live, and they do not outlive the machine). False with *err on failure.
bool write_workers_record(const std::string& path, const std::vector<RecordedProcess>& procs, std::string* err);

/// The processes of the record at `path` that still run with the start time recorded, since
/// the same boot, and are not children of this process (an app removed and added again by
/// SIGHUP finds its own draining workers there), each with a pidfd. A missing or unreadable
/// record gives none.
std::vector<Orphan> find_orphans(const std::string& path);

/// A duplicate of a socket of `o` listening on `canonical` (ListenAddress::canonical()),
/// searched among all its fds; else -1 with *err saying why (EPERM: ptrace rules forbid it).
int take_listen_socket(const Orphan& o, const std::string& canonical, std::string* err);

/// pidfd_send_signal(2): works on a process that is not our child.
int pidfd_signal(int pidfd, int sig);

/// Sends `sig` to each orphan and waits up to 10 s for all to exit, then SIGKILLs the rest and
/// waits up to 2 s more. Used at start, before the event loop runs.
void stop_orphans(const std::vector<Orphan>& orphans, int sig);

/// "starttime" of /proc/<pid>/stat (clock ticks after boot), or 0 when the process is gone.
unsigned long long process_start_time(pid_t pid);

/// The fields of /proc/<pid>/stat (0: this process) after "pid (comm)", so [0] is field 3
/// (state). comm may hold spaces and parentheses: the fields resume after the last ')'.
/// Empty when the process is gone.
std::vector<std::string> stat_fields(pid_t pid);

/// CPU seconds (user + system) of `pid` from /proc/<pid>/stat; -1 when it is gone.
double cpu_seconds_of(pid_t pid);

}  // namespace agent
