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
  open();  // now, so that a log_dir that cannot be written is said at once
  thread_ = std::thread([this] { run(); });
}

LogFile::~LogFile() {
  flush(std::chrono::milliseconds(2000));
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  wake_.notify_one();
  // A writer stuck in write(2) on a hung filesystem would hold us here; detaching it would
  // leave it writing into freed memory. Stuck it is, then: the agent is on its way out.
  thread_.join();
  if (fd_ >= 0) ::close(fd_);
}

void LogFile::set_limits(std::uint64_t max_size, int max_files) {
  std::lock_guard lock(mu_);
  max_size_ = max_size;
  max_files_ = max_files;
}

void LogFile::write_line(std::string_view line) {
  {
    std::lock_guard lock(mu_);
    if (queued_bytes_ + line.size() + 1 > kMaxQueued) {
      ++dropped_;
      return;
    }
    queue_.emplace_back(line);
    queued_bytes_ += line.size() + 1;
    ++enqueued_;
  }
  wake_.notify_one();
}

bool LogFile::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  std::uint64_t target = enqueued_;
  return written_.wait_for(lock, timeout, [&] { return done_ >= target; });
}

void LogFile::run() {
  std::unique_lock lock(mu_);
  for (;;) {
    wake_.wait(lock, [&] { return stop_ || !queue_.empty() || dropped_ > 0; });
    if (queue_.empty() && dropped_ == 0 && stop_) return;
    std::vector<std::string> batch;
    batch.swap(queue_);
    std::uint64_t dropped = std::exchange(dropped_, 0), count = batch.size();
    queued_bytes_ = 0;
    lock.unlock();
    if (dropped > 0)
      batch.push_back("(" + std::to_string(dropped) + " lines dropped: " + path_ + " could not be written as fast as they came)");
    write_batch(batch);
    lock.lock();
    done_ += count;
    written_.notify_all();
  }
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
  int keep;
  {
    std::lock_guard lock(mu_);
    keep = max_files_;
  }
  rotate_numbered(path_, keep);
  if (keep < 1) ::unlink(path_.c_str());
  open();
}

// On the writer thread: whole lines, as few write(2)s as rotation allows.
void LogFile::write_batch(const std::vector<std::string>& lines) {
  std::uint64_t max_size;
  {
    std::lock_guard lock(mu_);
    max_size = max_size_;
  }
  std::string buf;
  auto put = [&] {
    if (buf.empty()) return;
    if (fd_ < 0 && !open()) return buf.clear();
    ssize_t n = ::write(fd_, buf.data(), buf.size());
    if (n < 0) {
      if (!reported_error_) spdlog::error("writing log {}: {}", path_, std::strerror(errno));
      reported_error_ = true;
    } else {
      size_ += static_cast<std::uint64_t>(n);
    }
    buf.clear();
  };
  for (const auto& line : lines) {
    if (size_ + buf.size() > 0 && size_ + buf.size() + line.size() + 1 > max_size) {
      put();
      rotate();
    }
    buf.append(line);
    buf += '\n';
    if (buf.size() >= (1u << 16)) put();
  }
  put();
}

}  // namespace base
