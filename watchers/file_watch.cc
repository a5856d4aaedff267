#include "watchers/file_watch.h"

#include <sys/epoll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

#include "base/fs.h"

namespace watchers {
namespace {

std::string dirname_of(const std::string& path) {
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

FileWatch::FileWatch(base::EventLoop& loop, std::string source_dir, std::string watch_rel, base::Millis settle,
                     std::optional<base::Millis> poll_interval, std::function<void(const std::string&)> on_change)
    : loop_(loop),
      source_(std::move(source_dir)),
      watch_rel_(std::move(watch_rel)),
      dir_(dirname_of(source_ + "/" + watch_rel_)),
      parent_(dirname_of(source_)),
      settle_(settle),
      poll_(poll_interval),
      on_change_(std::move(on_change)) {}

FileWatch::~FileWatch() {
  loop_.remove(watch_);
  loop_.cancel(settle_timer_);
  loop_.cancel(poll_timer_);
  if (fd_ >= 0) ::close(fd_);
}

bool FileWatch::start(const std::string& deployed, std::string* err) {
  deployed_ = deployed;
  fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) return *err = std::string("inotify: ") + std::strerror(errno), false;
  watch_ = loop_.add(fd_, EPOLLIN, [this](std::uint32_t) { on_events(); });
  arm();
  if (poll_) poll_timer_ = loop_.after(*poll_, [this] { check(); });
  // What landed while the agent was not running is a change too.
  quiet_for_a_while();
  return true;
}

// (Re)adds the watches. A directory that does not exist yet is watched through its parent.
void FileWatch::arm() {
  const uint32_t kDir = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_MODIFY | IN_ATTRIB |
                        IN_DELETE_SELF | IN_MOVE_SELF;
  const uint32_t kParent = IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ONLYDIR;
  if (parent_wd_ < 0) parent_wd_ = ::inotify_add_watch(fd_, parent_.c_str(), kParent);
  if (dir_wd_ >= 0) ::inotify_rm_watch(fd_, dir_wd_);
  dir_wd_ = ::inotify_add_watch(fd_, dir_.c_str(), kDir | IN_ONLYDIR);
  if (dir_wd_ < 0 && errno != ENOENT)
    spdlog::warn("watch {}: {}", dir_, std::strerror(errno));
}

void FileWatch::on_events() {
  alignas(inotify_event) char buf[16384];
  bool rearm = false, relevant = false;
  while (true) {
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) break;
    for (char* p = buf; p < buf + n;) {
      auto* e = reinterpret_cast<inotify_event*>(p);
      p += sizeof(inotify_event) + e->len;
      if (e->mask & IN_Q_OVERFLOW) relevant = rearm = true;  // events were lost: look again
      if (e->wd == dir_wd_) {
        relevant = true;
        if (e->mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) rearm = true, dir_wd_ = -1;
      } else if (e->wd == parent_wd_) {
        relevant = true;
        rearm = true;  // the source directory (or a parent of the watched file) came or went
      }
    }
  }
  if (rearm) arm();
  if (relevant) quiet_for_a_while();
}

void FileWatch::quiet_for_a_while() {
  loop_.cancel(settle_timer_);
  settle_timer_ = loop_.after(settle_, [this] {
    settle_timer_ = 0;
    check();
  });
}

void FileWatch::check() {
  if (poll_) {
    loop_.cancel(poll_timer_);
    poll_timer_ = loop_.after(*poll_, [this] { check(); });
  }
  std::string content, err;
  if (!base::read_file(source_ + "/" + watch_rel_, &content, &err)) {
    spdlog::info("watch: {} (waiting for it)", err);
    return;
  }
  if (content == deployed_) {
    spdlog::info("watch: {}/{} settled, content unchanged: nothing to deploy", source_, watch_rel_);
    return;
  }
  spdlog::info("watch: {}/{} changed and settled for {}: deploying", source_, watch_rel_, base::format_duration(settle_));
  deployed_ = content;  // a refused package is not retried on every event; the next change is
  on_change_(content);
}

}  // namespace watchers
