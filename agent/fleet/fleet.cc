#include "agent/fleet/fleet.h"

#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <spdlog/spdlog.h>

#include "agent/fleet/keys.h"
#include "agent/fleet/waves.h"
#include "base/units.h"

namespace agent::fleet {

namespace {

using json = nlohmann::json;
using namespace std::chrono_literals;

constexpr auto kPoll = 2s;          // waiters and halts are read again at least this often (the watch wakes them sooner)
constexpr auto kRetry = 1s;         // after etcd failed
constexpr auto kStopGrace = 2s;     // at exit: the lease's revocation gets this long

EtcdSettings etcd_settings(const FleetSettings& f) {
  return {f.etcd, f.etcd_user, f.etcd_password_file, f.etcd_ca_file, f.etcd_cert_file, f.etcd_key_file};
}

}  // namespace

Coordinator::Coordinator(FleetSettings settings, Events events)
    : settings_(std::move(settings)),
      events_(std::move(events)),
      etcd_(etcd_settings(settings_)),
      watch_etcd_(etcd_settings(settings_)) {
  thread_ = std::thread([this] { run(); });
  watcher_ = std::thread([this] { watch_loop(); });
}

Coordinator::~Coordinator() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  watch_etcd_.abort();
  etcd_.set_deadline(Clock::now() + kStopGrace);
  if (watcher_.joinable()) watcher_.join();
  if (thread_.joinable()) thread_.join();
}

std::string Coordinator::version_prefix(const std::string& app, const std::string& version) const {
  return prefix() + "apps/" + app + "/" + escape(version) + "/";
}

void Coordinator::post(std::function<bool(std::string*)> command) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands_.push_back(std::move(command));
    woken_ = true;
  }
  cv_.notify_all();
}

void Coordinator::acquire(const std::string& app, const std::string& version, const std::vector<FleetWave>& waves,
                          Progress progress, std::function<void(const Turn&)> then) {
  auto w = std::make_shared<Wait>(Wait{app, version, waves, std::move(progress), std::move(then), false, "", next_wait_id_++});
  post([this, w](std::string*) {
    waits_.push_back(std::make_unique<Wait>(std::move(*w)));
    return true;
  });
}

void Coordinator::baking(const std::string& app, const std::string& version) {
  post([this, app, version](std::string* err) {
    return etcd_.put(version_prefix(app, version) + "state/" + settings_.host, state_value("baking"), 0, err);
  });
}

void Coordinator::finish(const std::string& app, const std::string& version, bool ok, const std::string& reason,
                         std::function<void(bool)> then) {
  post([this, app, version, ok, reason, then](std::string* err) {
    std::string vp = version_prefix(app, version), me = settings_.host;
    json done_ops = json::array({Etcd::put_op(vp + "state/" + me, ok ? state_value("done") : state_value("failed", reason))});
    json compare = json::array();
    auto it = holding_.find({app, version});
    if (it != holding_.end() && it->second >= 0) {
      bool lost = false;
      if (!taken_by_another(vp + "slot/" + std::to_string(it->second), &lost, err)) return false;
      if (lost) it->second = -1;
    }
    if (it != holding_.end() && it->second < 0 && ok) {
      // Its slot was lost while cut off: its being done still counts, in a number of its own.
      std::vector<KeyValue> kvs;
      if (!etcd_.range_prefix(vp + "slot/", &kvs, nullptr, err)) return false;
      std::set<int> used;
      for (const auto& kv : kvs) used.insert(std::atoi(kv.key.c_str() + vp.size() + 5));
      int n = 0;
      while (used.count(n)) ++n;
      std::string key = vp + "slot/" + std::to_string(n);
      compare.push_back(Etcd::absent(key));
      done_ops.push_back(Etcd::put_op(key, json{{"host", me}, {"done", true}}.dump()));
    } else if (it != holding_.end() && it->second >= 0) {
      // Done: the slot stays taken for good (without the lease), counting toward the wave.
      // Failed: it is given back (a resume may need it).
      std::string key = vp + "slot/" + std::to_string(it->second);
      done_ops.push_back(ok ? Etcd::put_op(key, json{{"host", me}, {"done", true}}.dump()) : Etcd::delete_op(key));
    }
    bool made_halt = false;
    if (ok) {
      bool put = false;
      if (!etcd_.txn(compare, done_ops, json::array(), &put, err)) return false;
      if (!put) return *err = "another host took that slot number meanwhile", false;  // tried again
    } else {
      // Create-only: the first host to fail halts the version; a second one finds it halted.
      json halt = {{"host", me}, {"reason", reason}, {"time", now_iso()}};
      json with_halt = done_ops;
      with_halt.push_back(Etcd::put_op(vp + "halt", halt.dump()));
      if (!etcd_.txn(json::array({Etcd::absent(vp + "halt")}), with_halt, done_ops, &made_halt, err)) return false;
      if (made_halt) spdlog::warn("fleet: {} {} halted on every host of fleet {}: {}", app, version, settings_.name, reason);
      if (auto w = halt_watches_.find({app, version}); w != halt_watches_.end()) w->second = true;  // halted now, either way
    }
    holding_.erase({app, version});
    if (then) then(made_halt);
    return true;
  });
}

