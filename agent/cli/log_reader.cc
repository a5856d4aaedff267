// `agent logs` reading (log_reader.h).
#include "agent/cli/log_reader.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/fs.h"

namespace agent {

std::string_view line_time(std::string_view line) {
  // 2026-12-03T21:00:00.123Z
  if (line.size() < 20 || line[4] != '-' || line[10] != 'T') return {};
  size_t end = line.find(' ');
  std::string_view t = line.substr(0, end);
  return t.back() == 'Z' ? t : std::string_view();
}

bool line_matches(std::string_view line, const std::string& time, const LogFilter& f) {
  if (!f.since.empty() && (time.empty() || time < f.since)) return false;
  if (!f.stream && !f.slot) return true;
  // "<time> <slot>/<pid> <stream> ...": only worker lines have a slot and a stream.
  std::string_view own = line_time(line);
  if (own.empty()) return false;
  std::string_view rest = line.substr(own.size() + 1 > line.size() ? line.size() : own.size() + 1);
  size_t slash = rest.find('/'), space = rest.find(' ');
  if (slash == std::string_view::npos || space == std::string_view::npos || slash > space) return false;
  if (f.slot && rest.substr(0, slash) != std::to_string(*f.slot)) return false;
  if (f.stream) {
    std::string_view stream = rest.substr(space + 1, 3);
    if (stream != *f.stream || (rest.size() > space + 4 && rest[space + 4] != ' ')) return false;
  }
  return true;
}

namespace {

// The lines of one file with their times (inherited where a line has none), oldest first.
std::vector<LogLine> lines_of(const std::string& text) {
  std::vector<LogLine> out;
  std::string time;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    size_t end = nl == std::string::npos ? text.size() : nl;
    std::string_view line(text.data() + pos, end - pos);
    if (std::string_view t = line_time(line); !t.empty()) time = t;
    out.push_back({time, std::string(line)});
    pos = end + 1;
  }
  return out;
}

constexpr int kMaxRotated = 1000;  // app.log.1 .. app.log.N: log_max_files is at most 1000

// The whole of `file`, and its inode (the file read, whatever renames follow).
bool read_log(const std::string& file, std::string* text, std::uint64_t* ino) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  ::fstat(fd, &st);
  *ino = st.st_ino;
  text->clear();
  char buf[65536];
  ssize_t got;
  while ((got = ::read(fd, buf, sizeof buf)) > 0) text->append(buf, static_cast<size_t>(got));
  ::close(fd);
  return true;
}

}  // namespace

std::vector<LogLine> tail_logs(const std::string& path, size_t n, const LogFilter& f, LogPosition* end) {
  std::vector<std::vector<LogLine>> newest_first;
  size_t found = 0;
  if (end) {
    *end = {};
    struct stat st {};
    if (n == 0 && ::stat(path.c_str(), &st) == 0) *end = {st.st_ino, static_cast<std::uint64_t>(st.st_size)};  // nothing read: from its end
  }
  // app.log, then app.log.1, .2 ...: each older than the one before. A gap ends the chain; the
  // last of log_max_files (at most 1000) is app.log.1000.
  for (int i = 0; found < n && i <= kMaxRotated; ++i) {
    std::string file = i == 0 ? path : path + "." + std::to_string(i);
    std::string text;
    std::uint64_t ino = 0;
    if (!read_log(file, &text, &ino)) {
      if (i == 0) continue;  // no app.log yet, rotated files may still be there
      break;
    }
    if (i == 0 && end) *end = {ino, text.size()};
    std::vector<LogLine> kept;
    bool older = false;  // a line before --since: the files before this one are older still
    for (auto& l : lines_of(text)) {
      if (!f.since.empty() && !l.time.empty() && l.time < f.since) older = true;
      if (line_matches(l.text, l.time, f)) kept.push_back(std::move(l));
    }
    found += kept.size();
    newest_first.push_back(std::move(kept));
    if (older) break;
  }
  std::vector<LogLine> out;
  for (auto it = newest_first.rbegin(); it != newest_first.rend(); ++it)
    for (auto& l : *it) out.push_back(std::move(l));
  if (out.size() > n) out.erase(out.begin(), out.end() - static_cast<long>(n));
  return out;
}

std::vector<std::string> merge_logs(const std::map<std::string, std::vector<LogLine>>& per_app, size_t n, bool prefix) {
  size_t width = 0;
  for (const auto& [app, _] : per_app) width = std::max(width, app.size());
  struct Item {
    const std::string* time;
    const std::string* app;
    const std::string* text;
    size_t order;
  };
  std::vector<Item> all;
  for (const auto& [app, lines] : per_app)
    for (const auto& l : lines) all.push_back({&l.time, &app, &l.text, all.size()});
  std::stable_sort(all.begin(), all.end(), [](const Item& a, const Item& b) { return *a.time < *b.time; });
  size_t from = all.size() > n ? all.size() - n : 0;
  std::vector<std::string> out;
  for (size_t i = from; i < all.size(); ++i)
    out.push_back(prefix ? *all[i].app + std::string(width - all[i].app->size(), ' ') + " | " + *all[i].text : *all[i].text);
  return out;
}

