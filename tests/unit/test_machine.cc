// AppMachine (agent/rollout/machine.h) driven with a fake clock and a fake process layer: no
// process is forked, no file written, no time waited. Each test is one row of the state table
// in the header: an event in a state, and the actions that must follow.
#include <doctest/doctest.h>

#include <signal.h>

#include <algorithm>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <spdlog/spdlog.h>
#include <vector>

#include "agent/rollout/machine.h"
#include "agent/rollout/supervisor.h"
#include "agent/rollout/timing.h"

using namespace agent;
using namespace std::chrono_literals;

namespace {

// The world as the machine sees it: every effect recorded, every continuation held until the
// test finishes it (ninja's FakeCommandRunner).
struct FakeWorld : Effects {
  base::EventLoop& loop;
  explicit FakeWorld(base::EventLoop& l) : loop(l) {}

  struct Spawned {
    int slot;
    std::string release;
    pid_t pid;
  };
  std::vector<Spawned> spawned;
  std::map<pid_t, std::vector<int>> signals;
  std::set<pid_t> killed, ready_seen_pids;
  std::map<pid_t, std::uint64_t> rss_of;
  std::set<std::string> failing_spawns;  // releases whose spawn fails
  std::optional<std::string> current_release;
  std::function<void(const StageOutcome&)> stage_then;
  std::function<void(const BuildOutcome&)> build_then;
  bool preflight_ok = true;
  std::vector<JournalWrite> journal_writes;
  std::vector<std::set<std::string>> prunes;
  std::vector<Alert> alerts;
  std::vector<std::string> rollback_history;  // oldest first; the last is current
  bool cancelled = false, sockets_closed = false;
  int applied_configs = 0;
  pid_t next_pid = 1000;

  pid_t spawn(int slot, const std::string& release, std::string* err) override {
    if (failing_spawns.count(release)) return *err = "cannot exec", 0;
    spawned.push_back({slot, release, next_pid});
    return next_pid++;
  }
  void signal(pid_t pid, int sig) override { signals[pid].push_back(sig); }
  void kill(pid_t pid) override { killed.insert(pid); }
  void ready_seen(pid_t pid) override { ready_seen_pids.insert(pid); }
  std::uint64_t rss(pid_t pid) override { return rss_of.count(pid) ? rss_of[pid] : 10 << 20; }
  void workers_changed() override {}
  std::optional<std::string> current() override { return current_release; }
  std::string version_of(const std::string& release) override { return "v-" + release; }
  void stage(const OpRequest&, std::function<void(const StageOutcome&)> then) override { stage_then = std::move(then); }
  void build(const std::string&, std::function<void(const BuildOutcome&)> then) override { build_then = std::move(then); }
  bool preflight(const std::string&, std::string* resolved, std::string* err) override {
    *resolved = "/usr/bin/node";
    if (!preflight_ok) *err = "node: not found in PATH";
    return preflight_ok;
  }
  void rollback_target(int steps, const std::string&, std::function<void(bool, const std::string&, const std::string&)> then) override {
    int i = static_cast<int>(rollback_history.size()) - 1 - steps;
    std::string target = i >= 0 ? rollback_history[static_cast<size_t>(i)] : "";
    loop.post([then, target] { then(!target.empty(), target, target.empty() ? "no release to go back to" : ""); });
  }
  void journal(const JournalWrite& w, std::function<void(bool, const std::string&)> then) override {
    journal_writes.push_back(w);
    if (w.kind == JournalWrite::Kind::Activate || w.kind == JournalWrite::Kind::RollbackTo) current_release = w.release;
    if (w.kind == JournalWrite::Kind::BakeFailed && !w.to.empty()) current_release = w.to;
    loop.post([then] { then(true, ""); });
  }
  void prune(const std::set<std::string>& in_use) override { prunes.push_back(in_use); }
  void cancel_work() override { cancelled = true; }
  void close_sockets() override { sockets_closed = true; }
  bool open_sockets(std::string*) override {
    sockets_closed = false;
    return true;
  }
  void config_applied(const AppConfig&) override { applied_configs++; }
  void alert(Alert a) override { alerts.push_back(std::move(a)); }
  std::vector<releases::HistoryEntry> history_lines;
  void history(releases::HistoryEntry e) override { history_lines.push_back(std::move(e)); }
  // The fleet: a turn comes when the test gives it.
  bool fleet = false;
  std::function<void(const FleetTurn&)> turn_then;
  std::function<void(const std::string&)> turn_progress;
  std::vector<std::string> fleet_calls;  // "acquire v", "baking v", "done v", "failed v: reason [alert kind]", "abandon v"
  bool in_fleet() override { return fleet; }
  void fleet_acquire(const OpRequest&, const std::string&, const std::string& version, std::function<void(const std::string&)> progress,
                     std::function<void(const FleetTurn&)> then) override {
    fleet_calls.push_back("acquire " + version);
    turn_then = std::move(then);
    turn_progress = std::move(progress);
  }
  void fleet_baking(const std::string& version) override { fleet_calls.push_back("baking " + version); }
  void fleet_finish(const std::string& version, bool ok, const std::string& reason, std::optional<Alert> failure) override {
    fleet_calls.push_back((ok ? "done " : "failed ") + version + (ok ? "" : ": " + reason) + (failure ? " [" + failure->kind + "]" : ""));
  }
  void fleet_abandon(const std::string& version) override { fleet_calls.push_back("abandon " + version); }

  std::vector<pid_t> pids_of(const std::string& release) const {
    std::vector<pid_t> out;
    for (const auto& s : spawned)
      if (s.release == release) out.push_back(s.pid);
    return out;
  }
  size_t alerts_of(const std::string& kind) const {
    return std::count_if(alerts.begin(), alerts.end(), [&](const Alert& a) { return a.kind == kind; });
  }
};

AppConfig app_config(int instances, int surge = 1) {
  AppConfig app;
  app.name = "web";
  app.command = {"node", "server.js"};
  app.instances = instances;
  app.max_surge = surge;
  app.ready_timeout = 5s;
  app.drain_timeout = 10s;
  app.kill_timeout = 60s;
  return app;
}

// A machine, its fake world and a clock that only moves when the test says.
struct Rig {
  base::EventLoop loop;
  base::Clock::time_point now = base::Clock::time_point{} + 1h;
  FakeWorld world{loop};
  std::unique_ptr<AppMachine> m;
  std::vector<std::pair<bool, std::string>> outcomes;  // of the operations, in order

