// Bake and health in AppMachine (machine.h). After a deploy's rollout commits, the new release
// is watched for `bake`: the health probe failing `health_failures` times in a row, or one of
// its workers exiting unasked, fails it, and it is rolled back by itself to the release live
// before, with the same rolling swap. Outside a bake, the probe's verdict changes raise one
// `unhealthy` and one `healthy` alert. No I/O here.
#include <spdlog/spdlog.h>

#include "agent/rollout/machine.h"
#include "agent/rollout/timing.h"

namespace agent {

namespace {
constexpr std::chrono::seconds kBakeTick{10};  // how often a bake says where it is
}

const char* health_name(Health h) {
  switch (h) {
    case Health::Unknown: return "unknown";
    case Health::Healthy: return "healthy";
    case Health::Unhealthy: return "unhealthy";
  }
  return "?";
}

std::optional<std::pair<std::string, base::Clock::duration>> AppMachine::baking() const {
  if (phase_ != Phase::Baking) return std::nullopt;
  return std::make_pair(bake_.release, std::max(base::Clock::duration::zero(), bake_.until - loop_.now()));
}

void AppMachine::on_probe(bool ok, const std::string& detail) {
  if (ok) {
    probe_fails_ = 0;
    if (phase_ == Phase::Baking) bake_.probes_ok++;
    health_ = Health::Healthy;
    if (std::exchange(unhealthy_alerted_, false))
      fx_.alert({app_.name, "healthy", "healthy again: " + detail, "the probe passes again after " + last_probe_failure_, 0,
                 fx_.current().value_or("")});
    return;
  }
  last_probe_failure_ = detail;
  if (++probe_fails_ < app_.health_failures) return;
  std::string why = "health probe failed " + std::to_string(probe_fails_) + " times in a row: " + detail;
  if (phase_ == Phase::Baking) return fail_bake(why);
  health_ = Health::Unhealthy;
  // Once, and only when no operation runs: workers a rollout or a start is still bringing up
  // (or a failed bake's way back) are not an outage yet; still failing after it, they are.
  if (unhealthy_alerted_ || phase_ != Phase::Idle) return;
  unhealthy_alerted_ = true;
  spdlog::warn("{}: unhealthy: {}", app_.name, why);
  fx_.alert({app_.name, "unhealthy", why, "the workers keep running; see agent status " + app_.name + " and agent logs " + app_.name, 0,
             fx_.current().value_or("")});
}

void AppMachine::start_bake(const std::string& release, const std::string& previous, const std::string& live_message) {
  phase_ = Phase::Baking;
  stop_bake_timers();
  bake_ = Bake{release, previous, live_message, loop_.now() + app_.bake, 0, 0, 0};
  probe_fails_ = 0;  // failures of the release before do not count against this one
  std::string how = app_.health_path.empty()
                        ? "watching its workers (no health probe)"
                        : "probe " + app_.health_method + " " + app_.health_path + " every " + base::format_duration(app_.health_interval) +
                              ", failing after " + std::to_string(app_.health_failures) + " in a row";
  say(live_message);
  if (!fleet_version_.empty()) fx_.fleet_baking(fleet_version_);
  say("baking " + release + " for " + base::format_duration(app_.bake) + ": " + how);
  bake_.timer = loop_.after(app_.bake, [this] {
    bake_.timer = 0;
    end_bake();
  });
  bake_.tick = loop_.after(kBakeTick, [this] { bake_tick(); });
}

void AppMachine::bake_tick() {
  bake_.tick = 0;
  if (phase_ != Phase::Baking) return;
  auto left = std::chrono::duration_cast<std::chrono::seconds>(bake_.until - loop_.now());
  say("baking: " + std::to_string(left.count()) + "s left, " + std::to_string(bake_.probes_ok) + " probes ok");
  bake_.tick = loop_.after(kBakeTick, [this] { bake_tick(); });
}

void AppMachine::stop_bake_timers() {
  loop_.cancel(std::exchange(bake_.timer, 0));
  loop_.cancel(std::exchange(bake_.tick, 0));
}

void AppMachine::end_bake() {
  if (phase_ != Phase::Baking) return;
  stop_bake_timers();
  std::string passed = "baked " + base::format_duration(app_.bake) +
                       (app_.health_path.empty() ? ": no worker exited" : ": " + std::to_string(bake_.probes_ok) + " probes ok");
  say(passed);
  stats_.bakes["passed"]++;
  record(journal_write(JournalWrite::Kind::Baked, bake_.release, passed), [this, message = bake_.live_message + "; " + passed] { finish_op(true, message); });
}

// The release goes back out. The journal first: from then on `current` names the release
// before, so an agent stopped or killed half-way starts that one, never the bad one. Then the
// slots are rolled back by the same rolling swap as any rollout (capacity kept), the slot of a
// worker that died first; crash restarts meanwhile run the release before too.
void AppMachine::fail_bake(const std::string& reason) {
  if (phase_ != Phase::Baking) return;
  stop_bake_timers();
  Bake b = bake_;
  stats_.bakes["failed"]++;
  deploy_result_ = "bake_failed";
  failure_alert({app_.name, "bake_failed", "release " + b.release + " failed its bake: " + reason,
                 b.previous.empty() ? "there is no earlier release to go back to: it keeps running"
                                    : "rolling back to " + b.previous + "; see agent releases " + app_.name,
                 0, b.release},
                "bake failed: " + reason);
  JournalWrite w = journal_write(JournalWrite::Kind::BakeFailed, b.release, "bake failed: " + reason);
  w.to = b.previous;
  if (b.previous.empty()) {
    say("bake failed: " + reason + "; there is no earlier release to go back to");
    return record(std::move(w), [this, reason] { finish_op(false, "bake failed: " + reason + "; nothing to roll back to"); });
  }
  say("bake failed: " + reason + "; rolling back to " + b.previous);
  for (auto& slot : slots_) slot.release = b.previous;
  phase_ = Phase::Disk;
  fx_.journal(w, [this, alive = std::weak_ptr<bool>(alive_), b, reason](bool ok, const std::string& err) {
    if (alive.expired() || !running_ || phase_ != Phase::Disk) return;  // a shutdown meanwhile
    if (!ok)
      fx_.alert({app_.name, "rollout_failed", "recording that " + b.release + " failed its bake failed: " + err,
                 "current still names it; its workers are rolled back anyway; fix the state directory", 0, b.release});
    std::vector<int> order;
    for (size_t i = 0; i < slots_.size(); ++i)
      if (!slots_[i].serving) order.push_back(static_cast<int>(i));
    for (size_t i = 0; i < slots_.size(); ++i)
      if (slots_[i].serving) order.push_back(static_cast<int>(i));
    begin_rollout(OpRequest::Kind::Rollback, b.previous, order, /*journal_refusal=*/false);
    if (phase_ != Phase::Rolling) return;  // refused by preflight: finish_op has said why
    rollout_.bad_release = b.release;
    rollout_.bake_failure = reason;
  });
}

// The end of the rollout that took a bad release out (the journal was written when the bake
// failed), or, if going back failed too, say so loudly: the bad release still runs.
void AppMachine::finish_bake_rollback(const Rollout& ro) {
  probe_fails_ = 0;  // the release before is judged afresh
  health_ = Health::Unknown;
  if (!ro.failure.empty()) {
    fx_.alert({app_.name, "rollout_failed", "rolling back from " + ro.bad_release + " failed: " + ro.failure,
               "the bad release keeps serving; see agent status " + app_.name, 0, ro.bad_release});
    return finish_op(false, "bake failed: " + ro.bake_failure + "; and rolling back to " + ro.target + " failed: " + ro.failure);
  }
  finish_op(false, "rolled back to " + ro.target + ": " + ro.bad_release + " failed its bake: " + ro.bake_failure);
}

}  // namespace agent
