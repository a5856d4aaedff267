// The shell around AppMachine: boot, the triggers (file watch, git hook), the store thread and
// the pipeline's disk and process work (stage, build, preflight, journal, prune), reloads and
// status. One worker's process (spawn, pipes, readiness) is in processes.cc.
#include "agent/rollout/supervisor.h"

#include <sys/epoll.h>
#include <unistd.h>

#include <set>
#include <tuple>
#include <spdlog/spdlog.h>

#include "agent/process/spawn.h"
#include "base/fs.h"
#include "hooks/build.h"
#include "hooks/git_hook.h"
#include "releases/git.h"
#include "releases/version.h"

namespace agent {

AppSupervisor::AppSupervisor(base::EventLoop& loop, Alerts& alerts, releases::HistoryLog& history, AgentSettings agent, AppConfig app,
                             std::vector<int> listen_fds, std::vector<std::string> agent_environ)
    : loop_(loop),
      alerts_(alerts),
      history_(history),
      agent_(std::move(agent)),
      app_(app),
      watched_(app),
      listen_fds_(std::move(listen_fds)),
      environ_(std::move(agent_environ)),
      store_(app_.app_dir(agent_)),
      machine_(loop, *this, std::move(app)) {}

AppSupervisor::~AppSupervisor() {
  if (cancel_) cancel_->store(true);
  for (auto& [id, t] : threads_)
    if (t.joinable()) t.join();
  // Nothing registered with the loop may outlive us: unwatch and cancel before closing.
  for (auto& [pid, p] : procs_) release_plumbing(p);
  for (auto& [fd, p] : pipes_) {
    loop_.remove(p->watch);
    ::close(fd);
  }
  loop_.remove(notify_watch_);
  loop_.cancel(probe_timer_);
}

bool AppSupervisor::init(std::string* err) {
  std::vector<std::string> notes;
  if (!store_.recover(&notes, err)) return false;
  for (const auto& n : notes) spdlog::info("{}: {}", app_.name, n);
  std::string log_dir = agent_.log_dir + "/" + app_.name;
  if (!base::make_dirs(log_dir, err)) return false;
  log_ = std::make_unique<base::LogFile>(log_dir + "/app.log", agent_.log_max_size, agent_.log_max_files);

  // sd_notify readiness: a socket only the agent and this app's workers can reach
  // (agent/process/notify_socket.h); refresh_account() gives it to the workers' account.
  if (!notify_.open(store_.app_dir() + "/notify.sock", err)) return false;
  refresh_account();
  notify_watch_ = loop_.add(notify_.fd(), EPOLLIN, [this](std::uint32_t) { on_notify(); });
  return true;
}

// ---------------------------------------------------------------------------------------------
// Boot and the triggers

void AppSupervisor::boot() {
  install_git_hook();
  schedule_probe();
  // What runs now (or is about to) sets the watch's baseline: only a different content deploys.
  std::string baseline, err;
  std::optional<OpRequest> op;
  if (taken_over_) {
    // The workers run: only the watch, from where the previous image left it.
    base::read_file(seen_path(), &baseline, &err);
  } else if (auto cur = store_.current()) {
    op.emplace();
    op->kind = OpRequest::Kind::Start;
    // The source content last acted on, not the live release's: after `agent rollback 1` the
    // source still holds the newer version, and a restart must not deploy it again.
    if (!base::read_file(seen_path(), &baseline, &err))
      base::read_file(store_.release_dir(*cur) + "/" + app_.watch, &baseline, &err);
  } else if (!app_.source.empty() && ::access((app_.source + "/" + app_.watch).c_str(), R_OK) == 0) {
    op.emplace();
    op->kind = OpRequest::Kind::Deploy;
    op->from = app_.source;
    op->source = "rpm";
    base::read_file(app_.source + "/" + app_.watch, &baseline, &err);
    remember_seen(baseline);
  } else if (!app_.git.empty()) {
    // Pushed while the agent was down (or before it first ran): the branch is what to run.
    // libgit2 is loaded and the repository read on the store thread, not on the loop.
    auto head = std::make_shared<std::optional<releases::GitCommit>>();
    store_job([repo = app_.git, branch = app_.branch, head](releases::ReleaseStore&) {
      releases::GitCommit c;
      std::string e;
      if (releases::git_resolve(repo, "refs/heads/" + branch, &c, &e)) *head = c;
    }, [this, head] {
      booted_ = true;
      if (shutting_down_) return;
      if (!*head) return log_nothing_deployed();
      OpRequest op;
      op.kind = OpRequest::Kind::Deploy;
      op.source = "git";
      op.revision = (*head)->oid;
      submit(std::move(op));
    });
    if (!app_.source.empty()) start_watch(app_, baseline);
    return;
  } else {
    log_nothing_deployed();
  }
  if (!app_.source.empty()) start_watch(app_, baseline);
  if (op) submit(std::move(*op));
  booted_ = true;
}

void AppSupervisor::schedule_probe() {
  // Armed only while the app has a probe: an app without one is never woken for it.
  if (app_.health_path.empty() || probe_timer_ || shutting_down_) return;
  probe_timer_ = loop_.after(app_.health_interval, [this] {
    probe_timer_ = 0;
    schedule_probe();  // the next one, with the config as it is now
    if (app_.listen.empty() || machine_.stopped() || probe_.busy() || !store_.current()) return;
    ProbeTarget t{app_.listen[0], app_.health_method, app_.health_path, app_.health_host, app_.health_timeout};
    probe_.start(t, [this](const ProbeResult& r) { machine_.on_probe(r.ok, r.detail); });
  });
}

void AppSupervisor::log_nothing_deployed() {
  spdlog::info("{}: nothing deployed yet; waiting for `agent deploy {} --from DIR`{}{}", app_.name, app_.name,
               app_.source.empty() ? "" : " or for " + app_.source + "/" + app_.watch,
               app_.git.empty() ? "" : " or for a push to " + app_.git + " (branch " + app_.branch + ")");
}

// An app with `git`: its bare repository and the hook that hands pushes to us, made or checked
// on the store thread (libgit2). A problem is logged and leaves the app running: pushes just
// do not deploy until it is fixed.
void AppSupervisor::install_git_hook() {
  if (app_.git.empty()) return;
  std::string self = self_executable();
  hooks::GitHookPlan plan{app_.git, app_.branch, app_.name, self.empty() ? "agent" : self, agent_.control_socket};
  store_job([plan, name = app_.name](releases::ReleaseStore&) {
    std::vector<std::string> notes;
    std::string err;
    if (!hooks::ensure_git_hook(plan, &notes, &err)) spdlog::error("{}: git trigger: {}; pushes will not deploy", name, err);
    for (const auto& note : notes) spdlog::info("{}: {}", name, note);
  }, [] {});
}

void AppSupervisor::start_watch(const AppConfig& app, const std::string& baseline) {
  // The callback stages from the source this watch was made for: a reloaded config that
  // changes `source` makes a new watch (update_config), never a watch of one directory that
  // stages another.
  std::string source = app.source;
  watch_ = std::make_unique<watchers::FileWatch>(loop_, app.source, app.watch, app.settle, app.poll_interval,
                                                 [this, source](const std::string& content) {
    remember_seen(content);
    OpRequest op;
    op.kind = OpRequest::Kind::Deploy;
    op.from = source;
    op.source = "rpm";
    submit(std::move(op));
  });
  std::string err;
  if (!watch_->start(baseline, &err)) {
    spdlog::error("{}: cannot watch {}: {}; deploy with agent deploy", app_.name, app.source, err);
    watch_.reset();
  }
}

std::string AppSupervisor::seen_path() const { return store_.app_dir() + "/source-seen"; }

void AppSupervisor::remember_seen(const std::string& content) {
  // fsynced, so on the store thread; queued before the deploy it leads to.
  store_job([path = seen_path(), content, name = app_.name](releases::ReleaseStore&) {
    std::string err;
    if (!base::write_file_atomically(path, content, 0644, &err))
      spdlog::warn("{}: cannot record what the watch acted on ({}): a restart may deploy this source content again", name, err);
  }, [] {});
}

void AppSupervisor::remember_seen_of(const std::string& dir) {
  store_job([path = seen_path(), file = dir.empty() ? "" : dir + "/" + app_.watch, name = app_.name](releases::ReleaseStore&) {
    std::string content, err;
    if (!file.empty() && !base::read_file(file, &content, &err)) content.clear();
    if (!base::write_file_atomically(path, content, 0644, &err))
      spdlog::warn("{}: cannot record what the watch acted on ({})", name, err);
  }, [] {});
}

// ---------------------------------------------------------------------------------------------
// The pipeline's work, for the machine

void AppSupervisor::stage(const OpRequest& r, std::function<void(const StageOutcome&)> then) {
  // Copying a tree can take seconds: on the store thread, with its own store handle.
  releases::StageRequest req;
  req.from = r.from;
  if (r.source == "git") req.git_repo = app_.git;
  req.watch = app_.watch;
  req.source = r.source;
  req.revision = r.revision;
  req.linked_dirs = app_.linked_dirs;
  // A package manager's drop must have settled as a whole tree, not only the watched file.
  if (r.source == "rpm") req.quiet = app_.settle;
  req.uid = r.uid;
  cancel_ = std::make_shared<std::atomic<bool>>(false);  // a shutdown stops the copy
  req.cancel = cancel_;
  base::EventLoop* loop = &loop_;
  std::weak_ptr<bool> alive = alive_;
  req.progress = [loop, alive, this](const std::string& line) {
    loop->post_from_thread([alive, this, line] {
      if (!alive.expired() && machine_.phase() == Phase::Staging) machine_.say(line);
    });
  };
  auto result = std::make_shared<StageOutcome>();
  result->error = "staging stopped unexpectedly (see the agent's log)";
  store_job([req, result, resumed = r.resumed](releases::ReleaseStore& store) {
    releases::Release rel;
    result->ok = store.stage(req, &rel, &result->error);
    result->release = rel.id;
    result->version = rel.version;
    result->revision = rel.revision;
    // A trigger does not bring back what failed its bake; `agent deploy` by hand does, and so
    // does `agent fleet resume`.
    if (result->ok && req.source != "cli" && !resumed) {
      if (auto bad = store.same_as_bad(rel, req.watch)) {
        std::string err;
        if (!store.discard(rel.id, &err)) spdlog::warn("removing the unused release {}: {}", rel.id, err);
        result->ok = false;
        result->error = "not deployed: the same " + std::string(req.source == "git" ? "commit" : req.watch + " content") + " as " +
                        bad->first + ", which failed its bake (" + bad->second + "); agent deploy deploys it anyway";
      }
    }
  }, [this, result, then = std::move(then)] {
    cancel_.reset();
    then(*result);
  });
}

void AppSupervisor::build(const std::string& release, std::function<void(const BuildOutcome&)> then) {
  AppConfig plain = app_;
  plain.shim.clear();  // the shim is for workers: a build's node processes listen on nothing
  LaunchContext ctx = launch_context(release, -1);
  LaunchEnv env;
  std::string err;
  if (!account(&ctx.account, &err) || !LaunchEnv::build(plain, ctx, &env, &err)) {
    BuildOutcome failed;
    failed.message = err;
    loop_.post([then, failed] { then(failed); });
    return;
  }
  hooks::BuildRequest req;
  req.command = app_.build;
  req.cwd = ctx.release_dir;
  req.envp = hooks::build_environment(env.envp());
  req.timeout = app_.build_timeout;
  if (::geteuid() == 0 && ctx.account.uid != 0) req.drop_to = ctx.account;  // as spawn drops
  cancel_ = std::make_shared<std::atomic<bool>>(false);
  req.cancel = cancel_;
  base::EventLoop* loop = &loop_;
  std::weak_ptr<bool> alive = alive_;
  req.on_line = [loop, alive, this](const std::string& line) {
    loop->post_from_thread([alive, this, line] {
      if (alive.expired()) return;
      if (log_) log_->write_line("build " + line);
      // The requester (a pusher's remote: lines) sees the build too, not just its end.
      const OpRequest* op = machine_.running();
      if (op && machine_.phase() == Phase::Building && op->progress) op->progress("build: " + line);
    });
  };
  machine_.say("building " + release + ": " + app_.build + " (as " + ctx.account.name + ", timeout " +
               base::format_duration(app_.build_timeout) + ")");
  auto result = std::make_shared<hooks::BuildResult>();
  off_loop([req, result] {
    // The build writes into the release (node_modules, dist/): the tree becomes the account's.
    std::string chown_err;
    if (req.drop_to && !base::chown_tree(req.cwd, req.drop_to->uid, req.drop_to->gid, &chown_err))
      result->message = "giving the release to " + req.drop_to->name + ": " + chown_err;
    else
      *result = hooks::run_build(req);
  }, [this, result, then = std::move(then)] {
    cancel_.reset();
    then({result->ok, result->message, result->tail});
  });
}

bool AppSupervisor::preflight(const std::string& release, std::string* resolved, std::string* err) {
  LaunchContext ctx = launch_context(release, -1);
  LaunchEnv env;
  bool ok = account(&ctx.account, err) && LaunchEnv::build(app_, ctx, &env, err) &&
            resolve_command(app_.command[0], env, ctx.release_dir, ctx.account, resolved, err);
  if (ok && !app_.user.empty() && ::geteuid() != 0 && ctx.account.uid != ::geteuid()) {
    *err = "user = \"" + app_.user + "\" needs the agent to run as root";
    return false;
  }
  return ok;
}

void AppSupervisor::rollback_target(int steps, const std::string& to,
                                    std::function<void(bool, const std::string&, const std::string&)> then) {
  auto result = std::make_shared<std::tuple<bool, std::string, std::string>>(false, "", "");
  store_job([steps, to, result](releases::ReleaseStore& store) {
    auto& [ok, target, err] = *result;
    ok = to.empty() ? store.rollback_target(steps, &target, &err) : store.check_rollback_to(to, &err);
    if (!to.empty()) target = to;
  }, [result, then = std::move(then)] {
    auto& [ok, target, err] = *result;
    then(ok, target, err);
  });
}

void AppSupervisor::journal(const JournalWrite& w, std::function<void(bool, const std::string&)> then) {
  auto result = std::make_shared<std::pair<bool, std::string>>(false, "");
  store_job([w, result, name = app_.name](releases::ReleaseStore& store) {
    auto& [ok, err] = *result;
    switch (w.kind) {
      case JournalWrite::Kind::Refused: {
        releases::StageRequest req;
        req.source = w.request.source;
        req.revision = w.request.revision;
        req.uid = w.request.uid;
        ok = store.record_refused(req, w.reason, &err);
        break;
      }
      case JournalWrite::Kind::Failed: ok = store.record_failed(w.release, w.reason, w.uid, &err); break;
      case JournalWrite::Kind::Activate: ok = store.activate(w.release, "deploy", w.uid, &err); break;
      case JournalWrite::Kind::RollbackTo: ok = store.rollback_to(w.release, w.uid, &err); break;
      case JournalWrite::Kind::Baked: ok = store.record_baked(w.release, w.reason, w.uid, &err); break;
      case JournalWrite::Kind::BakeFailed: ok = store.record_bake_failed(w.release, w.to, w.reason, w.uid, &err); break;
      case JournalWrite::Kind::Halted: ok = store.record(releases::Event::Halted, w.release, w.reason, w.uid, &err); break;
      case JournalWrite::Kind::Note: ok = store.record(releases::Event::Note, w.release, w.reason, w.uid, &err); break;
    }
    // Activate and RollbackTo failures are the machine's to report (the operation fails).
    if (!ok && w.kind != JournalWrite::Kind::Activate && w.kind != JournalWrite::Kind::RollbackTo)
      spdlog::error("{}: journal: {}", name, err);
  }, [this, kind = w.kind, result, then = std::move(then)] {
    if (kind == JournalWrite::Kind::Activate || kind == JournalWrite::Kind::RollbackTo || kind == JournalWrite::Kind::BakeFailed)
      publish_version();
    then(result->first, result->second);
  });
}

void AppSupervisor::prune(const std::set<std::string>& in_use) {
  store_job([keep = app_.keep_releases, in_use, name = app_.name](releases::ReleaseStore& store) {
    std::vector<std::string> removed;
    std::string perr;
    if (!store.prune(keep, in_use, &removed, &perr)) spdlog::error("{}: prune: {}", name, perr);
    for (const auto& id : removed) spdlog::info("{}: pruned release {}", name, id);
    std::string note;
    if (!store.compact_journal(&note, &perr)) spdlog::error("{}: compacting the journal: {}", name, perr);
    else if (!note.empty()) spdlog::info("{}: {}", name, note);
  }, [] {});
}

void AppSupervisor::cancel_work() {
  if (cancel_) cancel_->store(true);
}

void AppSupervisor::close_sockets() {
  if (!listen_sockets_.close || listen_fds_.empty()) return;
  listen_sockets_.close();
  listen_fds_.clear();
  sockets_closed_ = true;
}

bool AppSupervisor::open_sockets(std::string* err) {
  if (!sockets_closed_) return true;
  std::vector<int> fds;
  if (!listen_sockets_.open(&fds, err)) return false;
  listen_fds_ = std::move(fds);
  sockets_closed_ = false;
  return true;
}

std::string AppSupervisor::release_version(const std::string& release) const {
  std::string v, raw, err;
  return releases::read_version(store_.release_dir(release), app_.watch, &v, &raw, &err) ? v : "";
}

// ---------------------------------------------------------------------------------------------
// Reloads, shutdown, threads

void AppSupervisor::update_config(AppConfig app, const AgentSettings& agent) {
  agent_ = agent;
  if (log_) log_->set_limits(agent_.log_max_size, agent_.log_max_files);
  // The watch follows the new keys now, whatever runs: it only submits requests.
  const AppConfig& latest = watched_;
  bool rewatch = app.source != latest.source || app.watch != latest.watch || app.settle != latest.settle ||
                 app.poll_interval != latest.poll_interval;
  watched_ = app;
  if (rewatch && booted_ && !shutting_down_) {
    std::string baseline = watch_ ? watch_->deployed() : std::string();
    watch_.reset();
    if (!app.source.empty()) {
      spdlog::info("{}: now watching {}/{} (settle {})", app.name, app.source, app.watch, base::format_duration(app.settle));
      start_watch(app, baseline);
    } else {
      spdlog::info("{}: no source any more: the file watch is stopped", app.name);
    }
  }
  machine_.set_config(std::move(app));  // now, or when the running operation ends
}

void AppSupervisor::config_applied(const AppConfig& app) {
  bool git_changed = app.git != app_.git || app.branch != app_.branch;
  app_ = app;
  if (git_changed) install_git_hook();
  refresh_account();
  if (booted_) schedule_probe();  // `health` set by this reload
}

void AppSupervisor::shutdown(std::function<void()> when_empty) {
  shutting_down_ = true;
  watch_.reset();
  loop_.cancel(std::exchange(probe_timer_, 0));
  probe_.cancel();
  when_empty_ = std::move(when_empty);
  machine_.shutdown([this] {
    machine_empty_ = true;
    maybe_empty();
  });
}

void AppSupervisor::maybe_empty() {
  if (shutting_down_ && machine_empty_ && threads_.empty() && !store_busy_ && when_empty_)
    loop_.post(std::exchange(when_empty_, nullptr));
}

void AppSupervisor::off_loop(std::function<void()> work, std::function<void()> then) {
  std::uint64_t id = next_thread_++;
  base::EventLoop* loop = &loop_;
  std::weak_ptr<bool> alive = alive_;
  // The completion runs on the loop, and only if the supervisor still exists then.
  threads_[id] = std::thread([loop, id, alive, this, work = std::move(work), then = std::move(then)]() mutable {
    try {
      work();  // reports its own errors; an exception here is a bug, and must not end the agent
    } catch (const std::exception& e) {
      spdlog::error("{}: background work threw: {}", app_.name, e.what());
    } catch (...) {
      spdlog::error("{}: background work threw", app_.name);
    }
    loop->post_from_thread([alive, this, id, then = std::move(then)] {
      if (alive.expired()) return;
      auto it = threads_.find(id);
      if (it != threads_.end()) {
        it->second.join();
        threads_.erase(it);
      }
      then();
      maybe_empty();
    });
  });
}

void AppSupervisor::store_job(std::function<void(releases::ReleaseStore&)> work, std::function<void()> then) {
  store_jobs_.push_back({std::move(work), std::move(then)});
  if (!store_busy_) next_store_job();
}

void AppSupervisor::next_store_job() {
  if (store_jobs_.empty()) {
    store_busy_ = false;
    return maybe_empty();
  }
  store_busy_ = true;
  StoreJob job = std::move(store_jobs_.front());
  store_jobs_.pop_front();
  // The thread gets its own handle on the store: a ReleaseStore is paths, no shared state.
  off_loop([work = std::move(job.work), store = store_]() mutable { work(store); }, [this, then = std::move(job.then)] {
    then();
    next_store_job();
  });
}

// ---------------------------------------------------------------------------------------------
// Status

const char* AppSupervisor::state_word() const {
  const char* state = machine_.stopped() ? "stopped" : "running";
  switch (machine_.phase()) {
    case Phase::Staging: state = "staging"; break;
    case Phase::Building: state = "building"; break;
    case Phase::Rolling: state = machine_.reverting() ? "reverting" : "rolling"; break;
    case Phase::Launching: state = "starting"; break;
    case Phase::Stopping: state = "stopping"; break;
    case Phase::Disk: state = "recording"; break;
    case Phase::Baking: state = "baking"; break;
    case Phase::Idle: break;
  }
  return state;
}

std::string AppSupervisor::summary() const {
  std::string progress = machine_.progress();
  if (!progress.empty()) return app_.name + ": " + progress;
  std::string s = app_.name + ": " + state_word();
  if (!machine_.stopped()) s += ", " + std::to_string(machine_.ready_slots()) + "/" + std::to_string(app_.instances) + " ready";
  if (machine_.fleet_waiting()) s += ", waiting for a fleet slot";
  return s;
}

nlohmann::json AppSupervisor::status() const {
  auto cur = store_.current();
  const char* state = state_word();
  const OpRequest* running = machine_.running();
  const OpRequest* pending = machine_.pending();
  nlohmann::json j = {{"app", app_.name},
                      {"state", state},
                      {"current", cur ? nlohmann::json(*cur) : nlohmann::json(nullptr)},
                      {"version", cur ? release_version(*cur) : ""},
                      {"instances", app_.instances},
                      {"operation", running ? op_name(running->kind) : ""},
                      {"queued", pending ? op_name(pending->kind) : ""},
                      {"progress", machine_.progress()}};
  if (const std::string* waiting = machine_.fleet_waiting()) {
    j["fleet_waiting"] = *waiting;
    j["fleet_waiting_version"] = release_version(*waiting);
  }
  auto now = loop_.now();
  const auto& slots = machine_.slots();
  // CPU% as PM2 and top give it: over the time since the last status (or since the worker
  // started, the first time).
  std::map<pid_t, std::pair<base::Clock::time_point, double>> cpu_now;
  nlohmann::json workers = nlohmann::json::array(), orphans = nlohmann::json::array();
  for (const auto& [pid, w] : machine_.workers()) {
    if (w.adopted) {
      // workers of a previous agent (agent/process/orphans.h), until they exit
      orphans.push_back({{"pid", pid}, {"draining", w.state == WorkerState::Draining}});
      continue;
    }
    const auto* slot = w.slot < static_cast<int>(slots.size()) ? &slots[static_cast<size_t>(w.slot)] : nullptr;
    workers.push_back({{"slot", w.slot},
                       {"pid", pid},
                       {"release", w.release},
                       {"state", worker_state_name(w.state)},
                       {"role", machine_.role_of(w)},
                       {"uptime_s", std::chrono::duration_cast<std::chrono::seconds>(now - w.started).count()},
                       {"rss", rss_of(pid)},
                       {"restarts", slot ? slot->restarts : 0}});
    double cpu = cpu_seconds_of(pid);
    if (cpu >= 0) {
      cpu_now[pid] = {now, cpu};
      auto seen = cpu_seen_.find(pid);
      bool earlier = seen != cpu_seen_.end() && now - seen->second.first >= std::chrono::milliseconds(200);
      double secs = std::chrono::duration<double>(now - (earlier ? seen->second.first : w.started)).count();
      double used = cpu - (earlier ? seen->second.second : 0);
      workers.back()["cpu_seconds"] = cpu;
      workers.back()["cpu_percent"] = secs > 0 ? std::round(used / secs * 1000) / 10 : 0.0;
    }
    if (slot && !slot->last_exit.empty()) workers.back()["last_exit"] = slot->last_exit;
  }
  j["workers"] = workers;
  // Kept for the next asker: this sample, or the one before when it is younger than 200 ms (a
  // window that short says little). Workers gone are forgotten.
  for (auto& [pid, sample] : cpu_now)
    if (auto seen = cpu_seen_.find(pid); seen != cpu_seen_.end() && now - seen->second.first < std::chrono::milliseconds(200))
      sample = seen->second;
  cpu_seen_ = std::move(cpu_now);
  j["orphans"] = orphans;
  if (!app_.health_path.empty()) {
    j["health"] = health_name(machine_.health());
    if (!machine_.last_probe_failure().empty()) j["health_last_failure"] = machine_.last_probe_failure();
  }
  if (auto b = machine_.baking()) {
    j["baking"] = b->first;
    j["bake_left_s"] = std::chrono::duration_cast<std::chrono::seconds>(b->second).count();
  }
  return j;
}

}  // namespace agent
