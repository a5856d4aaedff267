// Reading the workers' logs as `agent logs` does: the lines of <log_dir>/<app>/app.log and its
// rotated files app.log.1 .. app.log.N (base/log_file.h writes them), filtered by stream, slot
// and age, merged across apps by time, and followed across rotation by inotify.
//
// A line is "<time> <slot>/<pid> <out|err> <text>" for a worker, "build <text>" for a build
// step, or a note of the writer's own; a line without a time of its own takes the one before.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace agent {

struct LogFilter {
  std::optional<std::string> stream;  // "out" or "err": only worker lines of that stream
  std::optional<long> slot;           // only worker lines of that slot
  std::string since;                  // an ISO time ("2026-12-03T20:50:00.000Z"): only lines from then on
  bool any() const { return stream || slot || !since.empty(); }
};

struct LogLine {
  std::string time;  // its own, or the one of the line before it ("" before any)
  std::string text;  // the line as stored, without its newline
};

/// The time a stored line begins with ("2026-12-03T21:00:00.123Z"), or "" when it has none.
std::string_view line_time(std::string_view line);

/// Whether `line` (with `time`, its own or inherited) passes `f`.
bool line_matches(std::string_view line, const std::string& time, const LogFilter& f);

/// Where reading a log stopped: the file (its inode, which a rotation keeps under its new name)
/// and the offset in it.
struct LogPosition {
  std::uint64_t ino = 0;
  std::uint64_t offset = 0;
};

/// The last `n` lines passing `f` of app.log at `path` and of its rotated files, oldest first.
/// Reads the newest file first and goes back only as far as it needs. *end (when given): the
/// app.log that was read and how much of it, where following it begins (with n = 0 too).
std::vector<LogLine> tail_logs(const std::string& path, size_t n, const LogFilter& f, LogPosition* end = nullptr);

/// Several apps' lines merged by time (stable: an app's own order is kept), each text prefixed
/// with its app's name padded to the longest ("web | ..."), then the last `n`.
std::vector<std::string> merge_logs(const std::map<std::string, std::vector<LogLine>>& per_app, size_t n, bool prefix);

/// Follows app.log of each app (name -> path) from the positions given (where tail_logs
/// stopped), calling `emit` with each whole new line, across rotations: when app.log is renamed
/// away, the rest of the old file is read before the new one, so no line is lost or repeated;
/// that holds for a rotation between the tail and the start of following too (the file read is
/// found again by its inode among the rotated ones). Returns only
/// when `stop` says so (checked at least once a second) or on an inotify failure (false, *err).
bool follow_logs(const std::map<std::string, std::string>& paths, std::map<std::string, LogPosition> starts,
                 const std::function<void(const std::string& app, std::string_view line)>& emit,
                 const std::function<bool()>& stop, std::string* err);

}  // namespace agent