  explicit Rig(AppConfig app) {
    spdlog::set_level(spdlog::level::off);  // the machine narrates every step; the checks say what matters
    loop.set_clock([this] { return now; });
    m = std::make_unique<AppMachine>(loop, world, std::move(app));
  }
  /// Runs everything due now.
  void settle() {
    for (int i = 0; i < 3; ++i) loop.run_once(0ms);
  }
  /// Moves the clock by `d` in 10 ms steps, running what falls due on the way.
  void advance(std::chrono::milliseconds d) {
    for (auto end = now + d; now < end;) {
      now = std::min(end, now + 10ms);
      settle();
    }
  }
  ~Rig() { spdlog::set_level(spdlog::level::info); }
  OpRequest op(OpRequest::Kind kind) {
    OpRequest r;
    r.kind = kind;
    r.done = [this](bool ok, const std::string& msg) { outcomes.push_back({ok, msg}); };
    return r;
  }
  void submit(OpRequest::Kind kind) {
    m->submit(op(kind));
    settle();
  }
  /// A deploy whose staging ends with release `id`.
  void deploy(const std::string& id) {
    m->submit(op(OpRequest::Kind::Deploy));
    settle();
    REQUIRE(world.stage_then);
    auto then = std::exchange(world.stage_then, nullptr);
    then({true, id, "1.0", "", ""});
    settle();
  }
  void ready(pid_t pid) {
    m->on_ready(pid);
    settle();
  }
  void exit(pid_t pid, const std::string& how = "exited with status 1") {
    m->on_exit(pid, how, "");
    settle();
  }
  void ready_all(const std::string& release) {
    for (pid_t p : world.pids_of(release))
      if (auto* w = m->find(p); w && w->state == WorkerState::Starting) ready(p);
  }
  std::vector<pid_t> serving() const {
    std::vector<pid_t> out;
    for (const auto& s : m->slots()) out.push_back(s.serving);
    return out;
  }
  size_t count(WorkerState state) const {
    size_t n = 0;
    for (const auto& [pid, w] : m->workers()) n += w.state == state;
    return n;
  }
  /// Deploys `id` onto every slot and lets each batch become ready: the app is up on it.
  void go_live(const std::string& id) {
    deploy(id);
    for (int i = 0; i < 20 && m->phase() == Phase::Rolling; ++i) ready_all(id);
    REQUIRE(m->phase() == Phase::Idle);
    REQUIRE(outcomes.back().first);
  }
};

}  // namespace

TEST_CASE("deploy: batches of max_surge, the old worker drains only after its replacement is ready") {
  Rig r(app_config(4, 2));
  r.go_live("R1");
  auto old = r.serving();
  CHECK(r.world.current_release == "R1");

  r.deploy("R2");
  CHECK(r.m->phase() == Phase::Rolling);
  auto batch1 = r.world.pids_of("R2");
  REQUIRE(batch1.size() == 2);  // max_surge = 2
  r.ready(batch1[0]);
  CHECK(r.world.signals.empty());  // half a batch ready: nobody drains yet
  r.ready(batch1[1]);
  CHECK(r.world.signals[old[0]] == std::vector<int>{SIGTERM});
  CHECK(r.world.signals[old[1]] == std::vector<int>{SIGTERM});
  CHECK_FALSE(r.world.signals.count(old[2]));
  // Capacity never drops: 4 serving at every step.
  auto now_serving = r.serving();
  CHECK(std::count(now_serving.begin(), now_serving.end(), 0) == 0);
  auto batch2 = r.world.pids_of("R2");
  REQUIRE(batch2.size() == 4);
  r.ready(batch2[2]);
  r.ready(batch2[3]);
  CHECK(r.m->phase() == Phase::Idle);
  REQUIRE(r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("live: R2") == 0);
  CHECK(r.world.current_release == "R2");
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::Activate);
  CHECK(r.world.prunes.size() == 2);  // one per activation, queued after it
  for (pid_t p : old) r.exit(p, "exited with status 0");
  CHECK(r.m->workers().size() == 4);
}

TEST_CASE("readiness timeout of an incoming worker fails the rollout; swapped slots are swapped back") {
  Rig r(app_config(3));
  r.go_live("R1");
  r.deploy("R2");
  auto first = r.world.pids_of("R2");
  r.ready(first[0]);  // slot 0 swapped to R2
  auto second = r.world.pids_of("R2");
  REQUIRE(second.size() == 2);
  r.advance(5100ms);  // slot 1's worker never says ready
  CHECK(r.m->reverting());
  CHECK(r.world.signals[second[1]] == std::vector<int>{SIGTERM});  // the late one drains
  // Slot 0 goes back: a new R1 worker first, then R2's drains.
  auto back = r.world.pids_of("R1");
  REQUIRE(back.size() == 4);
  CHECK_FALSE(r.world.signals.count(first[0]));
  r.ready(back[3]);
  CHECK(r.world.signals[first[0]] == std::vector<int>{SIGTERM});
  REQUIRE(!r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("reverted: worker 1") == 0);
  CHECK(r.outcomes.back().second.find("not ready within 5s") != std::string::npos);
  CHECK(r.world.current_release == "R1");  // current never moved
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::Failed);
  CHECK(r.world.alerts_of("rollout_failed") == 1);
}

TEST_CASE("an incoming worker that exits before ready fails the rollout with its output") {
  Rig r(app_config(2));
  r.go_live("R1");
  r.deploy("R2");
  pid_t p = r.world.pids_of("R2")[0];
  r.m->on_exit(p, "exited with status 1", "; last output: Error: boom");
  r.settle();
  REQUIRE(!r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("exited before ready: exited with status 1; last output: Error: boom") != std::string::npos);
  CHECK(r.world.current_release == "R1");
  CHECK(r.m->phase() == Phase::Idle);
}

