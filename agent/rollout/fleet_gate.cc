// The fleet's gate in AppMachine (machine.h, docs/operating.md "Fleets"). A deploy of an app with
// fleet_waves, staged, built and preflighted, waits here for a slot. While it waits it is not
// the running operation: reload, restart, stop, start and crash restarts go on beside it. Its
// turn comes back through on_fleet_turn. No I/O here: the coordinator is behind Effects.
#include <spdlog/spdlog.h>

#include "agent/rollout/machine.h"

namespace agent {

bool AppMachine::gated(OpRequest::Kind kind) const {
  return kind == OpRequest::Kind::Deploy && running_ && running_->kind == OpRequest::Kind::Deploy && !running_->no_fleet &&
         !running_->fleet_passed && fx_.in_fleet();
}

void AppMachine::wait_for_fleet(const std::string& release) {
  abandon_waiting("superseded by a newer request (deploy)");  // (start_op did already, but never two)
  std::string version = fx_.version_of(release);
  say("waiting for a fleet slot for version " + version + " (" + release + ")");
  fx_.journal(journal_write(JournalWrite::Kind::Note, release, "waiting for a fleet slot for version " + version),
              [](bool, const std::string&) {});
  waiting_ = FleetWait{std::move(*running_), release, version, std::nullopt};
  running_.reset();
  phase_ = Phase::Idle;
  auto alive = std::weak_ptr<bool>(alive_);
  fx_.fleet_acquire(
      waiting_->op, release, version,
      [this, alive, version](const std::string& line) {
        if (alive.expired() || !waiting_ || waiting_->version != version) return;
        spdlog::info("{}: {}", app_.name, line);
        if (waiting_->op.progress) waiting_->op.progress(line);
      },
      [this, alive, version](const FleetTurn& turn) {
        if (!alive.expired()) on_fleet_turn(version, turn);
      });
  if (pending_) start_pending();
  reconcile();
}

void AppMachine::on_fleet_turn(const std::string& version, const FleetTurn& turn) {
  if (!waiting_ || waiting_->version != version || waiting_->turn) return;  // abandoned meanwhile
  waiting_->turn = turn;
  if (!running_) resume_waiting();  // else when the running operation ends (finish_op)
}

void AppMachine::resume_waiting() {
  FleetWait w = std::move(*waiting_);
  waiting_.reset();
  running_ = std::move(w.op);
  running_->fleet_passed = true;
  op_started_ = loop_.now();
  deploy_result_.clear();
  if (w.turn->kind == FleetTurn::Kind::Halted) {
    std::string why = "version " + w.version + " is " + w.turn->reason;
    deploy_result_ = "halted";
    say("not rolling " + w.release + ": " + why);
    return record(journal_write(JournalWrite::Kind::Halted, w.release, w.turn->reason), [this, why] { finish_op(false, "halted: " + why); });
  }
  if (w.turn->kind == FleetTurn::Kind::Go) {
    fleet_version_ = w.version;
    say("fleet slot for " + w.version + " taken (" + w.turn->reason + ")");
  } else {
    say(w.turn->reason + ": rolling it without a slot");
  }
  stopped_ = false;
  begin_rollout(OpRequest::Kind::Deploy, w.release, all_slots());
}

void AppMachine::abandon_waiting(const std::string& why) {
  if (!waiting_) return;
  FleetWait w = std::move(*waiting_);
  waiting_.reset();
  fx_.fleet_abandon(w.version);
  spdlog::info("{}: the deploy of {} waiting for a fleet slot ends: {}", app_.name, w.release, why);
  if (w.op.done) w.op.done(false, why);
}

void AppMachine::failure_alert(Alert alert, const std::string& reason) {
  if (fleet_version_.empty()) return fx_.alert(std::move(alert));
  fx_.fleet_finish(std::exchange(fleet_version_, ""), false, reason, std::move(alert));
}

}  // namespace agent
