// journal.jsonl: the append-only history of an app's releases, one JSON object per line.
// It is what `agent releases` shows and what rollback reads; plain `tail`/`jq` can read it.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace releases {

// refused: a deploy turned down before anything was staged (no version, no package.json in a
// pushed commit, a tree that kept changing); it has no release id. baked: the release passed
// its bake (docs/operating.md "Health and bake"); one that failed it is rolled_back with `bad` set.
// halted: the fleet halted its version before it rolled here (docs/operating.md "Fleets"). note: a line
// about a release that changes nothing (a wait for the fleet, a deploy past its gate).
enum class Event { Staged, Activated, Failed, RolledBack, Refused, Baked, Halted, Note };
const char* event_name(Event e);
std::optional<Event> parse_event(const std::string& s);

struct JournalEntry {
  std::string time;      // ISO 8601 UTC; filled by append() when empty
  Event event = Event::Staged;
  std::string release;   // release id; empty for refused
  std::string version;
  std::string source;    // rpm | git | cli
  std::string revision;  // git commit, when there is one
  std::string reason;    // why it failed / why it was activated or rolled back
  long uid = -1;         // who asked
  bool bad = false;      // rolled_back: it failed its bake; rollback never lands on it
};

class Journal {
 public:
  explicit Journal(std::string path) : path_(std::move(path)) {}
  const std::string& path() const { return path_; }

  /// Appends one line with a single write(2) and fsyncs it. A line left torn by a crash is
  /// closed off first, so one bad line never swallows the next.
  bool append(JournalEntry entry, std::string* err) const;

  /// Replaces the whole journal with `entries`, atomically (a temp file, fsynced, renamed).
  bool rewrite(const std::vector<JournalEntry>& entries, std::string* err) const;

  /// Every entry in order. A missing journal is empty. Lines that do not parse are skipped and
  /// described in `*warnings` ("journal.jsonl:7: ...").
  bool read(std::vector<JournalEntry>* out, std::vector<std::string>* warnings, std::string* err) const;

 private:
  std::string path_;
};

}  // namespace releases