namespace {

struct Followed {
  std::string app, path;
  int fd = -1;
  ino_t ino = 0;
  std::string partial;
};

// Everything left in f's open file, whole lines to emit; a part line waits for its end.
void drain(Followed& f, const std::function<void(const std::string&, std::string_view)>& emit) {
  if (f.fd < 0) return;
  char buf[65536];
  while (true) {
    ssize_t got = ::read(f.fd, buf, sizeof buf);
    if (got <= 0) break;
    f.partial.append(buf, static_cast<size_t>(got));
  }
  size_t pos = 0;
  for (size_t nl; (nl = f.partial.find('\n', pos)) != std::string::npos; pos = nl + 1)
    emit(f.app, std::string_view(f.partial).substr(pos, nl - pos));
  f.partial.erase(0, pos);
}

bool open_log(Followed& f, std::uint64_t offset) {
  int fd = ::open(f.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  struct stat st {};
  ::fstat(fd, &st);
  if (static_cast<std::uint64_t>(st.st_size) < offset) offset = 0;  // not the file we read: from its start
  ::lseek(fd, static_cast<off_t>(offset), SEEK_SET);
  f.fd = fd;
  f.ino = st.st_ino;
  return true;
}

// A file rotated away: the rest of it (the writer renamed it only after its last line), a last
// part line included, and it is closed.
void read_to_end(Followed& f, const std::function<void(const std::string&, std::string_view)>& emit) {
  drain(f, emit);
  if (!f.partial.empty()) emit(f.app, f.partial), f.partial.clear();
  ::close(f.fd);
  f.fd = -1;
}

// Where following begins: app.log at `pos`, or, when app.log is no longer the file the tail read
// (a rotation came in between), the rest of that file under its rotated name first.
void start_at(Followed& f, const LogPosition& pos, const std::function<void(const std::string&, std::string_view)>& emit) {
  struct stat st {};
  if (pos.ino != 0 && ::stat(f.path.c_str(), &st) == 0 && st.st_ino != pos.ino) {
    for (int i = 1; i <= kMaxRotated; ++i) {
      Followed old = f;
      old.path = f.path + "." + std::to_string(i);
      if (::stat(old.path.c_str(), &st) != 0) break;
      if (st.st_ino != pos.ino || !open_log(old, pos.offset)) continue;
      read_to_end(old, emit);
      open_log(f, 0);
      return;
    }
  }
  open_log(f, pos.offset);
}

// After a rotation app.log is a new file: the old one is read to its end (the writer renames
// it only after its last line), then the new one from its start.
void pump(Followed& f, const std::function<void(const std::string&, std::string_view)>& emit) {
  if (f.fd < 0 && !open_log(f, 0)) return;
  drain(f, emit);
  struct stat st {};
  if (::stat(f.path.c_str(), &st) != 0 || st.st_ino == f.ino) return;
  read_to_end(f, emit);
  if (open_log(f, 0)) drain(f, emit);
}

}  // namespace

bool follow_logs(const std::map<std::string, std::string>& paths, std::map<std::string, LogPosition> starts,
                 const std::function<void(const std::string& app, std::string_view line)>& emit,
                 const std::function<bool()>& stop, std::string* err) {
  int in = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (in < 0) return *err = std::string("inotify: ") + std::strerror(errno), false;
  std::vector<Followed> files;
  std::vector<int> watches;
  for (const auto& [app, path] : paths) {
    Followed f;
    f.app = app;
    f.path = path;
    start_at(f, starts[app], emit);
    files.push_back(std::move(f));
    watches.push_back(-1);
  }
  constexpr uint32_t kEvents = IN_MODIFY | IN_CREATE | IN_MOVED_TO | IN_MOVED_FROM | IN_CLOSE_WRITE;
  while (!stop()) {
    for (size_t i = 0; i < files.size(); ++i)
      if (watches[i] < 0) {  // the app's log folder may not exist until its first worker
        std::string dir = files[i].path.substr(0, files[i].path.rfind('/'));
        watches[i] = ::inotify_add_watch(in, dir.c_str(), kEvents);
      }
    for (auto& f : files) pump(f, emit);
    pollfd p{in, POLLIN, 0};
    ::poll(&p, 1, 1000);  // a second at most: the stop check, and a folder that appeared
    char events[8192];
    while (::read(in, events, sizeof events) > 0) {
    }
  }
  for (auto& f : files)
    if (f.fd >= 0) ::close(f.fd);
  ::close(in);
  return true;
}

}  // namespace agent
