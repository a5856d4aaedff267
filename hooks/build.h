// The `build` step of the pipeline: one shell command run inside a staged release before any
// worker starts on it (e.g. "npm ci --omit=dev").
//
// It runs as the app's account, in the release directory, with the launch environment a
// worker of that release would get (minus the per-worker variables: no sockets, no readiness
// fd), in a session of its own so a timeout kills everything it started. Its output goes line
// by line to `on_line` (the app's log); the last lines are kept for the failure message.
// Blocking: the supervisor calls it on a thread.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/process/launch_env.h"
#include "base/units.h"

namespace hooks {

struct BuildRequest {
  std::string command;            // given to /bin/sh -c
  std::string cwd;                // the staged release
  std::vector<std::string> envp;
  std::optional<agent::Account> drop_to;
  base::Millis timeout{600'000};
  std::function<void(const std::string&)> on_line;      // each line of output, from the calling thread
  std::shared_ptr<std::atomic<bool>> cancel;            // set: stop the build now (agent shutdown)
};

struct BuildResult {
  bool ok = false;
  std::string message;            // "exited with status 1", "timed out after 10s", ...
  std::vector<std::string> tail;  // the last lines of output
  base::Millis took{0};
};

BuildResult run_build(const BuildRequest& req);

/// The worker environment minus what only a worker can use (LISTEN_*, READY_FD,
/// NOTIFY_SOCKET, APP_WORKER, AGENT_*): a build listens on nothing and reports no readiness.
std::vector<std::string> build_environment(const std::vector<std::string>& worker_envp);

}  // namespace hooks
