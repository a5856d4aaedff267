#include "agent/daemon/daemon.h"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <algorithm>
#include <set>
#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

#include "agent/config/config_diff.h"
#include "agent/process/launch_env.h"
#include "agent/daemon/systemd.h"
#include "hooks/git_hook.h"
#include "base/fs.h"
#include "releases/version.h"

extern char** environ;

namespace agent {

namespace {

sigset_t daemon_signals() {
  sigset_t mask;
  sigemptyset(&mask);
  for (int s : {SIGTERM, SIGINT, SIGHUP}) sigaddset(&mask, s);
  return mask;
}

}  // namespace

void block_daemon_signals() {
  sigset_t mask = daemon_signals();
  ::sigprocmask(SIG_BLOCK, &mask, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
}

Daemon::Daemon(std::string config_path) : config_path_(std::move(config_path)) {}

Daemon::~Daemon() {
  if (upgrade_thread_.joinable()) upgrade_thread_.join();
  apps_.clear();
  retired_.clear();
  for (auto& [addr, fd] : sockets_) ::close(fd);
  if (signal_fd_ >= 0) ::close(signal_fd_);
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

bool Daemon::bind_app_sockets(const AppConfig& app, const std::vector<Orphan>& orphans, bool at_start,
                              std::vector<int>* fds, std::vector<std::string>* bound, std::string* err) {
  for (size_t i = 0; i < app.listen.size(); ++i) {
    const auto& a = app.listen[i];
    auto it = sockets_.find(a.canonical());
    // Workers a killed agent left behind still accept on this address: take the socket from
    // one of them, so it never closes and nothing queued on it is lost (agent/process/orphans.h).
    for (const auto& o : orphans) {
      if (it != sockets_.end()) break;
      std::string why;
      int fd = take_listen_socket(o, a.canonical(), &why);
      if (fd < 0) {
        spdlog::warn("{}: cannot take {} from the previous agent's worker: {}", app.name, a.canonical(), why);
        continue;
      }
      it = sockets_.emplace(a.canonical(), fd).first;
      bound->push_back(a.canonical());
      spdlog::info("listening on {} for {}: the socket taken over from pid {} of the previous agent", a.canonical(),
                   app.name, o.pid);
    }
    if (it == sockets_.end()) {
      int fd = base::bind_listen(a, err);
      if (fd < 0 && !orphans.empty() && at_start) {
        // Their socket could not be taken (ptrace rules, say, for an agent that is not root)
        // and they still hold the address: stop them, then bind. Connections are refused
        // for that moment; the log says why. Only at start: stopping them waits (up to
        // their kill_timeout), and a SIGHUP must not hold the loop that long.
        spdlog::warn("{}: {}: stopping the previous agent's workers to bind it", app.name, *err);
        stop_orphans(orphans, app.drain_signal);
        fd = base::bind_listen(a, err);
      }
      if (fd < 0) return *err = "app " + app.name + ": " + *err, false;
      it = sockets_.emplace(a.canonical(), fd).first;
      bound->push_back(a.canonical());
      spdlog::info("listening on {} for {}", a.canonical(), app.name);
    }
    fds->push_back(it->second);
  }
  return true;
}

std::vector<std::string> Daemon::close_sockets(const std::vector<std::string>& addrs) {
  std::vector<std::string> closed;
  for (const auto& addr : addrs) {
    auto it = sockets_.find(addr);
    // A socket systemd holds stays open whatever we do (closing ours would only lose it for a
    // later start or SIGHUP that needs it again): it is kept.
    if (it == sockets_.end() || activated_.count(addr)) continue;
    ::close(it->second);
    sockets_.erase(it);
    closed.push_back(addr);
  }
  return closed;
}

bool Daemon::prepare_app(const AppConfig& app, const AgentSettings& agent, bool at_start, PreparedApp* out,
                         std::string* err, const nlohmann::json* taken) {
  // Taken over from the previous image: the workers are ours, not orphans, and a stopped
  // app's sockets stay closed.
  std::vector<Orphan> orphans = taken ? std::vector<Orphan>{} : find_orphans(app.app_dir(agent) + "/workers");
  std::vector<int> fds;
  std::vector<std::string> bound;
  auto undo = [&] {
    // A socket nobody accepts on would leave its clients hanging instead of refused.
    close_sockets(bound);
    for (auto& o : orphans) ::close(o.pidfd);
  };
  bool closed = taken && taken->value("machine", nlohmann::json::object()).value("sockets_closed", false);
  if (!closed && !bind_app_sockets(app, orphans, at_start, &fds, &bound, err)) {
    undo();
    return false;
  }
  auto sup = std::make_unique<AppSupervisor>(loop_, *alerts_, *history_, agent, app, fds, environ_);
  if (!sup->init(err) || (taken && !sup->take_over(*taken, err))) {
    sup.reset();
    undo();
    *err = "app " + app.name + ": " + *err;
    return false;
  }
  if (!taken) sup->adopt(std::move(orphans));
  *out = PreparedApp{std::move(sup), std::move(bound)};
  return true;
}

void Daemon::add_app(std::unique_ptr<AppSupervisor> sup) {
  AppSupervisor* raw = sup.get();
  AppSupervisor::ListenSockets sockets;
  sockets.open = [this, raw](std::vector<int>* fds, std::string* err) {
    std::vector<std::string> bound;
    return bind_app_sockets(raw->config(), {}, false, fds, &bound, err);
  };
  sockets.close = [this, raw] {
    std::vector<std::string> addrs;
    for (const auto& l : raw->config().listen) addrs.push_back(l.canonical());
    for (const auto& addr : close_sockets(addrs))
      spdlog::info("{}: stopped: {} closed until it starts again", raw->name(), addr);
  };
  raw->set_listen_sockets(std::move(sockets));
  raw->set_fleet(fleet_.get());
  apps_[raw->name()] = std::move(sup);
  loop_.post([raw] { raw->boot(); });
}

bool Daemon::start(std::string* err) {
  // The mask was set by block_daemon_signals() before any thread existed; again here only
  // for a Daemon run without it (a test), still before its first thread.
  block_daemon_signals();
  sigset_t mask = daemon_signals();
  signal_fd_ = ::signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
  loop_.add(signal_fd_, EPOLLIN, [this](std::uint32_t) { on_signal(); });
  // After `agent upgrade`, the previous image's state (upgrade.cc), first: its variable must
  // not reach the workers' environment either.
  std::string handoff_err;
  handoff_ = take_handoff(&handoff_err);
  if (!handoff_err.empty()) return *err = handoff_err, false;
  // What systemd (or a launcher like it) handed us is taken first, and its variables removed,
  // so that the environment workers inherit from carries none of it.
  watchdog_ = capture_notify_socket();
  if (handoff_) {
    restore_notify_socket(handoff_->notify_socket);
    if (handoff_->watchdog_usec > 0) watchdog_ = std::chrono::microseconds(handoff_->watchdog_usec);
    generation_ = handoff_->generation;
  }
  char exe[4096];
  ssize_t exe_len = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (exe_len > 0) {
    exe_path_.assign(exe, static_cast<size_t>(exe_len));
    if (exe_path_.ends_with(" (deleted)")) exe_path_.resize(exe_path_.size() - 10);
  }
  std::vector<std::string> notes;
  std::map<std::string, int> activated = take_activated_sockets(&notes);
  for (const auto& n : notes) spdlog::info("{}", n);
  for (char** e = environ; *e; ++e) environ_.emplace_back(*e);
  for (const auto& [addr, fd] : activated) activated_.insert(addr);
  sockets_ = std::move(activated);  // bind_app_sockets uses these instead of binding
  if (handoff_) {
    for (const auto& [addr, fd] : handoff_->sockets) {
      ::fcntl(fd, F_SETFD, FD_CLOEXEC);
      sockets_[addr] = fd;
    }
    activated_.insert(handoff_->activated.begin(), handoff_->activated.end());
  }
  std::vector<ConfigError> errors;
  // After an upgrade: the config the previous image ran, as it ran it (the file may have been
  // edited since; the next SIGHUP reads it, as it would have for the previous image).
  bool loaded = handoff_ ? parse_config(handoff_->config_text, config_path_, &cfg_, &errors) : load_config(config_path_, &cfg_, &errors);
  if (handoff_) cfg_.text = handoff_->config_text;
  if (!loaded) {
    for (const auto& e : errors) spdlog::error("{}", e.format());
    return *err = std::to_string(errors.size()) + " error(s) in " + config_path_, false;
  }
  if (!base::make_dirs(cfg_.agent.state_dir, err)) return false;
  // One daemon per state directory: a second one would fight over releases and workers.
  std::string lock = cfg_.agent.state_dir + "/.agent.lock";
  // Opened read-only: flock needs no more, and a file open for writing would keep a state
  // directory that is remounted read-only later busy (the remount fails).
  lock_fd_ = ::open(lock.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0) return *err = base::errno_message("open", lock), false;
  if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0)
    return *err = "another agent is running with state_dir " + cfg_.agent.state_dir, false;
  alerts_ = std::make_unique<Alerts>(cfg_.agent.state_dir + "/alerts.jsonl");
  if (handoff_) alerts_->take_over(handoff_->alerts);
  alerts_->configure(cfg_.alerts);
  // In log_dir, not state_dir: it is held open for writing, and a state_dir must stay free to
  // be remounted read-only under a running agent (test_faults).
  if (!base::make_dirs(cfg_.agent.log_dir, err)) return false;
  history_ = std::make_unique<releases::HistoryLog>(cfg_.agent.log_dir + "/history.jsonl");
  start_fleet();
  // Each worker holds a few fds in the agent (pidfd, pipes): take the hard limit, not the
  // default soft 1024, so a large `instances` does not run out.
  rlimit nofile {};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }


  long gid = -1;
  if (!cfg_.agent.control_group.empty()) {
    struct group* g = getgrnam(cfg_.agent.control_group.c_str());
    if (!g) return *err = "control_group " + cfg_.agent.control_group + " does not exist", false;
    gid = g->gr_gid;
  }
  control_ = std::make_unique<ControlServer>(loop_, [this](std::shared_ptr<Session> s, const ControlRequest& req) {
    on_request(std::move(s), req);
  });
  if (handoff_ && handoff_->control_fd >= 0) control_->adopt(handoff_->control_fd, cfg_.agent.control_socket);
  else if (!control_->listen(cfg_.agent.control_socket, gid, err)) return false;
  if (cfg_.agent.metrics_listen) {
    metrics_ = std::make_unique<MetricsServer>(loop_, [this] { return render_metrics(); }, [this] { return healthz(); });
    if (handoff_ && handoff_->metrics_fd >= 0) metrics_->adopt(handoff_->metrics_fd, *cfg_.agent.metrics_listen);
    else if (!metrics_->listen(*cfg_.agent.metrics_listen, err)) return *err = "metrics_listen: " + *err, false;
  }
  for (const auto& app : cfg_.apps) {
    PreparedApp prepared;
    const nlohmann::json* taken = nullptr;
    if (handoff_)
      if (auto it = handoff_->apps.find(app.name); it != handoff_->apps.end()) taken = &it->second;
    if (!prepare_app(app, cfg_.agent, true, &prepared, err, taken)) return false;
    add_app(std::move(prepared.sup));
  }
  close_unused_sockets();  // an activated socket no app listens on
  spdlog::info("agent {} running: {} app(s), control socket {}", AGENT_VERSION, cfg_.apps.size(), cfg_.agent.control_socket);
  ready_timer_ = loop_.after(std::chrono::milliseconds(50), [this] { check_ready(); });
  if (watchdog_) {
    auto every = std::max(std::chrono::milliseconds(50), std::chrono::duration_cast<std::chrono::milliseconds>(*watchdog_ / 2));
    spdlog::info("systemd watchdog: pinging every {}", base::format_duration(every));
    watchdog_timer_ = loop_.after(every, [this, every] { watchdog_ping(every); });
  }
  return true;
}

int Daemon::run() {
  install_logger();
  std::string err;
  int rc = 0;
  if (!start(&err)) {
    spdlog::critical("cannot start: {}", err);
    rc = 1;
  } else {
    if (handoff_) upgraded();
    else agent_history("agent_start", "agent " AGENT_VERSION " (pid " + std::to_string(::getpid()) + "), " + std::to_string(apps_.size()) + " app(s)", -1);
    loop_.run();
    while (pending_exec_) {  // `agent upgrade`, checked: the loop was left to execute the new binary
      std::string why;
      // The loop's last pass ran on after the check (a request, a timer, a signal): what began
      // then would be cut off by execve, so it is looked at again here, with nothing running.
      bool tried = false;
      if (std::string busy = upgrade_busy(); !busy.empty()) why = "busy: " + busy;
      else tried = true, exec_new_image(&why);  // returns only when it failed, with this image as it was
      spdlog::error("upgrade failed: {}; this agent keeps running", why);
      pending_exec_->session->finish(false, "upgrade failed: " + why + "; this agent keeps running",
                                     why.starts_with("busy: ") ? nlohmann::json{{"busy", true}} : nlohmann::json());
      pending_exec_.reset();
      upgrading_ = false;
      if (tried && !shutting_down_) sd_notify("READY=1\nSTATUS=" + status_line());
      loop_.resume();
      loop_.run();
    }
    spdlog::info("agent stopped");
    agent_history("agent_stop", "every worker drained and stopped", std::chrono::duration<double>(std::chrono::steady_clock::now() - stop_began_).count());
  }
  // What is still queued is written by cmd_run once the Daemon is gone (its members log as
  // they are destroyed), within a bound.
  return rc;
}

void Daemon::on_signal() {
  signalfd_siginfo si;
  while (::read(signal_fd_, &si, sizeof si) == sizeof si) {
    if (si.ssi_signo == SIGHUP) {
      reload_config(static_cast<long>(si.ssi_uid));
    } else {
      spdlog::info("{}: draining every worker, then exiting", base::signal_name(static_cast<int>(si.ssi_signo)));
      stop_uid_ = static_cast<long>(si.ssi_uid);
      stop_signal_ = base::signal_name(static_cast<int>(si.ssi_signo));
      begin_shutdown();
    }
  }
}

void Daemon::begin_shutdown() {
  if (shutting_down_) return;
  shutting_down_ = true;
  stop_began_ = std::chrono::steady_clock::now();
  sd_notify("STOPPING=1\nSTATUS=draining every worker");
  loop_.cancel(ready_timer_);  // no READY=1 after STOPPING=1
  ready_timer_ = 0;
  loop_.cancel(std::exchange(status_timer_, 0));
  auto remaining = std::make_shared<size_t>(apps_.size() + retired_.size());
  auto one_done = [this, remaining] {
    if (--*remaining == 0) loop_.stop();
  };
  if (*remaining == 0) return loop_.stop();
  for (auto& [name, app] : apps_) app->shutdown(one_done);
  for (auto& app : retired_) app->shutdown(one_done);
}

void Daemon::agent_history(const std::string& op, const std::string& detail, double seconds) {
  releases::HistoryEntry h;
  h.op = op;
  h.detail = op == "agent_stop" && !stop_signal_.empty() ? stop_signal_ + ": " + detail : detail;
  h.uid = op == "agent_stop" ? stop_uid_ : -1;
  h.source = op == "agent_stop" && !stop_signal_.empty() ? "signal" : "";
  h.seconds = seconds;
  history_->add(std::move(h));
}

void Daemon::reload_config(long uid) {
  auto began = std::chrono::steady_clock::now();
  std::string why;
  std::string old_text = cfg_.text;
  bool ok = apply_config(&why);
  releases::HistoryEntry h;
  h.op = "config_reload";
  h.ok = ok;
  h.uid = uid;
  h.source = "signal";
  if (ok) {
    std::string keys;
    for (const auto& k : changed_keys(old_text, cfg_.text)) keys += (keys.empty() ? "" : ", ") + k;
    h.detail = keys.empty() ? "no key changed" : "changed: " + keys;
    spdlog::info("SIGHUP: {}", h.detail);
  } else {
    h.detail = "refused: " + why + "; the running config is kept";
  }
  h.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
  history_->add(std::move(h));
}

bool Daemon::apply_config(std::string* why) {
  auto refuse = [&](const std::string& reason) {
    spdlog::error("SIGHUP: {}; keeping the running config", reason);
    *why = reason;
    return false;
  };
  if (shutting_down_) {
    spdlog::warn("SIGHUP ignored: the agent is shutting down");
    *why = "the agent is shutting down";
    return false;
  }
  Config next;
  std::vector<ConfigError> errors;
  if (!load_config(config_path_, &next, &errors)) {
    for (const auto& e : errors) spdlog::error("{}", e.format());
    return refuse(std::to_string(errors.size()) + " error(s) in " + config_path_ + " (agent check tells)");
  }
  // What is bound or opened once at start cannot change under a running daemon: the reload
  // is refused whole, naming the key, and nothing of it is applied.
  const AgentSettings &a = cfg_.agent, &b = next.agent;
  for (auto [key, changed] : {std::pair{"state_dir", a.state_dir != b.state_dir}, {"log_dir", a.log_dir != b.log_dir},
                              {"control_socket", a.control_socket != b.control_socket},
                              {"control_group", a.control_group != b.control_group},
                              {"metrics_listen", (a.metrics_listen ? a.metrics_listen->canonical() : "") !=
                                                     (b.metrics_listen ? b.metrics_listen->canonical() : "")}})
    if (changed) return refuse(std::string("[agent] ") + key + " takes effect only at start (restart the agent to change it)");
  if (cfg_.fleet != next.fleet) return refuse("[fleet] takes effect only at start (restart the agent to change it)");
  for (const auto& app : next.apps) {
    const AppConfig* old = cfg_.find_app(app.name);
    if (!old) continue;
    auto canon = [](const AppConfig& c) {
      std::vector<std::string> v;
      for (const auto& l : c.listen) v.push_back(l.canonical());
      return v;
    };
    if (canon(*old) != canon(app))
      return refuse("app " + app.name + ": listen addresses are bound once, at start; restart the agent to change them");
  }
  // New apps are made ready first (their sockets bound, their stores opened): if one cannot
  // be, nothing of the reload is applied and what it bound is closed again.
  std::vector<PreparedApp> added;
  for (const auto& app : next.apps) {
    if (apps_.count(app.name)) continue;
    std::string err;
    PreparedApp prepared;
    if (!prepare_app(app, next.agent, false, &prepared, &err)) {
      for (auto& p : added) {  // the additions prepared before it are undone too
        p.sup.reset();
        close_sockets(p.bound);
      }
      return refuse(err);
    }
    added.push_back(std::move(prepared));
  }
  Config old = std::move(cfg_);
  cfg_ = std::move(next);
  alerts_->configure(cfg_.alerts);
  for (auto it = apps_.begin(); it != apps_.end();) {
    if (cfg_.find_app(it->first)) {
      ++it;
      continue;
    }
    spdlog::info("SIGHUP: app {} removed from the config: stopping it", it->first);
    AppSupervisor* raw = it->second.get();
    retired_.push_back(std::move(it->second));
    it = apps_.erase(it);
    raw->shutdown([this, raw] {
      loop_.post([this, raw] {
        std::erase_if(retired_, [raw](const auto& p) { return p.get() == raw; });
        close_unused_sockets();
      });
    });
  }
  for (const auto& app : cfg_.apps) {
    auto it = apps_.find(app.name);
    if (it == apps_.end()) continue;
    it->second->update_config(app, cfg_.agent);
  }
  for (auto& p : added) {
    spdlog::info("SIGHUP: app {} added", p.sup->name());
    add_app(std::move(p.sup));
  }
  spdlog::info("SIGHUP: config reloaded from {}", config_path_);
  return true;
}

// A removed app's address is closed once its workers are gone, so connections to it are
// refused rather than left to queue forever.
void Daemon::close_unused_sockets() {
  std::set<std::string> used;
  for (const auto& app : cfg_.apps)
    for (const auto& l : app.listen) used.insert(l.canonical());
  std::vector<std::string> unused;
  for (const auto& [addr, fd] : sockets_)
    if (!used.count(addr)) unused.push_back(addr);
  for (const auto& addr : close_sockets(unused)) spdlog::info("no app listens on {} any more: closed", addr);
}

bool Daemon::authorized(uid_t uid) const {
  if (uid == 0 || uid == ::geteuid()) return true;
  if (cfg_.agent.control_group.empty()) return false;
  struct group* g = getgrnam(cfg_.agent.control_group.c_str());
  struct passwd* pw = getpwuid(uid);
  if (!g || !pw) return false;
  std::vector<gid_t> groups = groups_of(pw->pw_name, pw->pw_gid);
  return std::find(groups.begin(), groups.end(), g->gr_gid) != groups.end();
}

void Daemon::on_request(std::shared_ptr<Session> s, const ControlRequest& req) {
  const std::string& verb = req.verb;
  if (verb == "fleet-status" || verb == "fleet-resume") return on_fleet_request(std::move(s), req);
  if (verb == "upgrade") return on_upgrade(std::move(s));
  if (verb == "status") {
    nlohmann::json apps = nlohmann::json::array();
    const std::string& only = req.app;
    for (const auto& [name, app] : apps_)
      if (only.empty() || only == name) apps.push_back(app->status());
    if (!only.empty() && apps.empty()) return s->finish(false, "no app \"" + only + "\"");
    // The worst the loop was held by one dispatch since start: a watchdog, a readiness pipe or
    // a client waited that long at most.
    nlohmann::json data = {{"apps", apps},
                           {"pid", ::getpid()},
                           {"version", AGENT_VERSION},
                           {"generation", generation_},
                           {"exe", exe_path_},
                           {"loop_max_stall_ms", static_cast<double>(loop_.max_stall().count()) / 1000.0},
                           {"loop_max_stall_in", loop_.max_stall_what()}};
    if (loop_.max_stall().count() > 0)
      data["loop_max_stall_at"] = releases::iso_time(std::chrono::system_clock::to_time_t(loop_.max_stall_at()));
    return s->finish(true, "", data);
  }
  static const std::map<std::string, OpRequest::Kind> kOps = {
      {"deploy", OpRequest::Kind::Deploy}, {"reload", OpRequest::Kind::Reload},   {"rollback", OpRequest::Kind::Rollback},
      {"start", OpRequest::Kind::Start},   {"stop", OpRequest::Kind::Stop},       {"restart", OpRequest::Kind::Restart}};
  auto op_it = kOps.find(verb);
  if (op_it == kOps.end()) return s->finish(false, "unknown verb \"" + verb + "\"");
  if (!authorized(s->uid()))
    return s->finish(false, "uid " + std::to_string(s->uid()) + " may not " + verb + ": only root, the agent's own user" +
                                (cfg_.agent.control_group.empty() ? "" : " or members of " + cfg_.agent.control_group));
  if (shutting_down_) return s->finish(false, "the agent is shutting down");
  std::string name = req.app;
  if (name.empty() && apps_.size() == 1) name = apps_.begin()->first;
  auto app = apps_.find(name);
  if (app == apps_.end()) {
    std::string names;
    for (const auto& [n, sup] : apps_) names += (names.empty() ? "" : ", ") + n;
    return s->finish(false, (name.empty() ? "name an app" : "no app \"" + name + "\"") + " (apps: " + names + ")");
  }

  OpRequest op;
  op.kind = op_it->second;
  op.uid = static_cast<long>(s->uid());
  op.from = req.from;
  op.to = req.to;
  op.steps = req.steps;
  op.no_fleet = req.no_fleet;
  if (op.no_fleet && op.kind != OpRequest::Kind::Deploy) return s->finish(false, "--no-fleet is for deploy");
  if (op.kind == OpRequest::Kind::Deploy && !req.rev.empty()) {
    // A push (the post-receive hook) or `deploy --rev`: export that commit from the app's repo.
    const AppConfig& cfg = app->second->config();
    if (cfg.git.empty()) return s->finish(false, "app " + name + " has no git repository (set git = \"...\")");
    std::string ref = req.ref, why;
    if (!ref.empty() && !hooks::is_deploy_branch(name, cfg.branch, ref, &why)) return s->finish(true, why, {{"ignored", true}});
    if (!op.from.empty()) return s->finish(false, "give --from or --rev, not both");
    op.source = "git";
    op.revision = req.rev;
  } else if (op.kind == OpRequest::Kind::Deploy) {
    if (op.from.empty()) op.from = app->second->config().source;
    if (op.from.empty()) return s->finish(false, "app " + name + " has no source: give --from DIR");
    if (op.from[0] != '/') return s->finish(false, "--from must be an absolute path");
  }
  spdlog::info("{}: {} requested by uid {} (pid {})", name, verb, s->uid(), s->pid());
  op.progress = [s](const std::string& line) { s->progress(line); };
  op.done = [s](bool ok, const std::string& message) { s->finish(ok, message); };
  app->second->submit(std::move(op));
}

}  // namespace agent
