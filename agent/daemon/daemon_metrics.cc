// The daemon's /metrics and /healthz (docs/operating.md "Metrics and a health endpoint"). Names are
// prefixed deploy_agent_; labels never carry pids, and release ids only in release_info, so
// a scrape's series stay bounded however many deploys there were.
#include "agent/daemon/daemon.h"

namespace agent {

std::string Daemon::render_metrics() const {
  MetricsText m;
  m.family("deploy_agent_build_info", "gauge", "The agent's version.");
  // Families whose samples only some hosts have are declared on every host: dashboards and
  // rules find the name either way.
  m.family("deploy_agent_fleet_waiting", "gauge", "1 while a deploy of the app waits for its fleet slot (apps with fleet_waves).");
  m.family("deploy_agent_fleet_turn", "gauge",
           "This host's turn in the fleet for each app with fleet_waves: 1 on its state (waiting, rolling, baking, idle).");
  m.family("deploy_agent_fleet_etcd_unreachable", "gauge", "1 while the fleet's etcd has been out of reach longer than unreachable_alert.");
  m.sample("deploy_agent_build_info", {{"version", AGENT_VERSION}}, 1);
  if (fleet_) m.sample("deploy_agent_fleet_etcd_unreachable", {}, fleet_unreachable_ ? 1 : 0);
  for (const auto& [name, sup] : apps_) {
    const AppMachine& mc = sup->machine();
    const MachineStats& st = mc.stats();
    m.family("deploy_agent_instances", "gauge", "Workers each app is configured to run (instances).");
    m.sample("deploy_agent_instances", {{"app", name}}, mc.config().instances);
    std::map<std::string, int> by_state = {{"starting", 0}, {"ready", 0}, {"draining", 0}, {"adopted", 0}};
    for (const auto& [pid, w] : mc.workers()) by_state[w.adopted ? "adopted" : worker_state_name(w.state)]++;
    m.family("deploy_agent_workers", "gauge", "Workers by state: starting, ready, draining, adopted (left by a previous agent).");
    for (const auto& [state, n] : by_state) m.sample("deploy_agent_workers", {{"app", name}, {"state", state}}, n);
    for (size_t i = 0; i < mc.slots().size(); ++i) {
      const AppMachine::Worker* w = mc.slots()[i].serving ? mc.find(mc.slots()[i].serving) : nullptr;
      if (!w) continue;
      std::string slot = std::to_string(i);
      m.family("deploy_agent_worker_resident_memory_bytes", "gauge", "Resident memory of the worker serving each slot.");
      m.sample("deploy_agent_worker_resident_memory_bytes", {{"app", name}, {"slot", slot}}, static_cast<double>(AppSupervisor::rss_of(w->pid)));
      double cpu = cpu_seconds_of(w->pid);
      if (cpu >= 0) {
        m.family("deploy_agent_worker_cpu_seconds_total", "counter", "CPU seconds of the worker serving each slot (resets when it is replaced).");
        m.sample("deploy_agent_worker_cpu_seconds_total", {{"app", name}, {"slot", slot}}, cpu);
      }
    }
    m.family("deploy_agent_ready_workers", "gauge", "Slots whose serving worker is ready.");
    m.sample("deploy_agent_ready_workers", {{"app", name}}, mc.ready_slots());
    m.family("deploy_agent_worker_restarts_total", "counter", "Crash restarts of the app's workers since the agent started.");
    m.sample("deploy_agent_worker_restarts_total", {{"app", name}}, static_cast<double>(st.restarts));
    if (auto cur = sup->current_release()) {
      m.family("deploy_agent_release_info", "gauge", "The current release of each app, and its version.");
      m.sample("deploy_agent_release_info", {{"app", name}, {"release", *cur}, {"version", sup->version_of_release(*cur)}}, 1);
    }
    m.family("deploy_agent_deploys_total", "counter", "Deploys since the agent started, by result.");
    for (const char* result : {"ok", "failed", "refused", "halted", "bake_failed"}) {
      auto it = st.deploys.find(result);
      m.sample("deploy_agent_deploys_total", {{"app", name}, {"result", result}}, it == st.deploys.end() ? 0 : static_cast<double>(it->second));
    }
    m.family("deploy_agent_bakes_total", "counter", "Bakes since the agent started, by result.");
    for (const char* result : {"passed", "failed"}) {
      auto it = st.bakes.find(result);
      m.sample("deploy_agent_bakes_total", {{"app", name}, {"result", result}}, it == st.bakes.end() ? 0 : static_cast<double>(it->second));
    }
    m.family("deploy_agent_rollout_duration_seconds", "histogram", "Rollouts, from the first batch to commit or abort.");
    m.histogram("deploy_agent_rollout_duration_seconds", {{"app", name}}, st.rollout);
    m.family("deploy_agent_drain_duration_seconds", "histogram", "Drains, from the drain signal to the worker's exit.");
    m.histogram("deploy_agent_drain_duration_seconds", {{"app", name}}, st.drain);
    if (!mc.config().health_path.empty()) {
      m.family("deploy_agent_app_healthy", "gauge", "1 when the app's health probe passes, 0 when it fails, absent before the first.");
      if (mc.health() != Health::Unknown) m.sample("deploy_agent_app_healthy", {{"app", name}}, mc.health() == Health::Healthy ? 1 : 0);
    }
    if (!mc.config().fleet_waves.empty() && fleet_) {
      m.sample("deploy_agent_fleet_waiting", {{"app", name}}, mc.fleet_waiting() ? 1 : 0);
      for (const char* turn : {"waiting", "rolling", "baking", "idle"})
        m.sample("deploy_agent_fleet_turn", {{"app", name}, {"state", turn}}, std::string_view(mc.fleet_turn()) == turn ? 1 : 0);
    }
  }
  m.family("deploy_agent_alerts_total", "counter", "Alerts raised since the agent started, by app and kind.");
  for (const auto& [key, n] : alerts_->counts()) m.sample("deploy_agent_alerts_total", {{"app", key.first}, {"kind", key.second}}, static_cast<double>(n));
  m.family("deploy_agent_loop_max_stall_seconds", "gauge", "The longest the agent's event loop was held by one dispatch since start.");
  m.sample("deploy_agent_loop_max_stall_seconds", {}, std::chrono::duration<double>(loop_.max_stall()).count());
  process_metrics(&m);
  return m.str();
}

std::pair<bool, std::string> Daemon::healthz() const {
  if (shutting_down_) return {false, "the agent is shutting down"};
  bool ok = true;
  std::string why;
  for (const auto& [name, sup] : apps_) {
    const AppMachine& mc = sup->machine();
    int ready = mc.ready_slots();
    std::string line = name + ": " + std::to_string(ready) + " of " + std::to_string(mc.config().instances) + " workers ready";
    if (mc.stopped()) line = name + ": stopped", ok = false;
    else if (ready < mc.config().instances) ok = false;
    why += (why.empty() ? "" : "\n") + line;
  }
  return {ok, why};
}

}  // namespace agent
