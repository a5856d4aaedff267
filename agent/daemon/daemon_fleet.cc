// The daemon's side of the fleet (docs/operating.md "Fleets"): the coordinator for [fleet], its events
// posted to the loop, and the control verbs fleet-status and fleet-resume, answered from the
// coordinator's thread.
#include <spdlog/spdlog.h>

#include "agent/daemon/daemon.h"

namespace agent {

void Daemon::start_fleet() {
  if (!cfg_.fleet) return;
  fleet::Events events;
  base::EventLoop* loop = &loop_;
  events.resumed = [this, loop](const std::string& app, const std::string& version) {
    loop->post_from_thread([this, app, version] {
      if (auto it = apps_.find(app); it != apps_.end()) it->second->fleet_resumed(version);
    });
  };
  events.reachability = [this, loop, name = cfg_.fleet->name](bool unreachable, const std::string& detail) {
    loop->post_from_thread([this, unreachable, detail, name] {
      fleet_unreachable_ = unreachable;
      if (unreachable)
        alerts_->raise({"", "fleet_unreachable", "etcd of fleet " + name + " is unreachable: " + detail,
                        "deploys of apps with fleet_waves wait until it answers; reload, restart, stop, rollback and crash "
                        "restarts go on; agent fleet status says when it is back", 0, ""});
      else
        spdlog::info("fleet {}: etcd reachable again", name);
    });
  };
  fleet_ = std::make_unique<fleet::Coordinator>(*cfg_.fleet, std::move(events));
  spdlog::info("fleet {}: this host is {}, etcd {}", cfg_.fleet->name, cfg_.fleet->host, fmt::join(cfg_.fleet->etcd, ", "));
}

void Daemon::on_fleet_request(std::shared_ptr<Session> s, const ControlRequest& req) {
  if (!fleet_) return s->finish(false, "this agent is in no fleet (its config has no [fleet])");
  base::EventLoop* loop = &loop_;
  if (req.verb == "fleet-status") {
    std::map<std::string, std::vector<FleetWave>> waves;
    for (const auto& app : cfg_.apps) waves[app.name] = app.fleet_waves;
    return fleet_->status(req.app, std::move(waves), [s, loop](const nlohmann::json& data, const std::string& err) {
      loop->post_from_thread([s, data, err] {
        if (!err.empty()) return s->finish(false, "reading the fleet from etcd: " + err);
        s->finish(true, "", data);
      });
    });
  }
  if (!authorized(s->uid()))
    return s->finish(false, "uid " + std::to_string(s->uid()) + " may not resume: only root, the agent's own user" +
                                (cfg_.agent.control_group.empty() ? "" : " or members of " + cfg_.agent.control_group));
  if (req.app.empty() || req.version.empty()) return s->finish(false, "fleet resume takes APP VERSION");
  spdlog::info("fleet: resume of {} {} requested by uid {} (pid {})", req.app, req.version, s->uid(), s->pid());
  fleet_->resume(req.app, req.version, [s, loop](bool ok, const std::string& message) {
    loop->post_from_thread([s, ok, message] { s->finish(ok, message); });
  });
}

}  // namespace agent
