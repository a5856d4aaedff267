// `agent upgrade`: the daemon executes its binary again from disk, in the same pid (nginx's
// binary upgrade, without a second master). What the old image holds and the new one needs
// goes across execve as open fds and a JSON description of them (handoff.h):
//   - the listening sockets of every app, the control socket, the metrics socket;
//   - every worker: still our child (execve keeps the pid and the children), its pidfd and its
//     output pipes; the machine's slots and counters; a draining worker's drain start, from
//     which the new image arms drain_timeout and kill_timeout again for what is left;
//   - the alerts waiting for delivery, with their retry times;
//   - $NOTIFY_SOCKET and the watchdog (systemd sees RELOADING=1, then READY=1 from the new
//     image, the same main pid).
// It is refused, with the reason, while anything is in flight that the description does not
// carry (an operation, a worker starting, a release being staged); `agent upgrade` waits for
// that to end (--wait). The new binary is checked before the old image is given up: it runs
// (`--version`) and accepts the running config (`check`). If execve itself fails, the old image
// goes on and says why. If the new image fails while taking over, that is a crash of the agent:
// the next agent takes the workers over as after one (orphans.h; their record is current), or,
// under agent.service's KillMode=mixed, systemd stops them and restarts the agent.
#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <spdlog/async.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>
#include <thread>

#include "agent/config/config_diff.h"
#include "agent/daemon/daemon.h"
#include "agent/daemon/handoff.h"
#include "agent/daemon/systemd.h"
#include "base/fs.h"
#include "hooks/build.h"
#include "hooks/git_hook.h"

extern char** environ;