void Coordinator::abandon(const std::string& app, const std::string& version) {
  // Only the waits asked for before this call: a retried abandon must not take a newer one.
  std::uint64_t before = next_wait_id_.load();
  post([this, app, version, before](std::string* err) {
    std::erase_if(waits_, [&](const auto& w) { return w->app == app && w->version == version && w->id < before; });
    std::string vp = version_prefix(app, version), me = settings_.host;
    bool unused;
    json ops = json::array({Etcd::delete_op(vp + "want/" + me)});
    if (auto it = holding_.find({app, version}); it != holding_.end() && it->second >= 0) {
      std::string key = vp + "slot/" + std::to_string(it->second);
      bool lost = false;
      if (!taken_by_another(key, &lost, err)) return false;
      if (!lost) ops.push_back(Etcd::delete_op(key));  // never another host's
    }
    // A host that is done or failed keeps saying so: only an unfinished turn is taken back.
    KeyValue st;
    bool found = false;
    if (!etcd_.get(vp + "state/" + me, &st, &found, err)) return false;
    std::string s = found ? text(parse(st.value), "state") : "";
    if (s != "done" && s != "failed" && s != "halted") ops.push_back(Etcd::delete_op(vp + "state/" + me));
    if (!etcd_.txn(json::array(), ops, json::array(), &unused, err)) return false;
    holding_.erase({app, version});
    return true;
  });
}

// Our slot's key: another host's now? Ours can go with our lease while we are cut off, and
// another host may then take the number.
bool Coordinator::taken_by_another(const std::string& key, bool* taken, std::string* err) {
  KeyValue kv;
  bool found = false;
  if (!etcd_.get(key, &kv, &found, err)) return false;
  *taken = found && text(parse(kv.value), "host") != settings_.host;
  return true;
}

void Coordinator::watch_halt(const std::string& app, const std::string& version) {
  post([this, app, version](std::string*) {
    halt_watches_.emplace(std::make_pair(app, version), false);
    return true;
  });
}

std::string Coordinator::busy() {
  std::lock_guard<std::mutex> l(mu_);
  if (!commands_.empty()) return std::to_string(commands_.size()) + " change(s) not yet written to etcd";
  if (!waits_.empty()) return "a deploy of " + waits_.front()->app + " " + waits_.front()->version + " waits for its slot";
  if (!holding_.empty()) return holding_.begin()->first.first + " " + holding_.begin()->first.second + " holds a fleet slot";
  // A halt this host gave up on: `agent fleet resume` would find no one here to run it again.
  if (!halt_watches_.empty())
    return halt_watches_.begin()->first.first + " " + halt_watches_.begin()->first.second +
           " is halted in the fleet (agent fleet resume it, or deploy another version)";
  return "";
}

void Coordinator::publish(const std::string& app, const std::string& version) {
  post([this, app, version](std::string*) {
    if (published_[app] != version) hosts_dirty_ = true;
    published_[app] = version;
    return true;
  });
}