TEST_CASE("a revert that fails too keeps what serves and says so") {
  Rig r(app_config(2));
  r.go_live("R1");
  r.deploy("R2");
  r.ready(r.world.pids_of("R2")[0]);
  r.world.failing_spawns.insert("R1");  // going back cannot start R1 either
  r.exit(r.world.pids_of("R2")[1]);
  REQUIRE(!r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("and reverting failed") != std::string::npos);
  CHECK(r.world.alerts_of("rollout_failed") == 1);
}

TEST_CASE("a newer request replaces the waiting one; its requester is told") {
  Rig r(app_config(1));
  r.go_live("R1");
  r.deploy("R2");  // rolling
  r.submit(OpRequest::Kind::Reload);
  r.submit(OpRequest::Kind::Restart);
  REQUIRE(r.outcomes.size() == 2);
  CHECK(r.outcomes.back() == std::pair<bool, std::string>{false, "superseded by a newer request (restart)"});
  CHECK(r.m->pending()->kind == OpRequest::Kind::Restart);
  r.ready_all("R2");
  CHECK(r.outcomes[2].first);  // the deploy
  // Then the restart runs: it stops everything first.
  CHECK(r.m->running()->kind == OpRequest::Kind::Restart);
  CHECK(r.m->phase() == Phase::Stopping);
}

TEST_CASE("crash restarts back off 100ms doubling, reset after 30s of health; 5 in a row raise crash_loop") {
  Rig r(app_config(1));
  r.go_live("R1");
  size_t spawns = r.world.spawned.size();
  std::vector<std::chrono::milliseconds> waits;
  for (int crash = 1; crash <= 5; ++crash) {
    pid_t p = r.m->slots()[0].serving;
    r.ready(p);
    r.exit(p);
    auto waited = 0ms;
    while (r.world.spawned.size() == spawns && waited < 60s) r.advance(10ms), waited += 10ms;
    REQUIRE(r.world.spawned.size() == spawns + 1);
    spawns++;
    waits.push_back(waited);
  }
  CHECK(waits == std::vector<std::chrono::milliseconds>{100ms, 200ms, 400ms, 800ms, 1600ms});
  CHECK(r.world.alerts_of("crash_loop") == 1);
  CHECK(r.m->slots()[0].restarts == 5);
  // 30 s up resets the count: the next crash restarts after 100 ms again.
  pid_t p = r.m->slots()[0].serving;
  r.ready(p);
  r.advance(timing::kHealthyPeriod);
  r.exit(p);
  r.advance(100ms);
  CHECK(r.world.spawned.size() == spawns + 1);
  CHECK(r.m->slots()[0].crashes == 1);
}

TEST_CASE("a worker over max_memory is replaced by a Replace operation, one at a time") {
  AppConfig app = app_config(2);
  app.max_memory = 100 << 20;
  Rig r(app);
  r.go_live("R1");
  auto old = r.serving();
  r.world.rss_of[old[1]] = 200 << 20;
  r.advance(timing::kMemoryCheck);
  CHECK(r.world.alerts_of("memory_replaced") == 1);
  REQUIRE(r.m->running());
  CHECK(r.m->running()->kind == OpRequest::Kind::Replace);
  auto fresh = r.world.pids_of("R1").back();
  CHECK(r.world.spawned.back().slot == 1);
  r.ready(fresh);
  CHECK(r.world.signals[old[1]] == std::vector<int>{SIGTERM});
  CHECK_FALSE(r.world.signals.count(old[0]));
  CHECK(r.m->slots()[1].serving == fresh);
}

TEST_CASE("history: each operation's end, who asked and how long it took; each crash restart; the slot's last exit") {
  AppConfig app = app_config(2);
  app.max_memory = 100 << 20;
  Rig r(app);
  OpRequest deploy = r.op(OpRequest::Kind::Deploy);
  deploy.uid = 1000;
  deploy.source = "git";
  r.m->submit(std::move(deploy));
  r.settle();
  auto then = std::exchange(r.world.stage_then, nullptr);
  r.advance(1500ms);  // staging took 1.5 s
  then({true, "R1", "1.0", "", ""});
  r.settle();
  r.ready_all("R1");
  r.ready_all("R1");
  REQUIRE(r.m->phase() == Phase::Idle);
  REQUIRE(r.world.history_lines.size() == 1);
  const auto& h = r.world.history_lines[0];
  CHECK(h.app == "web");
  CHECK(h.op == "deploy");
  CHECK(h.ok);
  CHECK(h.uid == 1000);
  CHECK(h.source == "git");
  CHECK(h.release == "R1");
  CHECK(h.seconds == doctest::Approx(1.5));
  CHECK(h.detail.find("live: R1") == 0);

  pid_t p = r.m->slots()[0].serving;
  r.exit(p, "exited with status 3");
  REQUIRE(r.world.history_lines.size() == 2);
  CHECK(r.world.history_lines[1].op == "crash");
  CHECK_FALSE(r.world.history_lines[1].ok);
  CHECK(r.world.history_lines[1].uid == -1);
  CHECK(r.world.history_lines[1].detail.find("exited with status 3; restarting in 100ms") != std::string::npos);
  CHECK(r.m->slots()[0].last_exit.ends_with(" exited with status 3"));
  r.advance(100ms);
  r.ready_all("R1");

  r.world.rss_of[r.m->slots()[1].serving] = 200 << 20;
  r.advance(timing::kMemoryCheck);
  r.ready_all("R1");
  REQUIRE(r.world.history_lines.size() == 3);
  CHECK(r.world.history_lines[2].op == "replace");
  CHECK(r.world.history_lines[2].source == "max_memory");
  CHECK(r.m->slots()[1].last_exit.find("replaced: 200M over max_memory") != std::string::npos);

  r.submit(OpRequest::Kind::Stop);
  for (pid_t w : r.serving()) r.exit(w, "exited with status 0");
  for (const auto& [pid, w] : std::map(r.m->workers())) r.exit(pid, "exited with status 0");
  REQUIRE(r.world.history_lines.size() == 4);
  CHECK(r.world.history_lines[3].op == "stop");
  CHECK(r.world.history_lines[3].release == "R1");
}

