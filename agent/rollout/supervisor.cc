#include "agent/rollout/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <set>
#include <tuple>
#include <spdlog/spdlog.h>

#include "hooks/build.h"
#include "agent/process/spawn.h"
#include "hooks/git_hook.h"
#include "agent/rollout/supervisor_util.h"
#include "releases/git.h"
#include "releases/version.h"

namespace agent {

using namespace supervisor_util;

const char* worker_state_name(WorkerState s) {
  switch (s) {
    case WorkerState::Starting: return "starting";
    case WorkerState::Ready: return "ready";
    case WorkerState::Draining: return "draining";
  }
  return "?";
}

// Deploys and rollbacks are journaled against their release; the other operations run what
// is already current.
static bool marks_release(OpRequest::Kind k) { return k == OpRequest::Kind::Deploy || k == OpRequest::Kind::Rollback; }

const char* op_name(OpRequest::Kind k) {
  switch (k) {
    case OpRequest::Kind::Deploy: return "deploy";
    case OpRequest::Kind::Reload: return "reload";
    case OpRequest::Kind::Rollback: return "rollback";
    case OpRequest::Kind::Start: return "start";
    case OpRequest::Kind::Stop: return "stop";
    case OpRequest::Kind::Restart: return "restart";
    case OpRequest::Kind::Replace: return "replace";
  }
  return "?";
}

AppSupervisor::AppSupervisor(base::EventLoop& loop, Alerts& alerts, AgentSettings agent, AppConfig app,
                             std::vector<int> listen_fds, std::vector<std::string> agent_environ)
    : loop_(loop),
      alerts_(alerts),
      agent_(std::move(agent)),
      app_(std::move(app)),
      listen_fds_(std::move(listen_fds)),
      environ_(std::move(agent_environ)),
      store_(app_.app_dir(agent_)) {
  slots_.resize(static_cast<size_t>(app_.instances));
}

AppSupervisor::~AppSupervisor() {
  if (cancel_) cancel_->store(true);
  for (auto& [id, t] : threads_)
    if (t.joinable()) t.join();
  // Nothing registered with the loop may outlive us: unwatch and cancel before closing.
  for (auto& [pid, w] : workers_) release_plumbing(*w);
  for (auto& [fd, p] : pipes_) {
    loop_.remove(p->watch);
    ::close(fd);
  }
  for (auto& slot : slots_) loop_.cancel(slot.restart_timer);
  for (auto& [pid, o] : orphans_) {
    loop_.remove(o.watch);
    loop_.cancel(o.kill_timer);
    ::close(o.orphan.pidfd);
  }
  loop_.cancel(memory_timer_);
  loop_.remove(notify_watch_);
}

bool AppSupervisor::init(std::string* err) {
  std::vector<std::string> notes;
  if (!store_.recover(&notes, err)) return false;
  for (const auto& n : notes) spdlog::info("{}: {}", app_.name, n);
  std::string log_dir = agent_.log_dir + "/" + app_.name;
  if (!base::make_dirs(log_dir, err)) return false;
  log_ = std::make_unique<base::LogFile>(log_dir + "/app.log", agent_.log_max_size, agent_.log_max_files);

  // sd_notify readiness: a socket only the agent and this app's workers can reach
  // (agent/notify_socket.h); refresh_account() gives it to the workers' account.
  if (!notify_.open(store_.app_dir() + "/notify.sock", err)) return false;
  refresh_account();
  notify_watch_ = loop_.add(notify_.fd(), EPOLLIN, [this](std::uint32_t) { on_notify(); });
  if (app_.max_memory > 0) memory_timer_ = loop_.after(kMemoryCheck, [this] { check_memory(); });
  return true;
}

void AppSupervisor::boot() {
  install_git_hook();
  // What runs now (or is about to) sets the watch's baseline: only a different content deploys.
  std::string baseline, err;
  std::optional<OpRequest> op;
  if (auto cur = store_.current()) {
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

void AppSupervisor::adopt(std::vector<Orphan> orphans) {
  std::string pids;
  for (auto& o : orphans) {
    pids += (pids.empty() ? "" : ", ") + std::to_string(o.pid);
    Adopted& a = orphans_[o.pid];
    a.orphan = o;
    // Not our child: its pidfd turns readable when it exits (there is no status to collect).
    // Watched from now on, so one that dies before it is drained is forgotten too.
    a.watch = loop_.add(o.pidfd, EPOLLIN, [this, pid = o.pid](std::uint32_t) { forget_orphan(pid); });
  }
  if (!orphans_.empty())
    spdlog::warn("{}: {} worker(s) of a previous agent still running (pid {}): they serve until this agent's own "
                 "workers are up, then drain",
                 app_.name, orphans_.size(), pids);
  record_workers();
}

void AppSupervisor::forget_orphan(pid_t pid) {
  auto it = orphans_.find(pid);
  if (it == orphans_.end()) return;
  loop_.remove(it->second.watch);
  loop_.cancel(it->second.kill_timer);
  ::close(it->second.orphan.pidfd);
  orphans_.erase(it);
  spdlog::info("{}: worker of the previous agent (pid {}) exited", app_.name, pid);
  record_workers();
  maybe_empty();
}

void AppSupervisor::maybe_drain_orphans() {
  if (orphans_.empty() || running_ || slots_.empty()) return;
  for (const auto& slot : slots_) {
    const Worker* w = slot.serving ? find(slot.serving) : nullptr;
    if (!w || w->state != WorkerState::Ready) return;  // not yet as many of ours serving as configured
  }
  drain_orphans();
}

void AppSupervisor::drain_orphans() {
  for (auto& [pid, o] : orphans_) {
    if (o.draining) continue;
    o.draining = true;
    pidfd_signal(o.orphan.pidfd, app_.drain_signal);
    say("draining worker of the previous agent (pid " + std::to_string(pid) + ") with " + base::signal_name(app_.drain_signal));
    if (app_.kill_timeout)
      o.kill_timer = loop_.after(*app_.kill_timeout, [this, pid = pid] {
        auto it = orphans_.find(pid);
        if (it == orphans_.end()) return;
        it->second.kill_timer = 0;
        spdlog::warn("{}: worker of the previous agent (pid {}) still alive after kill_timeout: SIGKILL", app_.name, pid);
        pidfd_signal(it->second.orphan.pidfd, SIGKILL);
      });
  }
}

void AppSupervisor::record_workers() {
  // A supervisor on its way out (shutdown, or its app removed by SIGHUP) leaves the record as
  // it was: its draining workers are still alive, and an app added again writes its own.
  if (shutting_down_) return;
  // Written off the loop (a create and a rename in the state directory wait behind a staging
  // thread's sync of that filesystem), one write at a time; changes made meanwhile are
  // written, all at once, right after.
  if (record_inflight_) {
    record_dirty_ = true;
    return;
  }
  std::vector<RecordedProcess> procs;
  for (const auto& [pid, w] : workers_) procs.push_back({pid, w->start_time});
  for (const auto& [pid, o] : orphans_) procs.push_back({pid, o.orphan.start});
  record_inflight_ = true;
  auto err = std::make_shared<std::string>();
  off_loop([path = store_.app_dir() + "/workers", procs, err] {
    if (write_workers_record(path, procs, err.get())) err->clear();
  }, [this, err] {
    record_inflight_ = false;
    if (err->empty()) {
      record_error_.clear();
    } else if (*err != record_error_) {  // once per distinct failure, not once per worker
      spdlog::error("{}: cannot record the workers ({}): a restart after a crash of the agent will not find them", app_.name, *err);
      record_error_ = *err;
    }
    if (std::exchange(record_dirty_, false)) record_workers();
  });
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

// ---------------------------------------------------------------------------------------------
// Operations

void AppSupervisor::say(const std::string& line) {
  spdlog::info("{}: {}", app_.name, line);
  if (running_ && running_->progress) running_->progress(line);
}

void AppSupervisor::submit(OpRequest op) {
  if (shutting_down_) {
    if (op.done) op.done(false, "the agent is shutting down");
    return;
  }
  if (op.kind == OpRequest::Kind::Replace && (running_ || pending_)) return;  // that work replaces it anyway
  if (!running_) return start_op(std::move(op));
  if (pending_ && pending_->done) pending_->done(false, std::string("superseded by a newer request (") + op_name(op.kind) + ")");
  if (op.progress) op.progress(std::string("queued: waiting for the running ") + op_name(running_->kind) + " of " + app_.name);
  pending_ = std::move(op);
}

void AppSupervisor::start_op(OpRequest op) {
  running_ = std::move(op);
  op_started_ = base::Clock::now();
  const OpRequest& r = *running_;
  switch (r.kind) {
    case OpRequest::Kind::Deploy: {
      stopped_ = false;
      phase_ = Phase::Staging;
      bool git = r.source == "git";
      say(git ? "deploying " + r.revision + " from " + app_.git : "staging " + r.from);
      // Copying a tree can take seconds: off the loop. The thread gets its own store handle.
      releases::StageRequest req;
      req.from = r.from;
      if (git) req.git_repo = app_.git;
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
          if (!alive.expired() && phase_ == Phase::Staging) say(line);
        });
      };
      auto result = std::make_shared<std::tuple<bool, releases::Release, std::string>>(false, releases::Release{}, "staging stopped unexpectedly (see the agent's log)");
      store_job([req, result](releases::ReleaseStore& store) {
        auto& [ok, rel, err] = *result;
        ok = store.stage(req, &rel, &err);
      }, [this, result] {
        auto& [ok, rel, err] = *result;
        on_staged(ok, rel, err);
      });
      return;
    }
    case OpRequest::Kind::Reload: {
      auto cur = store_.current();
      if (!cur) return finish_op(false, "nothing is deployed yet: agent deploy " + app_.name + " --from DIR");
      stopped_ = false;
      return begin_rollout(r.kind, *cur, all_slots());
    }
    case OpRequest::Kind::Rollback: {
      // The target comes from the journal: read on the store thread, after whatever it is
      // still writing.
      phase_ = Phase::Disk;
      auto result = std::make_shared<std::tuple<bool, std::string, std::string>>(false, "", "");
      store_job([steps = r.steps, to = r.to, result](releases::ReleaseStore& store) {
        auto& [ok, target, err] = *result;
        ok = to.empty() ? store.rollback_target(steps, &target, &err) : store.check_rollback_to(to, &err);
        if (!to.empty()) target = to;
      }, [this, result] {
        if (!running_ || phase_ != Phase::Disk) return;  // cancelled by a shutdown meanwhile
        auto& [ok, target, err] = *result;
        if (!ok) return finish_op(false, err);
        say("rolling back to " + target);
        stopped_ = false;
        begin_rollout(OpRequest::Kind::Rollback, target, all_slots());
      });
      return;
    }
    case OpRequest::Kind::Replace: {
      int s = r.slot;
      if (s < 0 || s >= static_cast<int>(slots_.size()) || slots_[static_cast<size_t>(s)].release.empty())
        return finish_op(false, "no such slot");
      return begin_rollout(r.kind, slots_[static_cast<size_t>(s)].release, {s});
    }
    case OpRequest::Kind::Start: {
      auto cur = store_.current();
      if (!cur) return finish_op(false, "nothing is deployed yet: agent deploy " + app_.name + " --from DIR");
      stopped_ = false;
      phase_ = Phase::Starting;
      if (!reopen_sockets() || !preflight(*cur, nullptr)) return;
      for (size_t i = 0; i < slots_.size(); ++i) {
        Slot& slot = slots_[i];
        if (slot.serving || slot.incoming) continue;
        slot.release = *cur;  // a start runs what is current, whatever a slot ran before
        if (slot.restart_timer) loop_.cancel(slot.restart_timer), slot.restart_timer = 0;
        std::string err;
        if (!spawn_worker(static_cast<int>(i), slot.release, false, &err)) return finish_op(false, err);
      }
      say("starting " + std::to_string(slots_.size()) + " workers on " + *cur);
      return loop_.post([this] { advance(); });
    }
    case OpRequest::Kind::Stop:
    case OpRequest::Kind::Restart: {
      stopped_ = true;
      restart_after_stop_ = r.kind == OpRequest::Kind::Restart;
      phase_ = Phase::Stopping;
      for (auto& slot : slots_) {
        if (slot.restart_timer) loop_.cancel(slot.restart_timer), slot.restart_timer = 0;
        for (pid_t* p : {&slot.serving, &slot.incoming})
          if (*p) drain(*p, "stopping"), *p = 0;
      }
      say("stopping: draining " + std::to_string(workers_.size()) + " workers");
      return loop_.post([this] { advance(); });
    }
  }
}

void AppSupervisor::finish_op(bool ok, const std::string& message) {
  phase_ = Phase::Idle;
  if (!running_) return;
  OpRequest op = std::move(*running_);
  running_.reset();
  if (ok) spdlog::info("{}: {} done: {}", app_.name, op_name(op.kind), message);
  else spdlog::warn("{}: {} failed: {}", app_.name, op_name(op.kind), message);
  // This agent's workers serve now: the previous agent's may go. After a failure they keep
  // serving, until as many of ours as configured are ready (maybe_drain_orphans).
  if (ok && !orphans_.empty()) drain_orphans();
  if (op.done) op.done(ok, message);
  if (next_app_) {
    AppConfig next = std::move(*next_app_);
    next_app_.reset();
    apply_config(std::move(next));
  }
  if (pending_) {
    OpRequest next = std::move(*pending_);
    pending_.reset();
    loop_.post([this, next = std::move(next)]() mutable {
      if (!running_) start_op(std::move(next));
      else submit(std::move(next));
    });
  }
  reconcile();
}

void AppSupervisor::on_staged(bool ok, const releases::Release& r, const std::string& err) {
  cancel_.reset();
  if (!running_ || phase_ != Phase::Staging) return;  // cancelled by a shutdown meanwhile
  if (!ok) {
    alerts_.raise({app_.name, "deploy_refused", "deploy refused: " + err, "nothing running was touched", 0, ""});
    releases::StageRequest req;
    req.source = running_->source;
    req.revision = r.revision.empty() ? running_->revision : r.revision;
    req.uid = running_->uid;
    return record_then([req, err](releases::ReleaseStore& store, std::string* jerr) { return store.record_refused(req, err, jerr); },
                       [this, err] { finish_op(false, "refused: " + err); });
  }
  say("staged " + r.id + " (version " + r.version + ")");
  if (!app_.build.empty()) return start_build(r.id);
  begin_rollout(OpRequest::Kind::Deploy, r.id, all_slots());
}

// The build runs in the staged release before any worker starts on it. Nothing running is
// touched: a failed build marks the release failed and the old workers keep serving.
void AppSupervisor::start_build(const std::string& release) {
  phase_ = Phase::Building;
  AppConfig plain = app_;
  plain.shim.clear();  // the shim is for workers: a build's node processes listen on nothing
  LaunchContext ctx = launch_context(release, -1);
  LaunchEnv env;
  std::string err;
  if (!account(&ctx.account, &err) || !LaunchEnv::build(plain, ctx, &env, &err)) {
    hooks::BuildResult failed;
    failed.message = err;
    return on_built(release, failed);
  }
  hooks::BuildRequest req;
  req.command = app_.build;
  req.cwd = ctx.release_dir;
  req.envp = hooks::build_environment(env.envp());
  req.timeout = app_.build_timeout;
  if (::geteuid() == 0 && ctx.account.uid != 0) req.drop_to = ctx.account;  // as spawn_worker drops
  cancel_ = std::make_shared<std::atomic<bool>>(false);
  req.cancel = cancel_;
  base::EventLoop* loop = &loop_;
  std::weak_ptr<bool> alive = alive_;
  req.on_line = [loop, alive, this](const std::string& line) {
    loop->post_from_thread([alive, this, line] {
      if (alive.expired()) return;
      if (log_) log_->write_line("build " + line);
      // The requester (a pusher's remote: lines) sees the build too, not just its end.
      if (running_ && phase_ == Phase::Building && running_->progress) running_->progress("build: " + line);
    });
  };
  say("building " + release + ": " + app_.build + " (as " + ctx.account.name + ", timeout " + base::format_duration(app_.build_timeout) + ")");
  auto result = std::make_shared<hooks::BuildResult>();
  off_loop([req, result] {
    // The build writes into the release (node_modules, dist/): the tree becomes the account's.
    std::string chown_err;
    if (req.drop_to && !base::chown_tree(req.cwd, req.drop_to->uid, req.drop_to->gid, &chown_err))
      result->message = "giving the release to " + req.drop_to->name + ": " + chown_err;
    else
      *result = run_build(req);
  }, [this, result, release] { on_built(release, *result); });
}

void AppSupervisor::on_built(const std::string& release, const hooks::BuildResult& b) {
  cancel_.reset();
  if (!running_ || phase_ != Phase::Building) return;  // cancelled by a shutdown meanwhile
  if (b.ok) {
    say("build " + b.message);
    return begin_rollout(OpRequest::Kind::Deploy, release, all_slots());
  }
  std::string why = "build failed: " + b.message;
  if (!b.tail.empty()) {
    why += "; last output:";
    size_t from = b.tail.size() > 5 ? b.tail.size() - 5 : 0;
    for (size_t i = from; i < b.tail.size(); ++i) why += (i == from ? " " : " | ") + b.tail[i];
  }
  alerts_.raise({app_.name, "deploy_refused", why + " (release " + release + ")", "nothing running was touched; see agent logs " + app_.name, 0, release});
  record_failed_then(release, why, [this, why] { finish_op(false, "refused: " + why); });
}

bool AppSupervisor::preflight(const std::string& release, std::string* out_err) {
  LaunchContext ctx = launch_context(release, -1);
  LaunchEnv env;
  std::string err, resolved;
  bool ok = account(&ctx.account, &err) && LaunchEnv::build(app_, ctx, &env, &err) &&
            resolve_command(app_.command[0], env, ctx.release_dir, ctx.account, &resolved, &err);
  if (ok && !app_.user.empty() && ::geteuid() != 0 && ctx.account.uid != ::geteuid()) {
    ok = false;
    err = "user = \"" + app_.user + "\" needs the agent to run as root";
  }
  if (ok) {
    say("preflight: " + app_.command[0] + " -> " + resolved);
    return true;
  }
  if (out_err) *out_err = err;
  std::string why = "preflight of " + release + ": " + err;
  alerts_.raise({app_.name, "deploy_refused", why, "nothing running was touched; see agent env " + app_.name + " --release " + release, 0, release});
  if (running_ && running_->kind == OpRequest::Kind::Deploy) {
    record_failed_then(release, err, [this, why] { finish_op(false, "refused: " + why); });
    return false;
  }
  finish_op(false, "refused: " + why);
  return false;
}

std::vector<int> AppSupervisor::all_slots() const {
  std::vector<int> all(slots_.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  return all;
}

bool AppSupervisor::reopen_sockets() {
  if (!sockets_closed_) return true;
  std::string err;
  std::vector<int> fds;
  if (!listen_sockets_.open(&fds, &err)) {
    finish_op(false, "cannot listen again: " + err);
    return false;
  }
  listen_fds_ = std::move(fds);
  sockets_closed_ = false;
  return true;
}

void AppSupervisor::begin_rollout(OpRequest::Kind kind, const std::string& target, std::vector<int> slots) {
  if (!reopen_sockets() || !preflight(target, nullptr)) return;
  rollout_ = Rollout{};
  rollout_.kind = kind;
  rollout_.target = target;
  rollout_.version = version_of(target);
  rollout_.todo = std::move(slots);
  int surge = std::max(1, app_.max_surge);
  rollout_.batches_total = (static_cast<int>(rollout_.todo.size()) + surge - 1) / surge;
  phase_ = Phase::Rolling;
  say("rolling " + target + " onto " + std::to_string(rollout_.todo.size()) + " worker" +
      (rollout_.todo.size() == 1 ? "" : "s") + ", " + std::to_string(surge) + " at a time");
  loop_.post([this] { advance(); });
}

// Moves the running operation forward as far as the workers' states allow. Called (posted)
// after every event that could matter; safe to call any number of times.
void AppSupervisor::advance() {
  switch (phase_) {
    case Phase::Idle:
    case Phase::Staging:
    case Phase::Building:
    case Phase::Disk:
      return reconcile();
    case Phase::Starting: {
      for (const auto& slot : slots_) {
        const Worker* w = slot.serving ? find(slot.serving) : nullptr;
        if (!w || w->state != WorkerState::Ready) return;
      }
      return finish_op(true, "running " + std::to_string(slots_.size()) + " workers on " + (slots_.empty() ? "" : slots_[0].release));
    }
    case Phase::Stopping: {
      if (!workers_.empty()) return;
      if (restart_after_stop_) {
        restart_after_stop_ = false;
        say("all workers stopped; starting again");
        OpRequest op = std::move(*running_);
        op.kind = OpRequest::Kind::Start;
        running_.reset();
        return start_op(std::move(op));
      }
      if (listen_sockets_.close && !listen_fds_.empty()) {
        // Stopped: its addresses are closed so clients are refused at once rather than left
        // waiting in a queue nobody accepts from. start binds them again.
        listen_sockets_.close();
        listen_fds_.clear();
        sockets_closed_ = true;
      }
      return finish_op(true, "stopped");
    }
    case Phase::Rolling:
      break;
  }
  Rollout& ro = rollout_;
  if (ro.batch.empty()) {
    if (ro.todo.empty()) return complete_rollout();
    size_t n = std::min(ro.todo.size(), static_cast<size_t>(std::max(1, app_.max_surge)));
    std::vector<int> batch(ro.todo.begin(), ro.todo.begin() + static_cast<long>(n));
    ro.todo.erase(ro.todo.begin(), ro.todo.begin() + static_cast<long>(n));
    std::string started;
    for (int s : batch) {
      std::string release = ro.reverting ? ro.previous[s] : ro.target;
      std::string err;
      pid_t pid = spawn_worker(s, release, true, &err);
      if (!pid) return fail_rollout("starting a worker for slot " + std::to_string(s) + ": " + err);
      ro.batch.push_back(s);
      started += (started.empty() ? "" : ", ") + std::to_string(s) + " (pid " + std::to_string(pid) + ")";
    }
    say(std::string(ro.reverting ? "reverting" : "batch " + std::to_string(ro.batches_done + 1) + "/" + std::to_string(ro.batches_total)) +
        ": starting slot" + (batch.size() == 1 ? " " : "s ") + started + " on " + (ro.reverting ? ro.previous[batch[0]] : ro.target));
    return;
  }
  for (int s : ro.batch) {
    const Worker* w = find(slots_[static_cast<size_t>(s)].incoming);
    if (!w || w->state != WorkerState::Ready) return;  // still waiting
  }
  // The whole batch is ready: each new worker takes its slot, the old one drains.
  for (int s : ro.batch) {
    Slot& slot = slots_[static_cast<size_t>(s)];
    pid_t old = slot.serving;
    if (!ro.reverting) ro.previous[s] = slot.release;  // "" when the slot never ran anything
    slot.serving = slot.incoming;
    slot.incoming = 0;
    slot.release = ro.reverting ? ro.previous[s] : ro.target;
    if (!ro.reverting) ro.swapped.push_back(s);
    if (old) drain(old, "replaced by pid " + std::to_string(slot.serving));
  }
  ro.batch.clear();
  ro.batches_done++;
  loop_.post([this] { advance(); });
}

void AppSupervisor::fail_rollout(const std::string& reason) {
  Rollout& ro = rollout_;
  for (int s : ro.batch) {
    Slot& slot = slots_[static_cast<size_t>(s)];
    if (slot.incoming) drain(slot.incoming, "rollout failed");
    slot.incoming = 0;
  }
  ro.batch.clear();
  if (ro.reverting) {
    // The old release does not start either: keep whatever serves, and say so loudly.
    alerts_.raise({app_.name, "rollout_failed", "reverting " + ro.target + " failed too: " + reason,
                   "the workers that still run keep serving; see agent status " + app_.name, 0, ro.target});
    std::string message = ro.failure + "; and reverting failed: " + reason;
    if (!marks_release(ro.kind)) return finish_op(false, message);
    return record_failed_then(ro.target, ro.failure, [this, message] { finish_op(false, message); });
  }
  say("failed: " + reason + (ro.swapped.empty() ? "" : "; swapping " + std::to_string(ro.swapped.size()) + " slots back"));
  ro.failure = reason;
  ro.reverting = true;
  ro.todo.clear();
  for (auto it = ro.swapped.rbegin(); it != ro.swapped.rend(); ++it) {
    Slot& slot = slots_[static_cast<size_t>(*it)];
    if (!ro.previous[*it].empty()) {
      ro.todo.push_back(*it);
      continue;
    }
    // Nothing ran here before (a first deploy): going back means running nothing.
    if (slot.serving) drain(slot.serving, "rollout failed; nothing to go back to");
    slot.serving = 0;
    slot.release.clear();
  }
  loop_.post([this] { advance(); });
}

void AppSupervisor::complete_rollout() {
  Rollout ro = std::move(rollout_);
  rollout_ = Rollout{};
  phase_ = Phase::Idle;
  long uid = running_ ? running_->uid : -1;
  if (!ro.failure.empty()) {
    auto reverted = [this, ro] {
      auto cur = store_.current();
      alerts_.raise({app_.name, "rollout_failed",
                     std::string(op_name(ro.kind)) + " of " + ro.target + " failed and was reverted: " + ro.failure,
                     "the previous workers kept serving; current is still " + (cur ? *cur : std::string("unset")) +
                         "; see agent releases " + app_.name,
                     0, ro.target});
      finish_op(false, "reverted: " + ro.failure);
    };
    if (!marks_release(ro.kind)) return reverted();
    return record_failed_then(ro.target, ro.failure, reverted);
  }
  auto live = [this, ro] {
    auto took = ms_text(base::Clock::now() - op_started_);
    if (ro.kind == OpRequest::Kind::Replace)
      return finish_op(true, "replaced slot " + std::to_string(ro.swapped.empty() ? -1 : ro.swapped[0]));
    finish_op(true, "live: " + ro.target + " (version " + ro.version + ") on " + std::to_string(slots_.size()) + " workers in " + took);
  };
  if (!marks_release(ro.kind)) return live();
  // `current` and the journal are written (and fsynced) on the store thread; the operation
  // ends when they are, so its requester never hears "live" before the disk says so.
  phase_ = Phase::Disk;
  auto result = std::make_shared<std::pair<bool, std::string>>(true, "");
  store_job([kind = ro.kind, target = ro.target, uid, result](releases::ReleaseStore& store) {
    result->first = kind == OpRequest::Kind::Deploy ? store.activate(target, "deploy", uid, &result->second)
                                                    : store.rollback_to(target, uid, &result->second);
  }, [this, ro, result, live] {
    if (!result->first) {
      alerts_.raise({app_.name, "rollout_failed", "workers run " + ro.target + " but recording it failed: " + result->second,
                     "current was not switched; fix the state directory and run agent reload " + app_.name, 0, ro.target});
      return finish_op(false, "workers run " + ro.target + " but " + result->second);
    }
    std::set<std::string> in_use;
    for (const auto& [pid, w] : workers_) in_use.insert(w->release);
    int keep = app_.keep_releases;
    // Queued behind the activation and before the next staging: it can never remove a
    // release another operation is about to use.
    store_job([keep, in_use, name = app_.name](releases::ReleaseStore& store) {
      std::vector<std::string> removed;
      std::string perr;
      if (!store.prune(keep, in_use, &removed, &perr)) spdlog::error("{}: prune: {}", name, perr);
      for (const auto& id : removed) spdlog::info("{}: pruned release {}", name, id);
      std::string note;
      if (!store.compact_journal(&note, &perr)) spdlog::error("{}: compacting the journal: {}", name, perr);
      else if (!note.empty()) spdlog::info("{}: {}", name, note);
    }, [] {});
    live();
  });
}

// Keeps every slot staffed: a slot with no worker (a crash, a revert that lost one, a new
// slot) gets one after its backoff.
void AppSupervisor::reconcile() {
  // After a stop closed the sockets, only an operation (which binds them first) starts workers.
  if (stopped_ || shutting_down_ || sockets_closed_ || phase_ == Phase::Stopping) return;
  for (size_t i = 0; i < slots_.size(); ++i) {
    Slot& slot = slots_[i];
    if (slot.serving || slot.incoming || slot.restart_timer || slot.release.empty()) continue;
    auto delay = backoff(slot.crashes);
    slot.restart_timer = loop_.after(delay, [this, i] {
      if (i >= slots_.size()) return;
      Slot& s = slots_[i];
      s.restart_timer = 0;
      if (s.serving || s.incoming || stopped_ || shutting_down_) return;
      std::string err;
      if (!spawn_worker(static_cast<int>(i), s.release, false, &err)) {
        spdlog::error("{}: restarting slot {}: {}", app_.name, i, err);
        s.crashes++;
        loop_.post([this] { reconcile(); });
      }
    });
  }
}

void AppSupervisor::update_config(AppConfig app, const AgentSettings& agent) {
  agent_ = agent;
  if (log_) log_->set_limits(agent_.log_max_size, agent_.log_max_files);
  // The watch follows the new keys now, whatever runs: it only submits requests.
  const AppConfig& latest = next_app_ ? *next_app_ : app_;
  bool rewatch = app.source != latest.source || app.watch != latest.watch || app.settle != latest.settle ||
                 app.poll_interval != latest.poll_interval;
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
  if (running_) {
    next_app_ = std::move(app);  // applied by finish_op
    return;
  }
  apply_config(std::move(app));
  reconcile();
}

void AppSupervisor::apply_config(AppConfig app) {
  bool git_changed = app.git != app_.git || app.branch != app_.branch;
  app_ = std::move(app);
  if (git_changed) install_git_hook();
  refresh_account();
  apply_instances();
}

void AppSupervisor::apply_instances() {
  size_t want = static_cast<size_t>(app_.instances);
  while (slots_.size() > want) {
    Slot& slot = slots_.back();
    if (slot.restart_timer) loop_.cancel(slot.restart_timer);
    for (pid_t p : {slot.serving, slot.incoming})
      if (p) drain(p, "instances lowered to " + std::to_string(want));
    slots_.pop_back();
  }
  auto cur = store_.current();
  while (slots_.size() < want) {
    slots_.emplace_back();
    if (cur) slots_.back().release = *cur;
  }
  if (app_.max_memory > 0 && !memory_timer_) memory_timer_ = loop_.after(kMemoryCheck, [this] { check_memory(); });
}

void AppSupervisor::shutdown(std::function<void()> when_empty) {
  shutting_down_ = true;
  if (cancel_) cancel_->store(true);
  watch_.reset();
  when_empty_ = std::move(when_empty);
  if (pending_ && pending_->done) pending_->done(false, "the agent is shutting down");
  pending_.reset();
  if (running_) {
    if (running_->done) running_->done(false, "the agent is shutting down");
    running_.reset();
  }
  phase_ = Phase::Idle;
  if (memory_timer_) loop_.cancel(memory_timer_), memory_timer_ = 0;
  for (auto& slot : slots_) {
    if (slot.restart_timer) loop_.cancel(slot.restart_timer), slot.restart_timer = 0;
    slot.serving = slot.incoming = 0;
  }
  std::vector<pid_t> pids;
  for (const auto& [pid, w] : workers_)
    if (w->state != WorkerState::Draining) pids.push_back(pid);
  for (pid_t p : pids) drain(p, "agent shutting down");
  drain_orphans();  // waited for like our own, up to kill_timeout
  maybe_empty();
}

void AppSupervisor::maybe_empty() {
  if (shutting_down_ && workers_.empty() && orphans_.empty() && threads_.empty() && !store_busy_ && when_empty_)
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

void AppSupervisor::record_then(std::function<bool(releases::ReleaseStore&, std::string*)> write, std::function<void()> then) {
  phase_ = Phase::Disk;
  store_job([write = std::move(write), name = app_.name](releases::ReleaseStore& store) {
    std::string err;
    if (!write(store, &err)) spdlog::error("{}: journal: {}", name, err);
  }, std::move(then));
}

void AppSupervisor::record_failed_then(const std::string& release, const std::string& reason, std::function<void()> then) {
  record_then([release, reason, uid = running_ ? running_->uid : -1](releases::ReleaseStore& store, std::string* err) {
    return store.record_failed(release, reason, uid, err);
  }, std::move(then));
}

nlohmann::json AppSupervisor::status() const {
  auto cur = store_.current();
  const char* state = stopped_ ? "stopped" : "running";
  switch (phase_) {
    case Phase::Staging: state = "staging"; break;
    case Phase::Building: state = "building"; break;
    case Phase::Rolling: state = rollout_.reverting ? "reverting" : "rolling"; break;
    case Phase::Starting: state = "starting"; break;
    case Phase::Stopping: state = "stopping"; break;
    case Phase::Disk: state = "recording"; break;
    case Phase::Idle: break;
  }
  nlohmann::json j = {{"app", app_.name},
                      {"state", state},
                      {"current", cur ? nlohmann::json(*cur) : nlohmann::json(nullptr)},
                      {"version", cur ? version_of(*cur) : ""},
                      {"instances", app_.instances},
                      {"operation", running_ ? op_name(running_->kind) : ""},
                      {"queued", pending_ ? op_name(pending_->kind) : ""}};
  auto now = base::Clock::now();
  nlohmann::json workers = nlohmann::json::array();
  for (const auto& [pid, w] : workers_) {
    const Slot* slot = w->slot < static_cast<int>(slots_.size()) ? &slots_[static_cast<size_t>(w->slot)] : nullptr;
    std::string role = w->state == WorkerState::Draining ? "draining"
                       : slot && slot->incoming == pid   ? "incoming"
                                                         : "serving";
    workers.push_back({{"slot", w->slot},
                       {"pid", pid},
                       {"release", w->release},
                       {"state", worker_state_name(w->state)},
                       {"role", role},
                       {"uptime_s", std::chrono::duration_cast<std::chrono::seconds>(now - w->started).count()},
                       {"rss", rss_of(pid)},
                       {"restarts", slot ? slot->restarts : 0}});
  }
  j["workers"] = workers;
  nlohmann::json orphans = nlohmann::json::array();
  for (const auto& [pid, o] : orphans_) orphans.push_back({{"pid", pid}, {"draining", o.draining}});
  j["orphans"] = orphans;  // workers of a previous agent (agent/process/orphans.h), until they exit
  return j;
}

}  // namespace agent
