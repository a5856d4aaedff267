#include "base/log_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <spdlog/spdlog.h>

namespace base {

// Everything the writer thread touches. The queue and the limits are under `mu`; the file (fd,
// size, error) is the writer's alone once it runs.
struct LogFile::State {
  const std::string path;
  std::mutex mu;
  std::condition_variable wake, written, finished_cv;
  std::vector<std::string> queue;
  size_t queued_bytes = 0;
  std::uint64_t dropped = 0, enqueued = 0, done = 0;
  bool stop = false, finished = false;
  std::uint64_t max_size;
  int max_files;
  int fd = -1;
  std::uint64_t size = 0;
  bool reported_error = false;

  State(std::string p, std::uint64_t ms, int mf) : path(std::move(p)), max_size(ms), max_files(mf) {}
  ~State() {
    if (fd >= 0) ::close(fd);
  }
  void run();
  void write_batch(const std::vector<std::string>& lines);
  bool open();
  void rotate();
  bool write_all(const std::string& buf);
};

LogFile::LogFile(std::string path, std::uint64_t max_size, int max_files)
    : st_(std::make_shared<State>(std::move(path), max_size, max_files)) {
  st_->open();  // now, so that a log_dir that cannot be written is said at once
  thread_ = std::thread([st = st_] { st->run(); });
}

LogFile::~LogFile() {
  flush(std::chrono::milliseconds(2000));
  bool finished;
  {
    std::unique_lock lock(st_->mu);
    st_->stop = true;
    st_->queue.clear();  // not written by now: dropped, never waited for here (we may be on the loop)
    st_->queued_bytes = 0;
    st_->wake.notify_one();
    finished = st_->finished_cv.wait_for(lock, std::chrono::seconds(1), [&] { return st_->finished; });
  }
  if (finished) thread_.join();
  else thread_.detach();  // stuck in write(2): it ends, and closes the file, when the filesystem lets go
}

const std::string& LogFile::path() const { return st_->path; }

void LogFile::set_limits(std::uint64_t max_size, int max_files) {
  std::lock_guard lock(st_->mu);
  st_->max_size = max_size;
  st_->max_files = max_files;
}

void LogFile::write_line(std::string_view line) {
  {
    std::lock_guard lock(st_->mu);
    if (st_->queued_bytes + line.size() + 1 > kMaxQueued) {
      ++st_->dropped;
      return;
    }
    st_->queue.emplace_back(line);
    st_->queued_bytes += line.size() + 1;
    ++st_->enqueued;
  }
  st_->wake.notify_one();
}

bool LogFile::flush(std::chrono::milliseconds timeout) {
  std::unique_lock lock(st_->mu);
  std::uint64_t target = st_->enqueued;
  return st_->written.wait_for(lock, timeout, [&] { return st_->done >= target; });
}

void LogFile::State::run() {
  std::unique_lock lock(mu);
  std::vector<std::string> batch;
  for (;;) {
    // Woken by lines, not by drops alone: a count of dropped lines goes out with the next
    // batch (a file that refuses every write must not make this spin).
    wake.wait(lock, [&] { return stop || !queue.empty(); });
    if (stop) break;
    batch.swap(queue);
    std::uint64_t lost = std::exchange(dropped, 0), count = batch.size();
    queued_bytes = 0;
    lock.unlock();
    if (lost > 0)
      batch.push_back("(" + std::to_string(lost) + " lines dropped: " + path + " could not be written as fast as they came)");
    write_batch(batch);
    batch.clear();  // freed here, not under the lock the loop's write_line() takes
    lock.lock();
    done += count;
    written.notify_all();
  }
  finished = true;
  finished_cv.notify_all();
}

bool LogFile::State::open() {
  if (fd >= 0) ::close(fd);
  fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0) {
    if (!reported_error) spdlog::error("cannot open log {}: {}", path, std::strerror(errno));
    reported_error = true;
    return false;
  }
  struct stat st {};
  size = ::fstat(fd, &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  reported_error = false;
  return true;
}

void rotate_numbered(const std::string& path, int keep) {
  for (int i = keep; i >= 1; --i) {
    std::string from = i == 1 ? path : path + "." + std::to_string(i - 1);
    ::rename(from.c_str(), (path + "." + std::to_string(i)).c_str());
  }
}

void LogFile::State::rotate() {
  int keep;
  {
    std::lock_guard lock(mu);
    keep = max_files;
  }
  rotate_numbered(path, keep);
  if (keep < 1) ::unlink(path.c_str());
  open();
}

// The whole buffer, across short writes; false (said once) if the file refuses it.
bool LogFile::State::write_all(const std::string& buf) {
  for (size_t off = 0; off < buf.size();) {
    ssize_t n = ::write(fd, buf.data() + off, buf.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (!reported_error) spdlog::error("writing log {}: {}", path, n < 0 ? std::strerror(errno) : "no progress");
      reported_error = true;
      return false;
    }
    off += static_cast<size_t>(n);
    size += static_cast<std::uint64_t>(n);
  }
  return true;
}

// On the writer thread: whole lines, as few write(2)s as rotation allows. Lines the file
// refused are counted as dropped, and said with the next batch.
void LogFile::State::write_batch(const std::vector<std::string>& lines) {
  std::uint64_t limit;
  {
    std::lock_guard lock(mu);
    limit = max_size;
  }
  std::string buf;
  std::uint64_t in_buf = 0, lost = 0;
  auto put = [&] {
    if (buf.empty()) return;
    if ((fd < 0 && !open()) || !write_all(buf)) lost += in_buf;
    buf.clear();
    in_buf = 0;
  };
  for (const auto& line : lines) {
    if (size + buf.size() > 0 && size + buf.size() + line.size() + 1 > limit) {
      put();
      rotate();
    }
    buf.append(line);
    buf += '\n';
    ++in_buf;
    if (buf.size() >= (1u << 16)) put();
  }
  put();
  if (lost > 0) {
    std::lock_guard lock(mu);
    dropped += lost;
  }
}

}  // namespace base