std::string Coordinator::host_value() const {
  json apps = json::object();
  for (const auto& [app, version] : published_) apps[app] = version;
  return json{{"host", settings_.host}, {"apps", apps}, {"updated", now_iso()}}.dump();
}

bool Coordinator::ensure_lease(std::string* err) {
  auto now = Clock::now();
  auto ttl = std::chrono::duration_cast<std::chrono::seconds>(settings_.lease_ttl + 999ms);
  if (lease_) {
    if (now < next_keepalive_) return true;
    std::int64_t left = 0;
    if (!etcd_.lease_keepalive(lease_, &left, err)) return false;
    if (left > 0) {
      next_keepalive_ = now + settings_.lease_ttl / 3;
      return true;
    }
    // etcd forgot it (we were cut off longer than its TTL): everything it held is gone.
    spdlog::warn("fleet: lease of {} expired in etcd; registering again", settings_.host);
    lease_ = 0;
  }
  if (!etcd_.lease_grant(ttl.count(), &lease_, err)) return false;
  next_keepalive_ = now + settings_.lease_ttl / 3;
  registered_ = false;
  return true;
}

bool Coordinator::register_host(std::string* err) {
  std::string me = settings_.host;
  if (!registered_) {
    json alive = {{"host", me}, {"pid", static_cast<long>(getpid())}, {"since", now_iso()}, {"agent", AGENT_VERSION}};
    if (!etcd_.put(prefix() + "alive/" + me, alive.dump(), lease_, err)) return false;
    // A new lease: the keys the old one held are gone. A slot held through a cut-off is taken
    // again (the rollout went on meanwhile), and a waiter asks again (at the end of the line).
    for (auto& [key, slot] : holding_) {
      if (slot < 0) continue;
      // Our slot went with the old lease. Taken back if nobody took it meanwhile; if another
      // host did (we were cut off longer than lease_ttl), the fleet has one more host rolling
      // than the wave allows until one of the two is done (docs/operating.md "Fleets").
      std::string k = version_prefix(key.first, key.second) + "slot/" + std::to_string(slot);
      bool back = false;
      if (!etcd_.txn(json::array({Etcd::absent(k)}), json::array({Etcd::put_op(k, json{{"host", me}, {"done", false}}.dump(), lease_)}),
                     json::array(), &back, err))
        return false;
      if (!back) {
        spdlog::warn("fleet: the slot of {} {} was taken by another host while this one was cut off from etcd; "
                     "one more host than the wave allows rolls until one of them is done", key.first, key.second);
        slot = -1;
      }
    }
    for (auto& w : waits_) w->asked = false;
    registered_ = true;
    spdlog::info("fleet: {} registered in fleet {} (etcd {})", me, settings_.name, etcd_.endpoint());
  }
  if (hosts_dirty_) {
    if (!etcd_.put(prefix() + "hosts/" + me, host_value(), 0, err)) return false;
    hosts_dirty_ = false;
  }
  return true;
}

