// AppSupervisor's side of the fleet (machine.h Effects, README "Fleets"): the machine's asks go
// to the coordinator (agent/fleet/fleet.h), whose answers come from its thread and are posted
// back to the loop here. The deploy that asked is kept per version, so that `agent fleet
// resume` can run it again on a host that gave up on it or failed it.
#include <spdlog/spdlog.h>

#include "agent/rollout/supervisor.h"

namespace agent {

void AppSupervisor::set_fleet(fleet::Coordinator* fleet) {
  fleet_ = fleet;
  publish_version();
}

void AppSupervisor::publish_version() {
  if (!fleet_ || app_.fleet_waves.empty()) return;
  auto cur = store_.current();
  fleet_->publish(app_.name, cur ? release_version(*cur) : "");
}

void AppSupervisor::fleet_acquire(const OpRequest& op, const std::string& release, const std::string& version, std::function<void(const std::string&)> progress,
                                  std::function<void(const FleetTurn&)> then) {
  OpRequest kept = op;
  kept.progress = nullptr;
  kept.done = nullptr;
  kept.fleet_passed = false;
  fleet_ops_[version] = std::move(kept);
  // A drop the watch saw is not acted on while it waits: if this agent stops or dies before
  // its turn, the next one must see it again, so the record says what runs until then.
  bool watched = op.source == "rpm";
  if (watched) {
    auto cur = store_.current();
    remember_seen_of(cur ? store_.release_dir(*cur) : "");
  }
  base::EventLoop* loop = &loop_;
  std::weak_ptr<bool> alive = alive_;
  fleet_->acquire(
      app_.name, version, app_.fleet_waves,
      [loop, alive, progress](const std::string& line) {
        loop->post_from_thread([alive, progress, line] {
          if (!alive.expired()) progress(line);
        });
      },
      [this, loop, alive, version, then, watched, release](const fleet::Turn& t) {
        FleetTurn turn{t.kind == fleet::Turn::Kind::Go            ? FleetTurn::Kind::Go
                       : t.kind == fleet::Turn::Kind::AlreadyDone ? FleetTurn::Kind::AlreadyDone
                                                                  : FleetTurn::Kind::Halted,
                       t.reason};
        loop->post_from_thread([this, alive, version, then, turn, watched, release] {
          if (alive.expired()) return;
          if (watched) remember_seen_of(store_.release_dir(release));  // its turn came: acted on
          if (turn.kind == FleetTurn::Kind::Halted) fleet_->watch_halt(app_.name, version);  // resume runs it again
          then(turn);
        });
      });
}

void AppSupervisor::fleet_baking(const std::string& version) {
  if (fleet_) fleet_->baking(app_.name, version);
}

void AppSupervisor::fleet_finish(const std::string& version, bool ok, const std::string& reason, std::optional<Alert> failure) {
  if (!fleet_) {
    if (failure) alerts_.raise(std::move(*failure));
    return;
  }
  if (ok) fleet_ops_.erase(version);
  else fleet_->watch_halt(app_.name, version);
  base::EventLoop* loop = &loop_;
  std::weak_ptr<bool> alive = alive_;
  Alerts* alerts = &alerts_;
  std::string fleet_name = fleet_->settings().name;
  fleet_->finish(app_.name, version, ok, reason, [loop, alive, alerts, failure, version, fleet_name](bool made_halt) {
    if (!failure) return;
    loop->post_from_thread([alerts, failure, made_halt, version, fleet_name] {
      Alert a = *failure;
      // The host that halted the version says so, once; a host that failed after another had
      // halted it reports its own failure as usual.
      if (made_halt) {
        a.kind = "fleet_halted";
        a.summary += "; version " + version + " is halted on every host of fleet " + fleet_name;
        a.detail += "; when it is fixed: agent fleet resume " + a.app + " " + version;
      }
      alerts->raise(std::move(a));
    });
  });
  (void)alive;
}

void AppSupervisor::fleet_abandon(const std::string& version) {
  fleet_ops_.erase(version);
  if (fleet_) fleet_->abandon(app_.name, version);
}

void AppSupervisor::fleet_resumed(const std::string& version) {
  auto it = fleet_ops_.find(version);
  if (it == fleet_ops_.end()) return;
  OpRequest op = it->second;
  fleet_ops_.erase(it);
  op.resumed = true;
  spdlog::info("{}: version {} was resumed in the fleet: deploying it again", app_.name, version);
  machine_.submit(std::move(op));
}

}  // namespace agent
