// The daemon's side of systemd and the journal (daemon.h): READY=1 once the apps are up, STATUS=
// with what each app is doing, WATCHDOG=1 from the loop, and the agent's own log lines, with
// journal priorities instead of their own time when stderr is the journal.
#include <unistd.h>

#include <cstdlib>
#include <spdlog/async.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "agent/daemon/daemon.h"
#include "agent/daemon/systemd.h"

namespace agent {

namespace {

// %* in a log pattern: the line's syslog priority as journald reads it from a stream ("<4>").
class PriorityFlag : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&, spdlog::memory_buf_t& dest) override {
    std::string_view p = journal_priority(static_cast<int>(msg.level));
    dest.append(p.data(), p.data() + p.size());
  }
  std::unique_ptr<custom_flag_formatter> clone() const override { return std::make_unique<PriorityFlag>(); }
};

}  // namespace

// READY=1 (systemd Type=notify) once every app's first operation is over: its workers serve,
// or it failed and said why. The sockets are bound long before, so nothing was refused meanwhile.
void Daemon::check_ready() {
  ready_timer_ = 0;
  for (const auto& [name, app] : apps_)
    if (!app->settled()) {
      ready_timer_ = loop_.after(std::chrono::milliseconds(50), [this] { check_ready(); });
      return;
    }
  last_status_ = status_line();
  if (sd_notify("READY=1\nSTATUS=" + last_status_)) spdlog::info("told systemd: ready");
  if (notify_socket_set()) status_timer_ = loop_.after(std::chrono::seconds(1), [this] { status_tick(); });
}

std::string Daemon::status_line() const {
  std::string line;
  for (const auto& [name, app] : apps_) line += (line.empty() ? "" : "; ") + app->summary();
  return line.empty() ? "no apps" : line;
}

// STATUS= for `systemctl status agent`, when it changed: what each app is doing now
// ("nuomi: rolling 1.2.0, batch 3/14; h5: running, 10/10 ready").
void Daemon::status_tick() {
  status_timer_ = 0;
  if (shutting_down_) return;
  if (std::string line = status_line(); line != last_status_) {
    last_status_ = line;
    sd_notify("STATUS=" + line);
  }
  status_timer_ = loop_.after(std::chrono::seconds(1), [this] { status_tick(); });
}

void Daemon::watchdog_ping(std::chrono::milliseconds every) {
  sd_notify("WATCHDOG=1");  // from the loop: a loop that stops turning stops pinging
  watchdog_timer_ = loop_.after(every, [this, every] { watchdog_ping(every); });
}

// The agent's own log: stderr, through spdlog's async thread.
void install_logger() {
  // The log is written by a thread of its own, not the event loop: a slow reader of stderr, a
  // journald that does not read, or a terminal scrolled back, never holds the event loop. When
  // that thread is behind by kLogQueue lines, the oldest waiting are dropped, never waited for.
  constexpr size_t kLogQueue = 8192;
  spdlog::init_thread_pool(kLogQueue, 1);
  auto logger = spdlog::create_async_nb<spdlog::sinks::stderr_color_sink_mt>("agent");
  logger->set_formatter(log_formatter());
  spdlog::set_default_logger(logger);
}

std::unique_ptr<spdlog::formatter> log_formatter() {
  if (journal_stream_is(std::getenv("JOURNAL_STREAM"), STDERR_FILENO)) {
    // journald: "<4>" says the priority (journalctl -p warning), the journal adds the time.
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<PriorityFlag>('*').set_pattern("%*%v");
    return formatter;
  }
  return std::make_unique<spdlog::pattern_formatter>("%Y-%m-%dT%H:%M:%S.%eZ %^%l%$ %v", spdlog::pattern_time_type::utc);
}

}  // namespace agent