bool Coordinator::evaluate(Wait& w, bool* finished, std::string* err) {
  *finished = false;
  std::string vp = version_prefix(w.app, w.version), me = settings_.host;
  if (!w.asked) {
    KeyValue st;
    bool found = false;
    if (!etcd_.get(vp + "state/" + me, &st, &found, err)) return false;
    if (found && text(parse(st.value), "state") == "done") {
      *finished = true;
      w.then({Turn::Kind::AlreadyDone, "this host is done with " + w.version + " already"});
      return true;
    }
    bool unused;
    json ops = json::array({Etcd::put_op(vp + "want/" + me, me, lease_), Etcd::put_op(vp + "state/" + me, state_value("waiting"))});
    if (!etcd_.txn(json::array(), ops, json::array(), &unused, err)) return false;
    w.asked = true;
  }
  std::vector<KeyValue> kvs, alive;
  if (!etcd_.range_prefix(vp, &kvs, nullptr, err) || !etcd_.range_prefix(prefix() + "alive/", &alive, nullptr, err)) return false;
  VersionKeys v = read_version(kvs, vp);
  if (v.halt) {
    std::string why = halt_text(*v.halt);
    bool unused;
    json ops = json::array({Etcd::delete_op(vp + "want/" + me), Etcd::put_op(vp + "state/" + me, state_value("halted", why))});
    if (!etcd_.txn(json::array(), ops, json::array(), &unused, err)) return false;
    *finished = true;
    w.then({Turn::Kind::Halted, why});
    return true;
  }
  if (std::none_of(v.want.begin(), v.want.end(), [&](const Waiter& x) { return x.host == me; })) {
    w.asked = false;  // our request went with an expired lease (or was taken back): ask again
    return true;
  }
  WaveView view = view_of(v, hosts_of(alive, prefix() + "alive/"));
  Decision d = decide(w.waves, view);
  if (auto mine = std::find(d.granted.begin(), d.granted.end(), me); mine != d.granted.end()) {
    // Slots are numbered 0 .. the open wave's end - 1, and a host takes one that is free with a
    // create-only transaction: never more holders (and done hosts) than the wave's end, however
    // stale what a host read. Hosts granted together take different numbers (their rank among
    // the granted), so they do not get in each other's way.
    int end = d.capacity + view.done;
    std::vector<int> free;
    for (int j = 0; j < end; ++j)
      if (!v.slots.count(j)) free.push_back(j);
    size_t rank = static_cast<size_t>(mine - d.granted.begin());
    bool got = false;
    int slot = rank < free.size() ? free[rank] : -1;
    if (slot >= 0) {
      std::string key = vp + "slot/" + std::to_string(slot);
      json compare = json::array({Etcd::absent(key), Etcd::absent(vp + "halt")});
      json ops = json::array({Etcd::put_op(key, json{{"host", me}, {"done", false}}.dump(), lease_),
                              Etcd::put_op(vp + "state/" + me, state_value("rolling")), Etcd::delete_op(vp + "want/" + me)});
      if (!etcd_.txn(compare, ops, json::array(), &got, err)) return false;
    }
    if (!got) {
      std::lock_guard<std::mutex> lock(mu_);
      woken_ = true;  // another host took that slot meanwhile: read the line again at once
      return true;
    }
    holding_[{w.app, w.version}] = slot;
    *finished = true;
    w.then({Turn::Kind::Go, "wave " + std::to_string(d.wave + 1) + " of " + std::to_string(d.waves)});
    return true;
  }
  // Say what it waits for, when that changes.
  std::string who;
  for (const auto& h : v.slot) who += (who.empty() ? "" : ", ") + h + " " + (state_of(v, h).empty() ? "rolling" : state_of(v, h)) + " " + w.version;
  std::string wave = "wave " + std::to_string(d.wave + 1) + " of " + std::to_string(d.waves) + ", " + std::to_string(d.capacity) +
                     " host" + (d.capacity == 1 ? "" : "s") + " at a time";
  std::string line = "waiting for a fleet slot: " + (who.empty() ? "the hosts before this one go first" : who) + " (" + wave + ")";
  if (line != w.said && w.progress) w.progress(line);
  w.said = line;
  return true;
}

bool Coordinator::check_halts(std::string* err) {
  for (auto it = halt_watches_.begin(); it != halt_watches_.end();) {
    const auto& [app, version] = it->first;
    KeyValue kv;
    bool found = false;
    if (!etcd_.get(version_prefix(app, version) + "halt", &kv, &found, err)) return false;
    // Lifted: gone after it was seen. (A watch asked for just before the finish that makes the
    // halt may be read before it exists: that is not a resume.)
    if (found || !it->second) {
      it->second = it->second || found;
      ++it;
      continue;
    }
    spdlog::info("fleet: the halt of {} {} was lifted", app, version);
    if (events_.resumed) events_.resumed(app, version);
    it = halt_watches_.erase(it);
  }
  return true;
}

