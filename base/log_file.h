// Worker output: the agent owns the pipes of every worker's stdout and stderr and writes each
// line, stamped, to <log_dir>/<app>/app.log. It rotates the file itself when it passes
// log_max_size (app.log -> app.log.1 -> ... -> app.log.N, the oldest dropped): no copytruncate,
// so no line is lost or duplicated at rotation, and the disk use is bounded.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace base {

/// Renames `path` -> `path`.1 -> ... -> `path`.keep, the oldest dropped (a missing one is
/// fine). Each file stays whole lines: renamed, never truncated under a reader.
void rotate_numbered(const std::string& path, int keep);

class LogFile {
 public:
  LogFile(std::string path, std::uint64_t max_size, int max_files);
  ~LogFile();
  LogFile(const LogFile&) = delete;
  LogFile& operator=(const LogFile&) = delete;

  /// Appends `line` and a newline; rotates first if the line would pass max_size.
  void write_line(std::string_view line);
  const std::string& path() const { return path_; }
  /// A reloaded config's log_max_size and log_max_files, from the next line on.
  void set_limits(std::uint64_t max_size, int max_files) { max_size_ = max_size, max_files_ = max_files; }

 private:
  bool open();
  void rotate();
  std::string path_;
  std::uint64_t max_size_;
  int max_files_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  bool reported_error_ = false;
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

 private:
  std::string partial_;
};

}  // namespace base
