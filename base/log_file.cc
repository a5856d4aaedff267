#include "base/log_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

namespace base {

LogFile::LogFile(std::string path, std::uint64_t max_size, int max_files)
    : path_(std::move(path)), max_size_(max_size), max_files_(max_files) {
  open();
}

LogFile::~LogFile() {
  if (fd_ >= 0) ::close(fd_);
}

bool LogFile::open() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    if (!reported_error_) spdlog::error("cannot open log {}: {}", path_, std::strerror(errno));
    reported_error_ = true;
    return false;
  }
  struct stat st {};
  size_ = ::fstat(fd_, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  reported_error_ = false;
  return true;
}

void rotate_numbered(const std::string& path, int keep) {
  for (int i = keep; i >= 1; --i) {
    std::string from = i == 1 ? path : path + "." + std::to_string(i - 1);
    ::rename(from.c_str(), (path + "." + std::to_string(i)).c_str());
  }
}

void LogFile::rotate() {
  rotate_numbered(path_, max_files_);
  if (max_files_ < 1) ::unlink(path_.c_str());
  open();
}

void LogFile::write_line(std::string_view line) {
  if (fd_ < 0 && !open()) return;
  if (size_ > 0 && size_ + line.size() + 1 > max_size_) rotate();
  if (fd_ < 0) return;
  std::string buf;
  buf.reserve(line.size() + 1);
  buf.append(line);
  buf += '\n';
  ssize_t n = ::write(fd_, buf.data(), buf.size());
  if (n < 0) {
    if (!reported_error_) spdlog::error("writing log {}: {}", path_, std::strerror(errno));
    reported_error_ = true;
    return;
  }
  size_ += static_cast<std::uint64_t>(n);
}

}  // namespace base
