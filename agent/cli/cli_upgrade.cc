// agent upgrade (agent/daemon/upgrade.cc): asks the daemon to execute its binary again, waits
// while it is busy (up to --wait), then for the new image to answer in the same pid, and says
// what it kept.
#include <chrono>
#include <cstdio>
#include <set>
#include <thread>

#include "agent/cli/verbs.h"
#include "agent/daemon/control.h"
#include "agent/process/orphans.h"

namespace agent {

namespace {

using Clock = std::chrono::steady_clock;

std::set<long> worker_pids(const nlohmann::json& status) {
  std::set<long> pids;
  for (const auto& app : status.value("apps", nlohmann::json::array()))
    for (const auto& w : app.value("workers", nlohmann::json::array())) pids.insert(w.value("pid", 0L));
  return pids;
}

}  // namespace

int cmd_upgrade(const Args& a) {
  Config cfg;
  if (!load_for_client(a, &cfg)) return 1;
  nlohmann::json before;
  std::string err;
  if (!daemon_status(cfg, "", &before, &err)) return std::fprintf(stderr, "agent: %s\n", err.c_str()), 1;
  auto deadline = Clock::now() + std::chrono::seconds(a.wait_s);
  std::string said;
  for (;;) {
    bool outcome = false, busy = false, executing = false;
    std::string message;
    bool reached = call_daemon(cfg.agent.control_socket, {{"verb", "upgrade"}}, [&](const nlohmann::json& j) {
      if (j.contains("progress")) {
        std::string line = j.value("progress", "");
        std::printf("%s\n", line.c_str());
        std::fflush(stdout);
        if (line.starts_with("executing ")) executing = true;
        return;
      }
      outcome = true;
      message = j.value("message", "");
      const nlohmann::json& data = j.contains("data") ? j["data"] : nlohmann::json();
      busy = data.is_object() && data.value("busy", false);
    }, &err);
    // Closed without an outcome after "executing": the old image is gone, as it should be.
    if (!reached && !executing) return std::fprintf(stderr, "agent: %s\n", err.c_str()), 1;
    if (outcome && busy && Clock::now() < deadline) {
      if (message != said) std::printf("waiting: %s\n", message.c_str());
      std::fflush(stdout);
      said = message;
      std::this_thread::sleep_for(std::chrono::milliseconds(500));
      continue;
    }
    if (outcome) return std::fprintf(stderr, "agent: %s%s\n", message.c_str(), busy ? " (still, after --wait)" : ""), 1;
    if (!executing) return std::fprintf(stderr, "agent: the daemon closed the connection without an answer\n"), 1;
    break;
  }
  // The connection closed with the old image: the new one answers once it has taken over.
  int generation = before.value("generation", 0);
  nlohmann::json after;
  auto answer_by = Clock::now() + std::chrono::seconds(60);
  long pid = before.value("pid", 0L);
  while (!(daemon_status(cfg, "", &after, &err) && after.value("generation", 0) > generation)) {
    std::vector<std::string> stat = stat_fields(static_cast<pid_t>(pid));
    if (pid > 0 && (stat.empty() || stat[0] == "Z"))  // gone, or a zombie its parent has not reaped
      return std::fprintf(stderr,
                          "agent: the new image exited while taking over (pid %ld is gone), as in a crash of the agent: the "
                          "agent's log (journalctl -u agent) says why. Outside systemd its workers keep serving and the next "
                          "agent takes them over; agent.service restarts the agent\n",
                          pid),
             1;
    if (Clock::now() > answer_by)
      return std::fprintf(stderr,
                          "agent: the new image did not answer within 60s (%s); the agent's log (journalctl -u agent) says why\n",
                          err.c_str()),
             1;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  std::set<long> was = worker_pids(before), now = worker_pids(after);
  size_t kept = 0;
  for (long pid : was) kept += now.count(pid);
  std::printf("upgraded: agent %s -> %s in pid %ld (%s); %zu of %zu worker(s) kept\n", before.value("version", "?").c_str(),
              after.value("version", "?").c_str(), after.value("pid", 0L), after.value("exe", "?").c_str(), kept, was.size());
  return 0;
}

}  // namespace agent
