// FileWatch: notices that the package manager dropped new code into an app's source.
//
// Inotify is a hint, never the truth (watchman): the directory holding the watched file is
// watched (so an atomic rename-replace is seen, not just writes in place), and so is the parent
// of the source directory (so a source directory that is replaced, or removed and created
// again, is re-armed). Any event, or IN_Q_OVERFLOW, only restarts a quiet timer of `settle`.
// When it expires the file is read: if its content differs from the content last deployed,
// on_change() is called; a touch that leaves the content as it was deploys nothing. With
// `poll_interval` the file is also read on a timer, for filesystems without inotify (NFS).
#pragma once

#include <functional>
#include <optional>
#include <string>

#include "base/event_loop.h"
#include "base/units.h"

namespace watchers {

class FileWatch {
 public:
  FileWatch(base::EventLoop& loop, std::string source_dir, std::string watch_rel, base::Millis settle,
            std::optional<base::Millis> poll_interval, std::function<void(const std::string& content)> on_change);
  ~FileWatch();
  FileWatch(const FileWatch&) = delete;
  FileWatch& operator=(const FileWatch&) = delete;

  /// Starts watching. `deployed` is the watched file's content last acted on (empty if none):
  /// only a different content triggers, and each content triggers once. on_change gets it.
  /// Fails only if inotify cannot be set up.
  bool start(const std::string& deployed, std::string* err);
  /// The content last acted on: the baseline of a watch that replaces this one.
  const std::string& deployed() const { return deployed_; }

 private:
  void arm();
  void on_events();
  void quiet_for_a_while();
  void check();

  base::EventLoop& loop_;
  std::string source_, watch_rel_, dir_, parent_;
  base::Millis settle_;
  std::optional<base::Millis> poll_;
  std::function<void(const std::string&)> on_change_;
  int fd_ = -1;
  int dir_wd_ = -1, parent_wd_ = -1;
  base::EventLoop::Id watch_ = 0, settle_timer_ = 0, poll_timer_ = 0;
  std::string deployed_;
};

}  // namespace watchers
