// history.jsonl: every operation the agent did, on every app, one JSON object per line, in
// <log_dir> (a record for people, like the app logs; held open, so not in state_dir). Deploys, rollbacks, reloads, starts, stops, restarts, memory replacements,
// crash restarts and config reloads, with who asked, how it ended and how long it took. It is
// what `agent history` shows; `jq` reads it too.
//
// Unlike journal.jsonl (the releases, which rollback reads back and which is fsynced line by
// line), this is a record for people: it is written by a thread of its own (base/log_file.h),
// never holding the event loop, and rotated at 4 MiB with 3 old files kept.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace base {
class LogFile;
}

namespace releases {

struct HistoryEntry {
  std::string time;      // ISO 8601 UTC with milliseconds; filled by HistoryLog::add when empty
  std::string app;       // "" for what concerns the agent (a config reload)
  std::string op;        // deploy, rollback, reload, start, stop, restart, replace, crash, config_reload
  bool ok = true;
  std::string detail;    // the outcome in words: "live: 1.2.0", "exited with status 3; restarting in 400ms"
  long uid = -1;         // who asked; -1: the agent itself (a crash, max_memory, a file watch, SIGHUP)
  std::string source;    // cli, git, rpm (a file watch), max_memory, signal, fleet
  double seconds = -1;   // how long it took; -1 when it is an instant
  std::string release;   // the release it concerned, if one
};

std::string history_line(const HistoryEntry& e);
std::optional<HistoryEntry> parse_history_line(const std::string& line);

class HistoryLog {
 public:
  static constexpr std::uint64_t kMaxSize = 4u << 20;
  static constexpr int kMaxFiles = 3;

  explicit HistoryLog(const std::string& path);
  ~HistoryLog();
  /// Queues the entry (its time now when not given); never waits for the disk.
  void add(HistoryEntry e);
  /// Waits (a bounded time) until every entry added so far is written.
  void flush();
  const std::string& path() const;

 private:
  std::unique_ptr<base::LogFile> file_;
};

/// The entries of history.jsonl at `path` and its rotated files, oldest first, from `since`
/// (an ISO time; "" for all) on. Lines that do not parse are skipped and named in *warnings.
std::vector<HistoryEntry> read_history(const std::string& path, const std::string& since, std::vector<std::string>* warnings);

}  // namespace releases
