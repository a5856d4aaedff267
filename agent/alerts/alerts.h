// Alerts: the one interface every event an operator must hear about goes through (a drain
// that stalls, a worker killed, a rollout reverted, a crash loop, a refused deploy, a worker
// replaced for memory). Each alert is logged and appended to <state_dir>/alerts.jsonl, which
// scripts and tests read; delivery by email and webhook plugs in behind raise().
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "agent/config/config.h"

namespace agent {

class Delivery;

struct Alert {
  std::string app;
  std::string kind;     // drain_stalled | worker_killed | rollout_failed | crash_loop | deploy_refused | memory_replaced
                        // | bake_failed | unhealthy | healthy | fleet_halted | fleet_unreachable
  std::string summary;  // one line: what happened
  std::string detail;   // what the agent does next, what to run to look
  int pid = 0;
  std::string release;
};

class Alerts {
 public:
  explicit Alerts(std::string journal_path);
  ~Alerts();
  /// Where alerts go besides the journal and the log: email and webhook, delivered by a
  /// Delivery on its own thread. Called at start and on SIGHUP.
  void configure(const AlertSettings& settings);
  /// Never blocks the loop for long and never fails the caller: a write error is logged, and
  /// delivery happens elsewhere.
  void raise(const Alert& a);
  const std::string& path() const { return path_; }
  /// Alerts raised since start, by (app, kind), for /metrics.
  const std::map<std::pair<std::string, std::string>, std::uint64_t>& counts() const { return counts_; }
  /// alerts.jsonl is rotated past this size; kKeepFiles older files are kept.
  static constexpr std::uint64_t kMaxBytes = 1 << 20;
  static constexpr int kKeepFiles = 3;

  /// `agent upgrade`: the counts and what waits for delivery, for the next image; nothing is
  /// delivered by this one after.
  nlohmann::json hand_off();
  /// In the next image, before configure(): takes hand_off()'s state over.
  void take_over(const nlohmann::json& state);
  /// The upgrade failed after hand_off(): delivery goes on here, with what it had.
  void take_back(const nlohmann::json& state, const AlertSettings& settings);

 private:
  nlohmann::json carried_;  // the previous image's delivery queue, until configure() starts one
  std::string path_;
  std::unique_ptr<Delivery> delivery_;
  std::map<std::pair<std::string, std::string>, std::uint64_t> counts_;
};

}  // namespace agent