TEST_CASE("stop drains everything and closes the sockets; start binds them and runs current") {
  Rig r(app_config(2));
  r.go_live("R1");
  auto old = r.serving();
  r.submit(OpRequest::Kind::Stop);
  CHECK(r.m->phase() == Phase::Stopping);
  for (pid_t p : old) CHECK(r.world.signals[p] == std::vector<int>{SIGTERM});
  for (pid_t p : old) r.exit(p, "exited with status 0");
  CHECK(r.outcomes.back() == std::pair<bool, std::string>{true, "stopped"});
  CHECK(r.world.sockets_closed);
  r.advance(1s);  // nothing restarts a stopped app
  CHECK(r.m->workers().empty());

  r.submit(OpRequest::Kind::Start);
  CHECK_FALSE(r.world.sockets_closed);
  CHECK(r.m->workers().size() == 2);
  r.ready_all("R1");
  CHECK(r.outcomes.back().first);
  CHECK(r.m->phase() == Phase::Idle);
}

TEST_CASE("restart: stop, then start in one operation") {
  Rig r(app_config(1));
  r.go_live("R1");
  pid_t old = r.serving()[0];
  r.submit(OpRequest::Kind::Restart);
  r.exit(old, "exited with status 0");
  CHECK(r.m->phase() == Phase::Launching);
  r.ready_all("R1");
  CHECK(r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("running 1 workers on R1") == 0);
}

TEST_CASE("a draining worker: drain_stalled at drain_timeout, SIGKILL and worker_killed at kill_timeout") {
  Rig r(app_config(1));
  r.go_live("R1");
  pid_t old = r.serving()[0];
  r.go_live("R2");
  CHECK(r.world.signals[old] == std::vector<int>{SIGTERM});
  r.advance(9990ms);
  CHECK(r.world.alerts_of("drain_stalled") == 0);
  r.advance(20ms);
  CHECK(r.world.alerts_of("drain_stalled") == 1);
  CHECK(r.world.killed.empty());
  r.advance(50s);
  CHECK(r.world.killed == std::set<pid_t>{old});
  CHECK(r.world.alerts_of("worker_killed") == 1);
  r.exit(old, "killed by SIGKILL");
  CHECK(r.count(WorkerState::Draining) == 0);
}

TEST_CASE("a drain that ends in time raises nothing") {
  Rig r(app_config(1));
  r.go_live("R1");
  pid_t old = r.serving()[0];
  r.go_live("R2");
  r.advance(2s);
  r.exit(old, "exited with status 0");
  r.advance(70s);
  CHECK(r.world.alerts.empty());
  CHECK(r.world.killed.empty());
}

TEST_CASE("adopted workers of a previous agent serve until ours are ready, then drain; kill_timeout holds") {
  Rig r(app_config(2));
  r.world.current_release = "R1";
  r.m->adopt({501, 502});
  r.submit(OpRequest::Kind::Start);
  CHECK(r.world.signals.empty());  // ours are not ready yet: the adopted ones keep serving
  r.ready_all("R1");
  CHECK(r.world.signals[501] == std::vector<int>{SIGTERM});
  CHECK(r.world.signals[502] == std::vector<int>{SIGTERM});
  r.exit(501, "");
  r.advance(60s);
  CHECK(r.world.killed == std::set<pid_t>{502});  // still there at kill_timeout
  CHECK(r.world.alerts_of("drain_stalled") == 0);
  r.exit(502, "");
  CHECK(r.m->workers().size() == 2);
}

TEST_CASE("a failed start leaves adopted workers serving until crash restarts bring ours up") {
  Rig r(app_config(1));
  r.world.current_release = "R1";
  r.m->adopt({501});
  r.submit(OpRequest::Kind::Start);
  r.exit(r.world.pids_of("R1")[0]);
  REQUIRE(!r.outcomes.back().first);
  CHECK(r.world.signals.empty());
  r.advance(100ms);  // the crash restart
  r.ready_all("R1");
  CHECK(r.world.signals[501] == std::vector<int>{SIGTERM});
}

TEST_CASE("staging refused, a failed build or preflight: nothing running is touched") {
  Rig r(app_config(1));
  r.go_live("R1");
  pid_t serving = r.serving()[0];

  r.m->submit(r.op(OpRequest::Kind::Deploy));
  r.settle();
  std::exchange(r.world.stage_then, nullptr)({false, "", "", "", "package.json: no version"});
  r.settle();
  CHECK(r.outcomes.back() == std::pair<bool, std::string>{false, "refused: package.json: no version"});
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::Refused);

  AppConfig with_build = app_config(1);
  with_build.build = "npm ci";
  r.m->set_config(with_build);
  r.deploy("R2");
  CHECK(r.m->phase() == Phase::Building);
  std::exchange(r.world.build_then, nullptr)({false, "exited with status 1", {"npm ERR! missing script"}});
  r.settle();
  CHECK(r.outcomes.back().second == "refused: build failed: exited with status 1; last output: npm ERR! missing script");

  r.world.preflight_ok = false;
  r.m->set_config(app_config(1));
  r.deploy("R3");
  CHECK(r.outcomes.back().second == "refused: preflight of R3: node: not found in PATH");
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::Failed);

  CHECK(r.serving()[0] == serving);
  CHECK(r.world.signals.empty());
  CHECK(r.world.current_release == "R1");
  CHECK(r.world.alerts_of("deploy_refused") == 3);
}

TEST_CASE("rollback 1 rolls the previous release out and journals it") {
  Rig r(app_config(1));
  r.go_live("R1");
  r.go_live("R2");
  r.world.rollback_history = {"R1", "R2"};
  r.submit(OpRequest::Kind::Rollback);
  CHECK(r.m->phase() == Phase::Rolling);
  r.ready_all("R1");
  CHECK(r.outcomes.back().first);
  CHECK(r.world.current_release == "R1");
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::RollbackTo);
}

TEST_CASE("a reloaded config waits for the running operation; instances then change") {
  Rig r(app_config(2));
  r.go_live("R1");
  r.deploy("R2");
  r.m->set_config(app_config(3));
  CHECK(r.m->slots().size() == 2);
  CHECK(r.world.applied_configs == 0);
  r.ready_all("R2");
  r.ready_all("R2");
  CHECK(r.world.applied_configs == 1);
  REQUIRE(r.m->slots().size() == 3);
  r.settle();
  CHECK(r.m->slots()[2].serving != 0);  // the new slot is staffed on current
  CHECK(r.world.spawned.back().release == "R2");
}

