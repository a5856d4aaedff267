// Worker output: the agent owns the pipes of every worker's stdout and stderr and writes each
// line, stamped, to <log_dir>/<app>/app.log. It rotates the file itself when it passes
// log_max_size (app.log -> app.log.1 -> ... -> app.log.N, the oldest dropped): no copytruncate,
// so no line is lost or duplicated at rotation, and the disk use is bounded.
//
// The writing is done by a thread of the LogFile's own: write_line() only queues, so a slow or
// stuck log_dir (a full disk, a hung NFS mount, writeback behind a big staging) never holds the
// event loop. Past kMaxQueued bytes waiting, lines are dropped and the file says how many.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace base {

/// Renames `path` -> `path`.1 -> ... -> `path`.keep, the oldest dropped (a missing one is
/// fine). Each file stays whole lines: renamed, never truncated under a reader.
void rotate_numbered(const std::string& path, int keep);

class LogFile {
 public:
  static constexpr size_t kMaxQueued = 8u << 20;

  LogFile(std::string path, std::uint64_t max_size, int max_files);
  /// Writes what is still queued for at most 2 s, drops the rest, and waits at most 1 s more
  /// for the writer: a writer stuck in write(2) on a hung filesystem is left to finish alone.
  ~LogFile();
  LogFile(const LogFile&) = delete;
  LogFile& operator=(const LogFile&) = delete;

  /// Queues `line` and a newline; the writer rotates first if the line would pass max_size.
  /// Never waits for the disk.
  void write_line(std::string_view line);
  /// Waits until every line queued so far is written (or `timeout` passes); true if it is.
  bool flush(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000));
  const std::string& path() const;
  /// A reloaded config's log_max_size and log_max_files, from the next line on.
  void set_limits(std::uint64_t max_size, int max_files);

 private:
  struct State;  // shared with the writer thread, which may outlive us (see the destructor)
  std::shared_ptr<State> st_;
  std::thread thread_;
};

/// Splits a byte stream into lines; a line longer than `max` is cut into pieces.
class LineSplitter {
 public:
  template <typename F>
  void feed(std::string_view data, F&& emit, size_t max = 16384) {
    for (char c : data) {
      if (c == '\n') {
        emit(std::string_view(partial_));
        partial_.clear();
      } else {
        partial_ += c;
        if (partial_.size() >= max) {
          emit(std::string_view(partial_));
          partial_.clear();
        }
      }
    }
  }
  template <typename F>
  void flush(F&& emit) {
    if (!partial_.empty()) emit(std::string_view(partial_));
    partial_.clear();
  }
  /// The start of a line not ended yet (handed to the next image of the agent with its pipe).
  const std::string& partial() const { return partial_; }
  void set_partial(std::string p) { partial_ = std::move(p); }

 private:
  std::string partial_;
};

}  // namespace base