namespace agent {

namespace {

// The binary's check: runs it as `/bin/sh -c` would (hooks/build: a timeout, its output kept).
hooks::BuildResult run_binary(const std::string& exe, const std::string& args, const std::vector<std::string>& env) {
  hooks::BuildRequest r;
  r.command = hooks::shell_quote(exe) + " " + args;
  r.cwd = "/";
  r.envp = env;
  r.timeout = base::Millis(30'000);
  return hooks::run_build(r);
}

std::string last_line(const hooks::BuildResult& r) { return r.tail.empty() ? r.message : r.tail.back(); }

}  // namespace

std::string Daemon::upgrade_busy() const {
  if (shutting_down_) return "the agent is shutting down";
  if (!retired_.empty()) return "an app removed by a reload is still draining";
  if (fleet_)
    if (std::string b = fleet_->busy(); !b.empty()) return "the fleet: " + b;
  for (const auto& [name, app] : apps_)
    if (std::string b = app->busy(); !b.empty()) return name + ": " + b;
  return "";
}

void Daemon::on_upgrade(std::shared_ptr<Session> s) {
  if (s->uid() != 0 && s->uid() != ::geteuid())
    return s->finish(false, "uid " + std::to_string(s->uid()) + " may not upgrade the agent: only root or the agent's own user");
  if (upgrading_) return s->finish(false, "an upgrade is already under way");
  if (std::string busy = upgrade_busy(); !busy.empty()) return s->finish(false, "busy: " + busy, {{"busy", true}});
  // The new image reads the config file: it must be what runs, or the upgrade would be a
  // config reload too, unannounced.
  std::string text, err;
  if (!base::read_file(config_path_, &text, &err)) return s->finish(false, "cannot read " + config_path_ + ": " + err);
  if (auto keys = changed_keys(cfg_.text, text); !keys.empty())
    return s->finish(false, config_path_ + " changed since the agent loaded it (" + keys.front() + (keys.size() > 1 ? ", ..." : "") +
                                "): reload it first (systemctl reload agent), or put it back");
  upgrading_ = true;
  spdlog::info("upgrade requested by uid {} (pid {}): checking {}", s->uid(), s->pid(), exe_path_);
  s->progress("checking " + exe_path_);
  auto began = std::chrono::steady_clock::now();
  long uid = static_cast<long>(s->uid());
  // The checks run the new binary: off the loop, which serves meanwhile.
  upgrade_thread_ = std::thread([this, s, began, uid, exe = exe_path_, config = config_path_, env = environ_] {
    std::string failure, version;
    if (::access(exe.c_str(), X_OK) != 0) {
      failure = exe + " is not executable: " + std::strerror(errno);
    } else if (hooks::BuildResult v = run_binary(exe, "--version", env); !v.ok) {
      failure = exe + " --version: " + v.message + (v.tail.empty() ? "" : ": " + v.tail.back());
    } else if (hooks::BuildResult c = run_binary(exe, "check -c " + hooks::shell_quote(config), env); !c.ok) {
      failure = exe + " check of " + config + " failed: " + last_line(c);
    } else {
      version = last_line(v);
    }
    loop_.post_from_thread([this, s, failure, version, began, uid] {
      if (upgrade_thread_.joinable()) upgrade_thread_.join();
      finish_upgrade_check(s, failure, version, began, uid);
    });
  });
}

void Daemon::finish_upgrade_check(std::shared_ptr<Session> s, const std::string& failure, const std::string& version,
                                  std::chrono::steady_clock::time_point began, long uid) {
  auto refuse = [&](const std::string& why) {
    upgrading_ = false;
    spdlog::error("upgrade refused: {}; this agent keeps running", why);
    s->finish(false, why + "; this agent keeps running");
  };
  if (!failure.empty()) return refuse(failure);
  // The checks took a while: something may have begun meanwhile, or the config changed (the
  // binary checked the file, and must have checked what runs).
  if (std::string busy = upgrade_busy(); !busy.empty()) return refuse("busy: " + busy);
  std::string text, err;
  if (!base::read_file(config_path_, &text, &err) || !changed_keys(cfg_.text, text).empty())
    return refuse(config_path_ + " changed while the new binary was checked: reload it, then upgrade again");
  s->progress("checked: " + version + ", the config passes its check");
  s->progress("executing " + exe_path_ + " in pid " + std::to_string(::getpid()) + "; the workers stay");
  pending_exec_ = PendingExec{std::move(s), began, uid};
  loop_.stop();  // run() executes it once the loop is left: nothing of ours is on the stack
}

bool Daemon::exec_new_image(std::string* err) {
  PendingExec& pe = *pending_exec_;
  Handoff h;
  h.generation = generation_ + 1;
  h.from_version = AGENT_VERSION;
  h.uid = pe.uid;
  h.config_text = cfg_.text;
  h.began = pe.began;
  h.notify_socket = notify_socket_path();
  h.watchdog_usec = watchdog_ ? watchdog_->count() : 0;
  h.sockets = sockets_;
  h.activated.assign(activated_.begin(), activated_.end());
  h.control_fd = control_->fd();
  h.metrics_fd = metrics_ ? metrics_->fd() : -1;
  std::vector<int> keep;
  for (const auto& [addr, fd] : sockets_) keep.push_back(fd);
  keep.push_back(h.control_fd);
  if (h.metrics_fd >= 0) keep.push_back(h.metrics_fd);
  for (const auto& [name, app] : apps_) h.apps[name] = app->handoff(&keep);
  h.alerts = alerts_->hand_off();
  history_->flush();
  sd_notify("RELOADING=1\nSTATUS=upgrading the agent: executing " + exe_path_);
  int state_fd = write_handoff(h, err);
  if (state_fd < 0) {
    alerts_->take_back(h.alerts, cfg_.alerts);
    return false;
  }
  // Only these cross execve: whatever a library opened without O_CLOEXEC (libcurl's sockets, a
  // stream) is closed, so nothing piles up upgrade after upgrade.
  ::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC);
  keep.push_back(state_fd);
  for (int fd : keep) ::fcntl(fd, F_SETFD, 0);
  std::string var = std::string(kHandoffEnv) + "=" + std::to_string(state_fd);
  std::vector<std::string> env_strings = environ_;
  env_strings.push_back(var);
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::string config = config_path_;
  std::vector<std::string> args = {exe_path_, "run", "-c", config};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  spdlog::info("upgrade: executing {} (generation {}); if it fails while taking over, it ends as a crash of the agent "
               "would (the next agent takes the workers over)",
               exe_path_, h.generation);
  // Every line written before the image goes: new lines go straight to stderr, the queued ones
  // are waited for (2 s at most: a stderr nobody reads must not hold the upgrade). No logger is
  // dropped: a thread that logs meanwhile still has one.
  auto async_logger = spdlog::default_logger();
  auto sync_logger = std::make_shared<spdlog::logger>("agent", std::make_shared<spdlog::sinks::stderr_sink_mt>());
  sync_logger->set_formatter(log_formatter());
  spdlog::set_default_logger(sync_logger);
  async_logger->flush();
  if (auto pool = spdlog::thread_pool())
    for (auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2); pool->queue_size() > 0 && std::chrono::steady_clock::now() < until;)
      std::this_thread::yield();
  ::execve(exe_path_.c_str(), argv.data(), envp.data());
  // Still here: the old image goes on as it was.
  *err = base::errno_message("execve", exe_path_);
  spdlog::set_default_logger(async_logger);
  for (int fd : keep) ::fcntl(fd, F_SETFD, FD_CLOEXEC);
  ::close(state_fd);
  alerts_->take_back(h.alerts, cfg_.alerts);
  return false;
}

void Daemon::upgraded() {
  size_t workers = 0;
  for (const auto& [name, app] : apps_) workers += app->machine().workers().size();
  releases::HistoryEntry e;
  e.op = "agent_upgrade";
  e.uid = handoff_->uid;
  e.source = "cli";
  e.detail = "agent " + handoff_->from_version + " -> " AGENT_VERSION " (" + exe_path_ + ") in pid " + std::to_string(::getpid()) +
             ", " + std::to_string(workers) + " worker(s) kept";
  e.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - handoff_->began).count();
  spdlog::info("upgraded: {}", e.detail);
  history_->add(std::move(e));
}

}  // namespace agent