TEST_CASE("shutdown: operations end, every worker drains, then when_empty once") {
  Rig r(app_config(2));
  r.go_live("R1");
  r.m->submit(r.op(OpRequest::Kind::Deploy));
  r.settle();
  int empties = 0;
  r.m->shutdown([&] { empties++; });
  CHECK(r.world.cancelled);
  CHECK(r.outcomes.back() == std::pair<bool, std::string>{false, "the agent is shutting down"});
  for (pid_t p : r.world.pids_of("R1")) CHECK(r.world.signals[p] == std::vector<int>{SIGTERM});
  r.settle();
  CHECK(empties == 0);
  for (pid_t p : r.world.pids_of("R1")) r.exit(p, "exited with status 0");
  r.advance(1s);
  CHECK(empties == 1);
  CHECK(r.world.spawned.size() == 2);  // no crash restart during a shutdown
}

namespace {

AppConfig baking_config(int instances) {
  AppConfig app = app_config(instances);
  app.listen.push_back(*base::parse_listen("127.0.0.1:8080", nullptr));
  app.health_method = "GET";
  app.health_path = "/healthz";
  app.bake = 60s;
  return app;
}

// R1 live without a bake, then the bake turned on: the next deploy bakes.
void live_then_bake(Rig& r, int instances) {
  r.go_live("R1");
  r.m->set_config(baking_config(instances));
  r.deploy("R2");
  for (int i = 0; i < instances && r.m->phase() == Phase::Rolling; ++i) r.ready_all("R2");
  REQUIRE(r.m->phase() == Phase::Baking);
  for (pid_t p : r.world.pids_of("R1")) r.m->on_exit(p, "exited with status 0", "");  // drained
  r.settle();
}

}  // namespace

TEST_CASE("bake: a release that stays healthy is journaled baked and the deploy ends ok after the bake") {
  Rig r(app_config(2));
  live_then_bake(r, 2);
  size_t outcomes = r.outcomes.size();
  for (int i = 0; i < 29; ++i) {
    r.advance(2s);
    r.m->on_probe(true, "GET /healthz: HTTP 200: ok");
  }
  CHECK(r.outcomes.size() == outcomes);  // still baking: the requester waits
  REQUIRE(r.m->baking());
  CHECK(r.m->baking()->first == "R2");
  r.advance(2100ms);
  REQUIRE(r.outcomes.size() == outcomes + 1);
  CHECK(r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("live: R2") == 0);
  CHECK(r.outcomes.back().second.find("; baked 1m: 29 probes ok") != std::string::npos);
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::Baked);
  CHECK(r.world.current_release == "R2");
  CHECK(r.world.alerts.empty());  // no bake_failed, no unhealthy (and every drain ended)
}

TEST_CASE("bake: health_failures failed probes in a row roll the release back with the same rolling swap") {
  Rig r(app_config(2));
  live_then_bake(r, 2);
  auto bad = r.serving();
  r.m->on_probe(false, "GET /healthz: HTTP 500: broken");
  r.m->on_probe(true, "GET /healthz: HTTP 200: ok");  // a success resets the count
  r.m->on_probe(false, "GET /healthz: HTTP 500: broken");
  r.m->on_probe(false, "GET /healthz: HTTP 500: broken");
  CHECK(r.m->phase() == Phase::Baking);
  r.m->on_probe(false, "GET /healthz: HTTP 500: broken");
  r.settle();
  CHECK(r.m->phase() == Phase::Rolling);
  CHECK(r.world.alerts_of("bake_failed") == 1);
  CHECK_FALSE(r.world.signals.count(bad[0]));  // capacity kept: R2 drains only when R1 is ready
  r.ready_all("R1");
  r.ready_all("R1");
  CHECK(r.world.signals[bad[0]] == std::vector<int>{SIGTERM});
  CHECK(r.world.signals[bad[1]] == std::vector<int>{SIGTERM});
  REQUIRE(!r.outcomes.back().first);
  CHECK(r.outcomes.back().second ==
        "rolled back to R1: R2 failed its bake: health probe failed 3 times in a row: GET /healthz: HTTP 500: broken");
  const JournalWrite& w = r.world.journal_writes.back();
  CHECK(w.kind == JournalWrite::Kind::BakeFailed);
  CHECK(w.release == "R2");
  CHECK(w.to == "R1");
  CHECK(r.world.current_release == "R1");
  CHECK(r.world.alerts_of("unhealthy") == 0);  // the bake_failed alert said it
}

TEST_CASE("bake: a worker that exits during the bake is not restarted: the release goes back out") {
  Rig r(app_config(3));
  live_then_bake(r, 3);
  pid_t crashed = r.serving()[1];
  size_t spawns = r.world.spawned.size();
  r.m->on_exit(crashed, "exited with status 3", "; last output: TypeError: x is undefined");
  r.settle();
  CHECK(r.m->phase() == Phase::Rolling);
  // The empty slot goes first, on the earlier release; nothing restarts R2.
  REQUIRE(r.world.spawned.size() == spawns + 1);
  CHECK(r.world.spawned.back().slot == 1);
  CHECK(r.world.spawned.back().release == "R1");
  for (int i = 0; i < 3; ++i) r.ready_all("R1");
  REQUIRE(!r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("exited during the bake: exited with status 3; last output: TypeError: x is undefined") !=
        std::string::npos);
  CHECK(r.world.current_release == "R1");
  for (const auto& s : r.world.spawned) CHECK_FALSE((s.release == "R2" && s.slot == 1 && s.pid > crashed));
}

TEST_CASE("bake: a first release that fails its bake has nothing to go back to and says so") {
  Rig r(baking_config(1));
  r.deploy("R1");
  r.ready_all("R1");
  REQUIRE(r.m->phase() == Phase::Baking);
  r.exit(r.serving()[0]);
  REQUIRE(!r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("nothing to roll back to") != std::string::npos);
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::BakeFailed);
  CHECK(r.world.journal_writes.back().to.empty());
  CHECK(r.world.alerts_of("bake_failed") == 1);
}