void Coordinator::reached(bool ok, const std::string& err) {
  auto now = Clock::now();
  if (ok) {
    if (unreachable_alerted_ && events_.reachability) events_.reachability(false, "");
    if (unreachable_since_ != Clock::time_point{}) spdlog::info("fleet: etcd answers again ({})", etcd_.endpoint());
    unreachable_since_ = {};
    unreachable_alerted_ = false;
    return;
  }
  if (unreachable_since_ == Clock::time_point{}) {
    unreachable_since_ = now;
    spdlog::warn("fleet: etcd unreachable: {}", err);
  }
  for (auto& w : waits_) {
    std::string line = "waiting for a fleet slot: etcd unreachable (" + err + ")";
    if (line != w->said && w->progress) w->progress(line);
    w->said = line;
  }
  if (!unreachable_alerted_ && now - unreachable_since_ >= settings_.unreachable_alert) {
    unreachable_alerted_ = true;
    if (events_.reachability) events_.reachability(true, err);
  }
}

// Runs a command or an evaluation: what etcd holds was written by other programs too, and a
// value of a shape we do not expect is an error of that one call, never the end of the thread.
template <typename F>
bool guarded(F&& f, std::string* err) {
  try {
    return f();
  } catch (const std::exception& e) {
    *err = std::string("unexpected data in etcd: ") + e.what();
    spdlog::error("fleet: {}", *err);
    return false;
  }
}

bool Coordinator::run_commands(bool stop_at_failure, std::string* err) {
  std::deque<std::function<bool(std::string*)>> commands;
  {
    std::lock_guard<std::mutex> lock(mu_);
    commands.swap(commands_);
  }
  // In order; one that fails is tried again at the next step. With stop_at_failure, the ones
  // after it are not run now either.
  bool ok = true;
  std::deque<std::function<bool(std::string*)>> failed;
  for (auto& c : commands) {
    if (!ok && stop_at_failure) {
      failed.push_back(std::move(c));
      continue;
    }
    std::string e;
    if (guarded([&] { return c(&e); }, &e)) continue;
    failed.push_back(std::move(c));
    if (ok) ok = false, *err = e;
  }
  if (!failed.empty()) {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = failed.rbegin(); it != failed.rend(); ++it) commands_.push_front(std::move(*it));
  }
  return ok;
}

void Coordinator::step() {
  std::string err;
  bool ok = ensure_lease(&err) && register_host(&err);
  std::string cerr;
  if (!run_commands(false, &cerr) && ok) ok = false, err = cerr;
  if (ok) {
    for (size_t i = 0; i < waits_.size();) {
      bool finished = false;
      if (!guarded([&] { return evaluate(*waits_[i], &finished, &err); }, &err)) {
        ok = false;
        break;
      }
      if (finished) waits_.erase(waits_.begin() + static_cast<long>(i));
      else ++i;
    }
  }
  if (ok) ok = guarded([&] { return check_halts(&err); }, &err);
  reached(ok, err);
}

void Coordinator::run() {
  while (true) {
    step();
    std::unique_lock<std::mutex> lock(mu_);
    if (!stop_) {
      auto wake = next_keepalive_;
      if (unreachable_since_ != Clock::time_point{} || !commands_.empty()) wake = std::min(wake, Clock::now() + kRetry);
      if (!waits_.empty() || !halt_watches_.empty()) wake = std::min(wake, Clock::now() + kPoll);
      cv_.wait_until(lock, wake, [&] { return stop_ || woken_; });
      woken_ = false;
    }
    if (stop_) break;
  }
  // Going away, within the grace the destructor set on etcd_: what the apps asked last (the
  // abandons of their waits), in order up to the first that fails; then the lease is revoked,
  // so our slots and requests free at once rather than when it runs out.
  std::string err;
  if (!run_commands(true, &err)) spdlog::warn("fleet: not everything reached etcd before exit: {}", err);
  if (lease_ && !etcd_.lease_revoke(lease_, &err)) spdlog::warn("fleet: could not revoke the lease: {}", err);
}

void Coordinator::watch_loop() {
  std::string err;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stop_) return;
    }
    bool ok = watch_etcd_.watch(prefix(), 0, [this](std::int64_t) {
      std::lock_guard<std::mutex> lock(mu_);
      woken_ = true;
      cv_.notify_all();
      return !stop_;
    }, &err);
    std::unique_lock<std::mutex> lock(mu_);
    if (stop_) return;
    if (!ok) cv_.wait_for(lock, kRetry, [&] { return stop_; });
  }
}

}  // namespace agent::fleet
