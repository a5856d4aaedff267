#include "releases/journal.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <nlohmann/json.hpp>

#include "base/fs.h"
#include "releases/version.h"

namespace releases {

const char* event_name(Event e) {
  switch (e) {
    case Event::Staged: return "staged";
    case Event::Activated: return "activated";
    case Event::Failed: return "failed";
    case Event::RolledBack: return "rolled_back";
    case Event::Refused: return "refused";
    case Event::Baked: return "baked";
    case Event::Halted: return "halted";
    case Event::Note: return "note";
  }
  return "?";
}

std::optional<Event> parse_event(const std::string& s) {
  for (Event e : {Event::Staged, Event::Activated, Event::Failed, Event::RolledBack, Event::Refused, Event::Baked, Event::Halted, Event::Note})
    if (s == event_name(e)) return e;
  return std::nullopt;
}

namespace {

std::string format_line(const JournalEntry& e) {
  nlohmann::json j = {{"time", e.time},       {"event", event_name(e.event)}, {"release", e.release},
                      {"version", e.version}, {"source", e.source},           {"revision", e.revision},
                      {"reason", e.reason},   {"uid", e.uid}};
  if (e.bad) j["bad"] = true;
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

bool Journal::rewrite(const std::vector<JournalEntry>& entries, std::string* err) const {
  std::string text;
  for (const auto& e : entries) text += format_line(e);
  return base::write_file_atomically(path_, text, 0644, err);
}

bool Journal::append(JournalEntry e, std::string* err) const {
  if (e.time.empty()) e.time = iso_time(std::time(nullptr));
  std::string line = format_line(e);

  int fd = ::open(path_.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return *err = base::errno_message("open", path_), false;
  struct stat st {};
  if (::fstat(fd, &st) == 0 && st.st_size > 0) {
    char last = '\n';
    if (::pread(fd, &last, 1, st.st_size - 1) == 1 && last != '\n') line.insert(0, "\n");
  }
  ssize_t n = ::write(fd, line.data(), line.size());
  bool ok = n == static_cast<ssize_t>(line.size());
  if (!ok) *err = n < 0 ? base::errno_message("append to", path_) : "append to " + path_ + ": short write (disk full?)";
  if (ok && ::fsync(fd) != 0) ok = false, *err = base::errno_message("fsync", path_);
  ::close(fd);
  return ok;
}

bool Journal::read(std::vector<JournalEntry>* out, std::vector<std::string>* warnings, std::string* err) const {
  out->clear();
  std::string text;
  if (!base::read_file(path_, &text, err)) {
    if (errno == ENOENT) return true;
    return false;
  }
  size_t lineno = 0, pos = 0;
  while (pos < text.size()) {
    size_t nl = text.find('\n', pos);
    std::string line = text.substr(pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? text.size() : nl + 1;
    ++lineno;
    if (line.empty()) continue;
    auto bad = [&](const std::string& why) {
      warnings->push_back(path_ + ":" + std::to_string(lineno) + ": " + why + "; line skipped");
    };
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      bad("not a JSON object (torn by a crash?)");
      continue;
    }
    JournalEntry e;
    auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : ""; };
    auto ev = parse_event(str("event"));
    if (!ev || (str("release").empty() && *ev != Event::Refused)) {
      bad("no known \"event\" or no \"release\"");
      continue;
    }
    e.event = *ev;
    e.time = str("time");
    e.release = str("release");
    e.version = str("version");
    e.source = str("source");
    e.revision = str("revision");
    e.reason = str("reason");
    if (j.contains("uid") && j["uid"].is_number_integer()) e.uid = j["uid"].get<long>();
    e.bad = j.contains("bad") && j["bad"].is_boolean() && j["bad"].get<bool>();
    out->push_back(std::move(e));
  }
  return true;
}

}  // namespace releases