TEST_CASE("health after the bake: one unhealthy alert when it fails, one healthy when it recovers") {
  Rig r(app_config(1));
  AppConfig app = baking_config(1);
  app.bake = 0ms;
  r.m->set_config(app);
  r.go_live("R1");
  for (int i = 0; i < 10; ++i) r.m->on_probe(false, "GET /healthz: no answer within 2s");
  CHECK(r.m->health() == Health::Unhealthy);
  CHECK(r.world.alerts_of("unhealthy") == 1);
  for (int i = 0; i < 5; ++i) r.m->on_probe(true, "GET /healthz: HTTP 200");
  CHECK(r.m->health() == Health::Healthy);
  CHECK(r.world.alerts_of("healthy") == 1);
  CHECK(r.m->last_probe_failure() == "GET /healthz: no answer within 2s");
}

TEST_CASE("bake failure: the journal goes first, adopted workers went at the commit, the way back is kept from pruning") {
  Rig r(app_config(2));
  r.world.current_release = "R1";
  r.m->adopt({501});
  r.submit(OpRequest::Kind::Start);
  r.ready_all("R1");
  r.exit(501, "");
  r.m->set_config(baking_config(2));
  r.m->adopt({601});  // (another previous agent's worker, for the commit to drain)
  r.deploy("R2");
  for (int i = 0; i < 2 && r.m->phase() == Phase::Rolling; ++i) r.ready_all("R2");
  REQUIRE(r.m->phase() == Phase::Baking);
  CHECK(r.world.signals[601] == std::vector<int>{SIGTERM});  // at the commit, not after the bake
  REQUIRE(!r.world.prunes.empty());
  CHECK(r.world.prunes.back().count("R1") == 1);  // what a failed bake goes back to
  size_t spawns = r.world.spawned.size();
  for (int i = 0; i < 3; ++i) r.m->on_probe(false, "GET /healthz: HTTP 500");
  r.settle();
  // bad and current back are on disk before the first worker of the way back starts.
  REQUIRE(r.world.journal_writes.back().kind == JournalWrite::Kind::BakeFailed);
  CHECK(r.world.current_release == "R1");
  CHECK(r.world.spawned.size() == spawns + 1);
}

TEST_CASE("bake failure: a release before that no longer passes preflight is not journaled failed") {
  Rig r(app_config(1));
  live_then_bake(r, 1);
  r.world.preflight_ok = false;
  r.m->on_exit(r.serving()[0], "exited with status 1", "");
  r.settle();
  REQUIRE(!r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("refused: preflight of R1") == 0);
  for (const auto& w : r.world.journal_writes) CHECK_FALSE((w.kind == JournalWrite::Kind::Failed && w.release == "R1"));
}

TEST_CASE("health: no unhealthy alert while an operation brings workers up, nor healthy after a failed bake") {
  Rig r(app_config(1));
  AppConfig app = baking_config(1);
  r.m->set_config(app);
  r.world.current_release = "R1";
  r.m->submit(r.op(OpRequest::Kind::Start));
  r.settle();
  for (int i = 0; i < 5; ++i) r.m->on_probe(false, "GET /healthz: connect to 127.0.0.1:8080: Connection refused");
  CHECK(r.world.alerts_of("unhealthy") == 0);  // still launching
  r.ready_all("R1");
  r.m->on_probe(false, "GET /healthz: HTTP 500");
  CHECK(r.world.alerts_of("unhealthy") == 1);  // still failing once it is up
  r.m->on_probe(true, "GET /healthz: HTTP 200");
  CHECK(r.world.alerts_of("healthy") == 1);

  r.deploy("R2");
  r.ready_all("R2");
  REQUIRE(r.m->phase() == Phase::Baking);
  for (int i = 0; i < 3; ++i) r.m->on_probe(false, "GET /healthz: HTTP 500");
  r.settle();
  r.ready_all("R1");
  r.m->on_probe(true, "GET /healthz: HTTP 200");
  CHECK(r.world.alerts_of("healthy") == 1);  // the bake_failed alert was the one message
  CHECK(r.world.alerts_of("unhealthy") == 1);
  CHECK(r.world.alerts_of("bake_failed") == 1);
}

// --- The fleet's gate ----------------------------------------------------------------------

TEST_CASE("fleet: a deploy waits for its slot after preflight; a reload runs meanwhile; done after the commit") {
  Rig r(app_config(2));
  r.go_live("R1");
  r.world.fleet = true;
  r.deploy("R2");
  CHECK(r.world.fleet_calls == std::vector<std::string>{"acquire v-R2"});
  CHECK(r.world.pids_of("R2").empty());  // nothing starts before the turn
  REQUIRE(r.m->fleet_waiting());
  CHECK(*r.m->fleet_waiting() == "R2");
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::Note);
  // A reload does not wait on the fleet.
  size_t before = r.outcomes.size();
  r.submit(OpRequest::Kind::Reload);
  r.ready_all("R1");
  r.ready_all("R1");
  REQUIRE(r.outcomes.size() == before + 1);
  CHECK(r.outcomes.back().first);
  // The turn comes: the release rolls, and the slot is given back done once it is live.
  r.world.turn_progress("waiting for a fleet slot: web-02 rolling 1.0");
  r.world.turn_then({FleetTurn::Kind::Go, "wave 2 of 3"});
  r.settle();
  CHECK(r.m->phase() == Phase::Rolling);
  r.ready_all("R2");
  r.ready_all("R2");
  REQUIRE(r.outcomes.back().first);
  CHECK(r.outcomes.back().second.find("live: R2") == 0);
  CHECK(r.world.fleet_calls.back() == "done v-R2");
}

TEST_CASE("fleet: a turn that comes while another operation runs waits for its end") {
  Rig r(app_config(1));
  r.go_live("R1");
  r.world.fleet = true;
  r.deploy("R2");
  r.submit(OpRequest::Kind::Restart);  // stop, then start: it runs while the deploy waits
  CHECK(r.m->phase() == Phase::Stopping);
  r.world.turn_then({FleetTurn::Kind::Go, "wave 1 of 2"});
  r.settle();
  CHECK(r.world.pids_of("R2").empty());
  for (pid_t p : r.world.pids_of("R1")) r.exit(p, "exited with status 0");
  r.ready_all("R1");  // the restart ends
  r.settle();
  CHECK(r.m->phase() == Phase::Rolling);
  CHECK(r.world.pids_of("R2").size() == 1);
}

