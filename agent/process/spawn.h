// Starting one worker process: fork, set up its fds, session, account and cwd, exec.
//
// Everything is allocated before fork(); the child only makes system calls. If a step fails in
// the child, it writes the step and errno to a close-on-exec pipe and exits 127, so the agent
// can say "chdir /srv/x: No such file or directory" instead of "exited with status 127"
// (dinit's exec_stage). The pipe reads EOF when exec succeeded.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "agent/process/launch_env.h"

namespace agent {

struct SpawnRequest {
  std::string path;               // the resolved executable
  std::vector<std::string> argv;
  std::vector<std::string> envp;  // LISTEN_PID is added in the child when listen_fds is not empty
  std::vector<int> listen_fds;    // become fds 3, 4, ...
  int ready_fd = -1;              // becomes fd 3 + listen_fds.size() (READY_FD), if >= 0
  int stdout_fd = -1, stderr_fd = -1;
  std::string cwd;
  const Account* drop_to = nullptr;  // setgroups/setgid/setuid to this account (needs root)
};

struct Spawned {
  pid_t pid = -1;
  int pidfd = -1;    // readable when the process exits
  int errpipe = -1;  // read end: the failed step, or EOF after exec
};

/// Forks and execs. Fails only if fork/pipe/pidfd_open fail; a failure in the child shows up
/// later through exec_failure().
bool spawn_process(const SpawnRequest& req, Spawned* out, std::string* err);

/// After the child exited: the step that failed before exec ("chdir /x: No such file or
/// directory"), or nullopt if exec succeeded. Does not block. Closes `errpipe`. `cwd` and
/// `path` are the request's, named in the message when chdir or exec failed.
std::optional<std::string> exec_failure(int errpipe, const std::string& cwd, const std::string& path);

/// "exited with status 3", "killed by SIGKILL".
std::string describe_wait_status(int status);

}  // namespace agent
