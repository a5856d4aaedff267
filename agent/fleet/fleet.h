// The fleet coordinator (docs/operating.md "Fleets"): the hosts of a [fleet] roll a new version of an app
// K at a time, through etcd. One thread per agent talks to etcd (agent/fleet/etcd.h), a second
// one watches it; nothing here runs on the event loop, and nothing on the event loop waits for
// it: callbacks come from the fleet thread and the caller posts them to its loop.
//
// Keys, under /deploy-agent/<name>/:
//   alive/<host>                   this agent is up (its lease)
//   hosts/<host>                   the versions it runs, {"apps":{"api":"1.4.0"}} (kept when it dies)
//   apps/<app>/<version>/want/<host>   it waits for a slot (its lease; the create revision orders the line)
//   apps/<app>/<version>/slot/<n>      slot n (0 .. the open wave's end - 1), {"host":...,"done":...}:
//                                      taken with a create-only transaction; held with the host's
//                                      lease while it rolls and bakes (a dead agent's frees itself),
//                                      kept without it once the host is done (it counts toward the wave)
//   apps/<app>/<version>/state/<host>  waiting | rolling | baking | done | failed | halted (kept)
//   apps/<app>/<version>/halt          who halted the version, why, when (created only if absent)
// A version string is escaped into one path segment ('/' and '%' as %2F and %25).
#pragma once

#include <atomic>
#include <cstdint>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "agent/config/config.h"
#include "agent/fleet/etcd.h"

namespace agent::fleet {

/// What a host's turn at a version came to.
struct Turn {
  enum class Kind { Go, AlreadyDone, Halted };
  Kind kind = Kind::Go;
  std::string reason;  // Halted: "halted by web-01: ..."
};

/// Events the coordinator reports, from its thread.
struct Events {
  /// A halt this host gave up on (or made) was lifted: its deploy of (app, version) may run again.
  std::function<void(const std::string& app, const std::string& version)> resumed;
  /// etcd has been out of reach for unreachable_alert (true), or answers again (false).
  std::function<void(bool unreachable, const std::string& detail)> reachability;
};

class Coordinator {
 public:
  Coordinator(FleetSettings settings, Events events);
  ~Coordinator();  // stops its threads and revokes its lease (bounded), so its slots free at once
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  const FleetSettings& settings() const { return settings_; }

  using Progress = std::function<void(const std::string& line)>;
  /// Asks for a slot for (app, version); `progress` hears what it waits for whenever that
  /// changes ("waiting for a fleet slot: web-02 rolling 1.4.0"), `then` is called once.
  void acquire(const std::string& app, const std::string& version, const std::vector<FleetWave>& waves,
               Progress progress, std::function<void(const Turn&)> then);
  /// The host holding a slot bakes now (what fleet status shows).
  void baking(const std::string& app, const std::string& version);
  /// The end of this host's turn. ok: done, the slot is freed. Not ok: the version is halted
  /// fleet-wide unless it already was; `then(true)` when this host made the halt (and so
  /// raises fleet_halted), false when another host had.
  void finish(const std::string& app, const std::string& version, bool ok, const std::string& reason,
              std::function<void(bool made_halt)> then = nullptr);
  /// Stops waiting or frees a held slot without a verdict (superseded, shutting down).
  void abandon(const std::string& app, const std::string& version);
  /// Calls Events::resumed when the halt of (app, version) is lifted.
  void watch_halt(const std::string& app, const std::string& version);
  /// The version this host runs of `app`, for fleet status ("" for none).
  void publish(const std::string& app, const std::string& version);
  /// Why the fleet's state here cannot be handed to a new image of the agent (`agent upgrade`):
  /// a command not yet written to etcd, a wait for a slot, a slot held, a halt this host waits
  /// to see lifted; "" when none.
  std::string busy();
  /// `agent fleet status`: hosts, their versions, each app's newest version and the states of
  /// the hosts for it. From the fleet thread: err is set when etcd could not be read.
  void status(const std::string& app, std::map<std::string, std::vector<FleetWave>> waves,
              std::function<void(const nlohmann::json& status, const std::string& err)> then);
  /// `agent fleet resume APP VERSION`: lifts the halt; hosts that gave up try again.
  void resume(const std::string& app, const std::string& version, std::function<void(bool ok, const std::string& message)> then);

  /// Key helpers (public for the tests).
  std::string prefix() const { return "/deploy-agent/" + settings_.name + "/"; }
  std::string version_prefix(const std::string& app, const std::string& version) const;

 private:
  struct Wait {
    std::string app, version;
    std::vector<FleetWave> waves;
    Progress progress;
    std::function<void(const Turn&)> then;
    bool asked = false;
    std::string said;
    std::uint64_t id = 0;  // in the order acquire() was called
  };
  using Clock = std::chrono::steady_clock;

  void run();
  void watch_loop();
  /// One pass: the lease, the registration, the queued commands, every waiter.
  void step();
  /// The queued commands, in order; one that fails stays queued (stop_at_failure: and the rest).
  bool run_commands(bool stop_at_failure, std::string* err);
  void status_now(const std::string& app, const std::map<std::string, std::vector<FleetWave>>& waves,
                  const std::function<void(const nlohmann::json&, const std::string&)>& then);
  void resume_now(const std::string& app, const std::string& version, const std::function<void(bool, const std::string&)>& then);
  bool ensure_lease(std::string* err);
  bool register_host(std::string* err);
  bool evaluate(Wait& w, bool* finished, std::string* err);
  bool check_halts(std::string* err);
  bool taken_by_another(const std::string& slot_key, bool* taken, std::string* err);
  void post(std::function<bool(std::string* err)> command);
  void reached(bool ok, const std::string& err);
  std::string host_value() const;

  FleetSettings settings_;
  Events events_;
  Etcd etcd_, watch_etcd_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false, woken_ = false;
  std::deque<std::function<bool(std::string*)>> commands_;  // run in order; one that fails is tried again
  std::vector<std::unique_ptr<Wait>> waits_;
  std::atomic<std::uint64_t> next_wait_id_{1};
  std::map<std::pair<std::string, std::string>, bool> halt_watches_;  // (app, version) -> its halt was seen
  std::map<std::string, std::string> published_;             // app -> version
  std::map<std::pair<std::string, std::string>, int> holding_;  // (app, version) -> the slot this host holds
  // Fleet thread only.
  std::int64_t lease_ = 0;
  Clock::time_point next_keepalive_{}, unreachable_since_{};
  bool registered_ = false, unreachable_alerted_ = false, hosts_dirty_ = true;
  std::thread thread_, watcher_;
};

}  // namespace agent::fleet