TEST_CASE("fleet: a halted version gives up, journaled halted, nothing started; a newer deploy replaces a waiting one") {
  Rig r(app_config(2));
  r.go_live("R1");
  r.world.fleet = true;
  r.deploy("R2");
  r.world.turn_then({FleetTurn::Kind::Halted, "halted by web-01: bake failed: GET /health: HTTP 500"});
  r.settle();
  REQUIRE_FALSE(r.outcomes.back().first);
  CHECK(r.outcomes.back().second == "halted: version v-R2 is halted by web-01: bake failed: GET /health: HTTP 500");
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::Halted);
  CHECK(r.world.pids_of("R2").empty());
  CHECK(r.world.alerts.empty());  // the host that halted it alerts; the others do not
  r.deploy("R3");
  size_t before = r.outcomes.size();
  r.deploy("R4");
  REQUIRE(r.outcomes.size() == before + 1);
  CHECK(r.outcomes.back().second == "superseded by a newer request (deploy)");
  CHECK(r.world.fleet_calls[r.world.fleet_calls.size() - 2] == "abandon v-R3");
  CHECK(r.world.fleet_calls.back() == "acquire v-R4");
}

TEST_CASE("fleet: a failed bake halts the version through the fleet's verdict, with the bake_failed alert") {
  Rig r(app_config(2));
  r.go_live("R1");
  r.m->set_config(baking_config(2));
  r.world.fleet = true;
  r.deploy("R2");
  r.world.turn_then({FleetTurn::Kind::Go, "wave 1 of 3"});
  r.settle();
  r.ready_all("R2");
  r.ready_all("R2");
  REQUIRE(r.m->phase() == Phase::Baking);
  CHECK(r.world.fleet_calls.back() == "baking v-R2");
  for (int i = 0; i < 3; ++i) r.m->on_probe(false, "GET /healthz: HTTP 500: broken");
  r.settle();
  CHECK(r.world.alerts_of("bake_failed") == 0);  // raised by the verdict (as fleet_halted when it halts)
  CHECK(r.world.fleet_calls.back() == "failed v-R2: bake failed: health probe failed 3 times in a row: GET /healthz: HTTP 500: broken [bake_failed]");
  r.ready_all("R1");
  r.ready_all("R1");
  REQUIRE_FALSE(r.outcomes.back().first);
  CHECK(r.world.fleet_calls.size() == 3);  // no second verdict at the end of the way back
  CHECK(r.world.current_release == "R1");
}

TEST_CASE("fleet: a failed rollout halts too; --no-fleet passes the gate, journaled; a shutdown abandons the wait") {
  Rig r(app_config(1));
  r.go_live("R1");
  r.world.fleet = true;
  r.deploy("R2");
  r.world.turn_then({FleetTurn::Kind::Go, "wave 1 of 1"});
  r.settle();
  r.exit(r.world.pids_of("R2")[0], "exited with status 1");
  REQUIRE_FALSE(r.outcomes.back().first);
  CHECK(r.world.fleet_calls.back().find("failed v-R2: rollout failed: ") == 0);
  CHECK(r.world.fleet_calls.back().find("[rollout_failed]") != std::string::npos);

  OpRequest op = r.op(OpRequest::Kind::Deploy);
  op.no_fleet = true;
  r.m->submit(std::move(op));
  r.settle();
  std::exchange(r.world.stage_then, nullptr)({true, "R3", "1.0", "", ""});
  r.settle();
  CHECK(r.m->phase() == Phase::Rolling);
  CHECK(r.world.journal_writes.back().kind == JournalWrite::Kind::Note);
  CHECK(r.world.journal_writes.back().reason.find("--no-fleet") != std::string::npos);
  r.ready_all("R3");
  REQUIRE(r.outcomes.back().first);

  r.deploy("R4");
  REQUIRE(r.m->fleet_waiting());
  bool empty = false;
  r.m->shutdown([&] { empty = true; });
  r.settle();
  CHECK(r.outcomes.back().second == "the agent is shutting down");
  CHECK(r.world.fleet_calls.back() == "abandon v-R4");
  CHECK_FALSE(r.m->fleet_waiting());
}

TEST_CASE("fleet: a deploy queued behind a staging one replaces it once that one waits; a refusal after the turn gives the slot back") {
  Rig r(app_config(1));
  r.go_live("R1");
  r.world.fleet = true;
  r.m->submit(r.op(OpRequest::Kind::Deploy));  // A: staging
  r.settle();
  auto stage_a = std::exchange(r.world.stage_then, nullptr);
  r.m->submit(r.op(OpRequest::Kind::Deploy));  // B: queued behind A
  r.settle();
  size_t before = r.outcomes.size();
  stage_a({true, "R2", "1.0", "", ""});  // A waits for its slot; B starts
  r.settle();
  CHECK(r.world.fleet_calls.back() == "abandon v-R2");
  REQUIRE(r.outcomes.size() == before + 1);
  CHECK(r.outcomes.back().second == "superseded by a newer request (deploy)");
  std::exchange(r.world.stage_then, nullptr)({true, "R3", "1.0", "", ""});
  r.settle();
  CHECK(r.world.fleet_calls.back() == "acquire v-R3");
  CHECK(*r.m->fleet_waiting() == "R3");
  // Its turn comes, but preflight now refuses: nothing was touched, the version is not to blame.
  r.world.preflight_ok = false;
  r.world.turn_then({FleetTurn::Kind::Go, "wave 1 of 1"});
  r.settle();
  REQUIRE_FALSE(r.outcomes.back().first);
  CHECK(r.world.fleet_calls.back() == "abandon v-R3");
  // A shutdown while a slot is held gives it back too, never a verdict.
  r.world.preflight_ok = true;
  r.deploy("R4");
  r.world.turn_then({FleetTurn::Kind::Go, "wave 1 of 1"});
  r.settle();
  REQUIRE(r.m->phase() == Phase::Rolling);
  r.m->shutdown([] {});
  r.settle();
  CHECK(r.world.fleet_calls.back() == "abandon v-R4");
}

