// AppSupervisor's side of the fleet (machine.h Effects, docs/operating.md "Fleets"): the machine's asks go
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
  // The failure's alert becomes fleet_halted when this host made the halt (one message for the
  // fleet). Which it is, etcd says; if it does not within kVerdictWait (it is unreachable), the
  // failure is raised as it is, and fleet_halted follows when etcd answers.
  struct Pending {
    std::optional<Alert> failure;
    bool raised = false;
  };
  constexpr auto kVerdictWait = std::chrono::seconds(3);
  auto pending = std::make_shared<Pending>(Pending{std::move(failure), false});
  base::EventLoop* loop = &loop_;
  Alerts* alerts = &alerts_;  // the daemon's: outlives this app
  if (pending->failure)
    loop_.after(kVerdictWait, [pending, alerts] {
      if (std::exchange(pending->raised, true)) return;
      Alert a = *pending->failure;
      a.detail += "; etcd did not say yet whether this halts the version on the other hosts";
      alerts->raise(std::move(a));
    });
  std::string fleet_name = fleet_->settings().name, app = app_.name;
  fleet_->finish(app, version, ok, reason, [loop, alerts, pending, version, fleet_name, app, reason](bool made_halt) {
    loop->post_from_thread([alerts, pending, made_halt, version, fleet_name, app, reason] {
      bool raised = std::exchange(pending->raised, true);
      if (!made_halt) {
        // Another host had halted it already (it alerted), or the turn went well.
        if (!raised && pending->failure) alerts->raise(*pending->failure);
        return;
      }
      Alert a = pending->failure.value_or(Alert{app, "", "deploy of version " + version + " failed: " + reason, "", 0, ""});
      a.kind = "fleet_halted";
      if (raised) a.summary = "version " + version + " of " + app + " failed here: " + reason;
      a.summary += "; version " + version + " is halted on every host of fleet " + fleet_name;
      a.detail += std::string(a.detail.empty() ? "" : "; ") + "when it is fixed: agent fleet resume " + app + " " + version;
      alerts->raise(std::move(a));
    });
  });
}

void AppSupervisor::fleet_abandon(const std::string& version) {
  fleet_ops_.erase(version);
  if (fleet_) fleet_->abandon(app_.name, version);
}

void AppSupervisor::forget_fleet_turns() {
  // A newer deploy or a rollback: what gave up before must not come back on a resume.
  fleet_ops_.clear();
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