TEST_CASE("stats for /metrics: deploys by result, bakes, crash restarts, rollout and drain durations") {
  Rig r(app_config(1));
  r.go_live("R1");
  r.world.preflight_ok = false;
  r.deploy("R2");  // refused by preflight
  r.world.preflight_ok = true;
  r.world.fleet = true;
  r.deploy("R3");
  r.world.turn_then({FleetTurn::Kind::Halted, "halted by web-09: bake failed"});
  r.settle();
  r.world.fleet = false;
  r.m->set_config(baking_config(1));
  r.deploy("R4");
  r.ready_all("R4");
  for (int i = 0; i < 3; ++i) r.m->on_probe(false, "GET /healthz: HTTP 500");
  r.settle();
  r.ready_all("R1");  // back on R1
  for (pid_t p : r.world.pids_of("R4")) r.exit(p, "exited with status 0");
  r.advance(1500ms);
  r.exit(r.serving()[0], "exited with status 1");  // a crash: restarted
  const MachineStats& s = r.m->stats();
  CHECK(s.deploys.at("ok") == 1);
  CHECK(s.deploys.at("refused") == 1);
  CHECK(s.deploys.at("halted") == 1);
  CHECK(s.deploys.at("bake_failed") == 1);
  CHECK_FALSE(s.deploys.count("failed"));
  CHECK(s.bakes.at("failed") == 1);
  CHECK(s.restarts == 1);
  CHECK(s.rollout.count == 3);  // R1, R4, and the way back to R1
  CHECK(s.drain.count >= 1);
}

// --- agent upgrade: the machine handed to the next image (snapshot.cc) -------------------------

TEST_CASE("upgrade: busy while an operation runs or a worker starts; quiet once it is live") {
  Rig r(app_config(2));
  CHECK(r.m->busy().empty());
  r.deploy("R1");
  CHECK(r.m->busy().starts_with("deploy in progress (rolling "));
  for (int i = 0; i < 20 && r.m->phase() == Phase::Rolling; ++i) r.ready_all("R1");
  CHECK(r.m->busy().empty());
  r.exit(r.serving()[0]);  // a crash: its restart is a worker starting
  r.advance(200ms);
  CHECK(r.m->busy().find("is starting") != std::string::npos);
}

TEST_CASE("upgrade: the next image takes the workers over as they were, and a drain's timers go on from its start") {
  Rig r(app_config(2));
  r.go_live("R1");
  pid_t old0 = r.serving()[0];
  r.go_live("R2");  // R1's workers drain; drain_timeout 10s, kill_timeout 60s
  r.advance(4s);
  REQUIRE(r.m->busy().empty());
  AppMachine::Snapshot snap = r.m->snapshot();
  CHECK(snap.workers.size() == 4);
  std::vector<pid_t> serving = r.serving();

  // The next image: a fresh machine on the same loop and clock, given the snapshot.
  FakeWorld next{r.loop};
  AppMachine m2(r.loop, next, app_config(2));
  r.m.reset();  // the old image's timers are gone with it
  m2.restore(snap);
  r.settle();
  CHECK(next.spawned.empty());  // no worker started: every slot is served
  CHECK(m2.ready_slots() == 2);
  std::vector<pid_t> now_serving;
  for (const auto& s : m2.slots()) now_serving.push_back(s.serving);
  CHECK(now_serving == serving);
  // drain_timeout (10s) falls 6s after the handover, not 10s; kill_timeout (60s) 56s after it.
  r.advance(5990ms);
  CHECK(next.alerts_of("drain_stalled") == 0);
  r.advance(20ms);
  CHECK(next.alerts_of("drain_stalled") == 2);
  r.advance(50s - 30ms);
  CHECK(next.killed.empty());
  r.advance(20ms);
  CHECK(next.killed.count(old0) == 1);
  CHECK(next.alerts_of("worker_killed") == 2);
}

TEST_CASE("upgrade: a drain already past drain_timeout is not alerted again; an empty slot is staffed") {
  Rig r(app_config(2));
  r.go_live("R1");
  r.go_live("R2");
  r.advance(12s);  // drain_stalled went out from the old image
  REQUIRE(r.world.alerts_of("drain_stalled") == 2);
  pid_t crashed = r.serving()[1];
  AppMachine::Snapshot snap = r.m->snapshot();
  FakeWorld next{r.loop};
  next.next_pid = 5000;  // the old image's children keep their pids: a new one is another
  AppMachine m2(r.loop, next, app_config(2));
  r.m.reset();
  // The worker exited between the snapshot and the new image's start: its exit is seen then.
  m2.restore(snap);
  m2.on_exit(crashed, "exited with status 1", "");
  r.advance(1s);
  CHECK(next.alerts_of("drain_stalled") == 0);
  CHECK(next.spawned.size() == 1);  // its slot gets a worker again (crash restart)
  r.advance(48s);
  CHECK(next.killed.size() == 2);
  CHECK(next.alerts_of("worker_killed") == 2);  // 60s after the drains began
}

TEST_CASE("upgrade: a snapshot survives its JSON, times and counters included") {
  Rig r(app_config(2));
  r.go_live("R1");
  r.go_live("R2");
  r.exit(r.serving()[1]);
  AppMachine::Snapshot a = r.m->snapshot();
  AppMachine::Snapshot b = snapshot_from_json(nlohmann::json::parse(snapshot_json(a).dump()));
  REQUIRE(b.workers.size() == a.workers.size());
  for (size_t i = 0; i < a.workers.size(); ++i) {
    CHECK(b.workers[i].pid == a.workers[i].pid);
    CHECK(b.workers[i].state == a.workers[i].state);
    CHECK(b.workers[i].release == a.workers[i].release);
    CHECK(b.workers[i].drain_started == a.workers[i].drain_started);
  }
  REQUIRE(b.slots.size() == 2);
  CHECK(b.slots[1].last_exit == a.slots[1].last_exit);
  CHECK(b.slots[1].crashes == a.slots[1].crashes);
  CHECK(b.stats.deploys == a.stats.deploys);
  CHECK(b.stats.rollout.count == a.stats.rollout.count);
  CHECK(b.stats.restarts == a.stats.restarts);
  CHECK_THROWS(snapshot_from_json(nlohmann::json::parse(R"({"workers": 3})")));
}
