// The release store (store.h). Over 500 lines on purpose: staging, activation, recovery and
// pruning keep one set of invariants (a release dir is whole or .tmp; `current` moves by
// rename; the journal says why) and share the private helpers that keep them.
#include "releases/store.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <ctime>
#include <map>
#include <thread>

#include "releases/git.h"
#include "releases/version.h"

namespace releases {

const char* state_name(ReleaseState s) {
  switch (s) {
    case ReleaseState::Staged: return "staged";
    case ReleaseState::Active: return "active";
    case ReleaseState::Previous: return "previous";
    case ReleaseState::Failed: return "failed";
    case ReleaseState::RolledBack: return "rolled_back";
    case ReleaseState::Bad: return "bad";
    case ReleaseState::Refused: return "refused";
    case ReleaseState::Halted: return "halted";
    case ReleaseState::Unknown: return "unknown";
  }
  return "?";
}

namespace {

// A journal entry about `id`, carrying the version, source and revision it was staged with.
JournalEntry entry_about(const std::vector<JournalEntry>& history, Event event, const std::string& id,
                         const std::string& reason, long uid) {
  JournalEntry e;
  e.event = event;
  e.release = id;
  e.reason = reason;
  e.uid = uid;
  for (const auto& s : history)
    if (s.release == id && s.event == Event::Staged) e.version = s.version, e.source = s.source, e.revision = s.revision;
  return e;
}

}  // namespace

ReleaseStore::ReleaseStore(std::string app_dir) : app_dir_(std::move(app_dir)), journal_(app_dir_ + "/journal.jsonl") {}

bool ReleaseStore::init(std::string* err) {
  return base::make_dirs(releases_dir(), err) && base::make_dirs(shared_dir(), err);
}

std::vector<std::string> ReleaseStore::release_ids() const {
  std::vector<std::string> ids;
  DIR* d = ::opendir(releases_dir().c_str());
  if (!d) return ids;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.empty() || name[0] == '.' || name.ends_with(".tmp")) continue;
    if (base::is_directory(releases_dir() + "/" + name)) ids.push_back(name);
  }
  ::closedir(d);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::optional<std::string> ReleaseStore::current() const {
  char buf[4096];
  ssize_t n = ::readlink(current_link().c_str(), buf, sizeof buf - 1);
  if (n <= 0) return std::nullopt;
  std::string target(buf, static_cast<size_t>(n));
  size_t slash = target.rfind('/');
  std::string id = slash == std::string::npos ? target : target.substr(slash + 1);
  if (id.empty() || !base::is_directory(release_dir(id))) return std::nullopt;
  return id;
}

bool ReleaseStore::read_journal(std::vector<JournalEntry>* entries, std::string* err) const {
  std::vector<std::string> warnings;  // torn lines are skipped; list() reports them
  return journal_.read(entries, &warnings, err);
}

std::vector<std::string> ReleaseStore::activation_stack(const std::vector<JournalEntry>& entries) const {
  std::vector<std::string> stack;
  for (const auto& e : entries) {
    auto it = std::find(stack.begin(), stack.end(), e.release);
    switch (e.event) {
      case Event::Activated:
        // Activating a release already in the history returns to it: what was above is gone.
        if (it != stack.end()) stack.erase(it + 1, stack.end());
        else stack.push_back(e.release);
        break;
      case Event::Failed:
      case Event::RolledBack:
        if (it != stack.end()) stack.erase(it);
        break;
      case Event::Staged:
      case Event::Refused:
      case Event::Baked:
      case Event::Halted:
      case Event::Note: break;
    }
  }
  std::erase_if(stack, [&](const std::string& id) { return !base::is_directory(release_dir(id)); });
  // `current` is the truth for what is live, even if a crash kept the journal from saying so:
  // as with an activation, what was above it is no longer in the history.
  if (auto cur = current()) {
    auto it = std::find(stack.begin(), stack.end(), *cur);
    if (it != stack.end()) stack.erase(it + 1, stack.end());
    else stack.push_back(*cur);
  }
  return stack;
}

bool ReleaseStore::recover(std::vector<std::string>* notes, std::string* err) {
  if (!init(err)) return false;
  ::unlink((current_link() + ".tmp").c_str());
  DIR* d = ::opendir(releases_dir().c_str());
  if (!d) return *err = base::errno_message("open", releases_dir()), false;
  std::vector<std::string> leftovers;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name.ends_with(".tmp")) leftovers.push_back(name);
  }
  ::closedir(d);
  for (const auto& name : leftovers) {
    // Never fatal: a leftover that cannot be removed must not keep the agent (every app) down.
    std::string rm_err;
    if (!base::remove_tree(releases_dir() + "/" + name, &rm_err))
      notes->push_back("could not remove " + releases_dir() + "/" + name + " (left half-done by an earlier run): " + rm_err +
                       "; remove it by hand");
    else
      notes->push_back("removed " + releases_dir() + "/" + name + ", left half-done by an earlier run");
  }

  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  auto cur = current();
  if (!cur) return true;
  std::optional<std::string> last_activated;
  for (const auto& e : entries)
    if (e.event == Event::Activated) last_activated = e.release;
  if (last_activated != cur) {
    auto e = entry_about(entries, Event::Activated, *cur, "recovered: current pointed here at start but the journal did not record it", -1);
    if (!journal_.append(e, err)) return false;
    notes->push_back("recorded in the journal that " + *cur + " is current");
  }
  return true;
}

std::string ReleaseStore::unique_id(const std::string& version) const {
  std::string base = make_release_id(std::time(nullptr), version), id = base;
  for (int n = 2; ::access(release_dir(id).c_str(), F_OK) == 0 || ::access((release_dir(id) + ".tmp").c_str(), F_OK) == 0; ++n)
    id = base + "_" + std::to_string(n);
  return id;
}

bool ReleaseStore::link_shared(const std::string& rdir, const std::vector<std::string>& dirs, std::string* err) {
  for (const auto& rel : dirs) {
    std::string shared = shared_dir() + "/" + rel;
    if (!base::make_dirs(shared, err)) return false;
    // Each parent inside the release must be a real directory: a symlink there could point the
    // link (and what the app then writes) outside the release.
    std::string parent = rdir;
    size_t pos = 0;
    while (true) {
      size_t slash = rel.find('/', pos);
      if (slash == std::string::npos) break;
      parent = rdir + "/" + rel.substr(0, slash);
      struct stat st {};
      if (::lstat(parent.c_str(), &st) == 0) {
        if (!S_ISDIR(st.st_mode)) return *err = "linked_dirs \"" + rel + "\": " + parent + " is not a directory in the release", false;
      } else if (::mkdir(parent.c_str(), 0755) != 0) {
        return *err = base::errno_message("mkdir", parent), false;
      }
      pos = slash + 1;
    }
    std::string link = rdir + "/" + rel;
    if (!base::remove_tree(link, err)) return false;  // what the package shipped there is replaced
    if (::symlink(shared.c_str(), link.c_str()) != 0) return *err = base::errno_message("symlink", link), false;
  }
  return true;
}

bool ReleaseStore::stage(const StageRequest& req, Release* out, std::string* err) {
  static const char kCancelled[] = "staging cancelled: the agent is shutting down";
  if (!req.git_repo.empty()) return stage_commit(req, out, err);
  auto say = [&](const std::string& s) { if (req.progress) req.progress(s); };
  if (!base::is_directory(req.from)) return *err = "source directory " + req.from + " does not exist", false;
  if (!init(err)) return false;
  // An installer may still be writing: a watched file that does not parse yet, a file that
  // vanishes mid-copy, or a watched file that changed by the end all mean "stage again".
  auto cancelled = [&] { return req.cancel && req.cancel->load(); };
  auto again = [&](int attempt, const std::string& why) {
    say(why + "; staging again");
    // In small steps: a shutdown must not wait out the pause.
    auto until = std::chrono::steady_clock::now() + std::max(std::chrono::milliseconds(200 * attempt), req.quiet);
    while (!cancelled() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  };
  for (int attempt = 1; attempt <= req.max_tries; ++attempt) {
    if (cancelled()) return *err = kCancelled, false;
    bool last = attempt == req.max_tries;
    std::string version, before;
    if (!read_version(req.from, req.watch, &version, &before, err)) {
      if (last || !base::is_directory(req.from)) return false;
      again(attempt, *err);
      continue;
    }
    std::string id = unique_id(version), tmp = release_dir(id) + ".tmp";
    say("staging " + req.from + " (version " + version + ") into " + tmp);
    base::CopyStats stats;
    std::string staged, after, ignored;
    timespec copy_began = base::change_clock();
    bool copied = base::copy_tree(req.from, tmp, &stats, err, req.cancel.get());
    int copy_errno = errno;
    if (!copied && copy_errno == ECANCELED) {
      std::string cleanup_err;
      base::remove_tree(tmp, &cleanup_err);
      return *err = kCancelled, false;
    }
    bool vanished = !copied && copy_errno == ENOENT;
    if (vanished || (copied && (!base::read_file(tmp + "/" + req.watch, &staged, &ignored) ||
                                !base::read_file(req.from + "/" + req.watch, &after, &ignored) || staged != before || after != before))) {
      std::string cleanup_err;
      base::remove_tree(tmp, &cleanup_err);
      if (vanished && last) return *err = "staging failed: " + *err, false;
      if (!last) again(attempt, vanished ? *err : req.watch + " changed while staging (an installer still writing?)");
      continue;
    }
    if (!copied) {
      std::string cleanup_err;
      if (!base::remove_tree(tmp, &cleanup_err)) *err += "; and cleaning up: " + cleanup_err;
      *err = "staging failed: " + *err;
      return false;
    }
    // The watched file can land before the code (RPM writes in payload order): anything in the
    // tree that changed while it was copied, or less than `quiet` before, means an installer
    // may still be writing and the copy may mix old and new files.
    // Only for a package manager's drop (quiet > 0): a directory given by hand is the
    // operator's to keep still, and may hold files something keeps writing.
    std::string changed, walk_err;
    if (req.quiet.count() > 0) {
      long long ns = static_cast<long long>(copy_began.tv_sec) * 1'000'000'000 + copy_began.tv_nsec -
                     std::min<long long>(req.quiet.count(), 86'400'000) * 1'000'000;
      timespec since{static_cast<time_t>(ns / 1'000'000'000), static_cast<long>(ns % 1'000'000'000)};
      if (!base::changed_since(req.from, since, &changed, &walk_err)) changed = "(" + walk_err + ")";
    }
    if (!changed.empty()) {
      std::string cleanup_err;
      base::remove_tree(tmp, &cleanup_err);
      if (last) {
        *err = req.from + " kept changing while staging (" + std::to_string(req.max_tries) + " tries, last: " + changed +
               "): is an installer still writing? Nothing was staged";
        return false;
      }
      again(attempt, changed + " changed less than " + std::to_string(req.quiet.count()) +
                         "ms before or while staging (the tree is still being written)");
      continue;
    }
    return finish_staging(req, id, version, stats, attempt, out, err);
  }
  *err = req.from + "/" + req.watch + " kept changing while staging (" + std::to_string(req.max_tries) +
         " tries): is an installer still writing? Nothing was staged";
  return false;
}

bool ReleaseStore::stage_commit(const StageRequest& req, Release* out, std::string* err) {
  auto say = [&](const std::string& s) { if (req.progress) req.progress(s); };
  if (!init(err)) return false;
  GitCommit commit;
  if (!git_resolve(req.git_repo, req.revision, &commit, err)) return false;
  out->revision = commit.oid;  // a refusal from here on is journaled with the full id
  std::string text, v;
  bool missing = false;
  if (!git_read_file(req.git_repo, commit.oid, req.watch, &text, &missing, err)) {
    if (missing) *err = "commit " + commit.short_id + " has no " + req.watch + " at the top of its tree: nothing to deploy";
    return false;
  }
  if (!version_from_text(req.watch, text, commit.short_id + ":" + req.watch, &v, err)) return false;
  std::string version = v + "+" + commit.short_id;  // two pushes of one version stay apart
  if (!check_version(version, err)) return false;
  std::string id = unique_id(version), tmp = release_dir(id) + ".tmp";
  say("exporting commit " + commit.short_id + " (" + commit.summary + ") into " + tmp);
  StageRequest with_oid = req;
  with_oid.revision = commit.oid;  // the journal keeps the full id, whatever name was pushed
  base::CopyStats stats;
  if (!git_export(req.git_repo, commit.oid, tmp, &stats, err)) {
    std::string cleanup_err;
    if (!base::remove_tree(tmp, &cleanup_err)) *err += "; and cleaning up: " + cleanup_err;
    *err = "staging commit " + commit.short_id + " failed: " + *err;
    return false;
  }
  return finish_staging(with_oid, id, version, stats, 1, out, err);
}

bool ReleaseStore::finish_staging(const StageRequest& req, const std::string& id, const std::string& version,
                                  const base::CopyStats& stats, int attempt, Release* out, std::string* err) {
  auto say = [&](const std::string& s) { if (req.progress) req.progress(s); };
  std::string tmp = release_dir(id) + ".tmp";
  bool ok = link_shared(tmp, req.linked_dirs, err) && base::sync_filesystem(tmp, err);
  if (ok && ::rename(tmp.c_str(), release_dir(id).c_str()) != 0) ok = false, *err = base::errno_message("rename " + tmp + " to", release_dir(id));
  if (!ok) {
    std::string cleanup_err;
    if (!base::remove_tree(tmp, &cleanup_err)) *err += "; and cleaning up: " + cleanup_err;
    *err = "staging failed: " + *err;
    return false;
  }
  JournalEntry e;
  e.event = Event::Staged;
  e.release = id;
  e.version = version;
  e.source = req.source;
  e.revision = req.revision;
  e.uid = req.uid;
  if (!base::fsync_dir(releases_dir(), err) || !journal_.append(e, err)) {
    std::string cleanup_err;
    base::remove_tree(release_dir(id), &cleanup_err);
    return false;
  }
  *out = Release{id, release_dir(id), version, req.revision, stats, attempt};
  say("staged " + id + ": " + std::to_string(stats.files) + " files, " + std::to_string(stats.dirs) + " dirs, " +
      std::to_string(stats.symlinks) + " symlinks, " + std::to_string(stats.bytes) + " bytes" +
      (stats.cloned ? ", " + std::to_string(stats.cloned) + " files cloned" : std::string()) +
      (stats.skipped ? ", " + std::to_string(stats.skipped) + " skipped (submodules, sockets, devices)" : std::string()));
  return true;
}

bool ReleaseStore::switch_current(const std::string& id, const std::vector<JournalEntry>& lines, std::string* err) {
  char old[4096];
  ssize_t n = ::readlink(current_link().c_str(), old, sizeof old - 1);
  std::string previous = n > 0 ? std::string(old, static_cast<size_t>(n)) : "";
  if (!base::replace_symlink("releases/" + id, current_link(), err)) return false;
  for (const auto& e : lines) {
    if (journal_.append(e, err)) continue;
    // The journal must say what current says: put current back rather than leave them apart.
    std::string undo_err;
    bool undone = previous.empty() ? ::unlink(current_link().c_str()) == 0 : base::replace_symlink(previous, current_link(), &undo_err);
    *err += undone ? "; current left as it was" : "; and restoring current failed: " + undo_err;
    return false;
  }
  return true;
}

bool ReleaseStore::activate(const std::string& id, const std::string& reason, long uid, std::string* err) {
  if (!valid_release_id(id) || !base::is_directory(release_dir(id))) return *err = "no release " + id + " in " + releases_dir(), false;
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  return switch_current(id, {entry_about(entries, Event::Activated, id, reason, uid)}, err);
}

bool ReleaseStore::record_refused(const StageRequest& req, const std::string& reason, std::string* err) {
  if (!init(err)) return false;
  JournalEntry e;
  e.event = Event::Refused;
  e.source = req.source;
  e.revision = req.revision;
  e.reason = reason;
  e.uid = req.uid;
  return journal_.append(e, err);
}

bool ReleaseStore::record(Event event, const std::string& id, const std::string& reason, long uid, std::string* err) {
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  return journal_.append(entry_about(entries, event, id, reason, uid), err);
}

bool ReleaseStore::record_failed(const std::string& id, const std::string& reason, long uid, std::string* err) {
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  return journal_.append(entry_about(entries, Event::Failed, id, reason, uid), err);
}

bool ReleaseStore::record_baked(const std::string& id, const std::string& reason, long uid, std::string* err) {
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  return journal_.append(entry_about(entries, Event::Baked, id, reason, uid), err);
}

bool ReleaseStore::record_bake_failed(const std::string& id, const std::string& to, const std::string& reason, long uid,
                                      std::string* err) {
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  JournalEntry bad = entry_about(entries, Event::RolledBack, id, reason, uid);
  bad.bad = true;
  if (to.empty()) return journal_.append(bad, err);
  return switch_current(to, {bad, entry_about(entries, Event::Activated, to, "bake of " + id + " failed", uid)}, err);
}

std::optional<std::pair<std::string, std::string>> ReleaseStore::same_as_bad(const Release& staged, const std::string& watch) const {
  std::vector<JournalEntry> entries;
  std::string err, mine;
  if (!read_journal(&entries, &err)) return std::nullopt;
  // A git release is the same when its commit is; anything else when its watched file is.
  bool by_commit = !staged.revision.empty();
  if (!by_commit && !base::read_file(release_dir(staged.id) + "/" + watch, &mine, &err)) return std::nullopt;
  std::map<std::string, bool> same;  // release id -> same as `staged`
  auto is_same = [&](const JournalEntry& e) {
    auto it = same.find(e.release);
    if (it != same.end()) return it->second;
    std::string theirs;
    bool s = by_commit ? e.revision == staged.revision
                       : base::read_file(release_dir(e.release) + "/" + watch, &theirs, &err) && theirs == mine;
    return same[e.release] = s;
  };
  // Newest first: the latest verdict on the same content counts. One that went live (or
  // baked) after the bad one, deployed by hand, clears it.
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->release == staged.id || it->release.empty()) continue;
    bool bad = it->event == Event::RolledBack && it->bad;
    if (!bad && it->event != Event::Activated && it->event != Event::Baked) continue;
    if (!is_same(*it)) continue;
    if (bad) return std::make_pair(it->release, it->reason);
    return std::nullopt;
  }
  return std::nullopt;
}

bool ReleaseStore::discard(const std::string& id, std::string* err) {
  // Rename first so a crash mid-removal leaves a .tmp (cleaned at start), not a half release.
  std::string doomed = release_dir(id) + ".tmp";
  if (::rename(release_dir(id).c_str(), doomed.c_str()) != 0) return *err = base::errno_message("rename", release_dir(id)), false;
  return base::remove_tree(doomed, err);
}

bool ReleaseStore::rollback_target(int n, std::string* id, std::string* err) const {
  if (n < 1) return *err = "rollback needs a number of releases of 1 or more", false;
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  auto stack = activation_stack(entries);
  if (stack.empty()) return *err = "nothing is live yet, so there is nothing to roll back", false;
  int earlier = static_cast<int>(stack.size()) - 1;
  if (n > earlier)
    return *err = "cannot go back " + std::to_string(n) + ": only " + std::to_string(earlier) +
                  " earlier release" + (earlier == 1 ? " is" : "s are") + " in the history (see agent releases)", false;
  *id = stack[stack.size() - 1 - static_cast<size_t>(n)];
  return true;
}

bool ReleaseStore::check_rollback_to(const std::string& id, std::string* err) const {
  if (!valid_release_id(id) || !base::is_directory(release_dir(id))) return *err = "no release " + id + " (see agent releases)", false;
  if (current() == id) return *err = id + " is already current", false;
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  for (auto it = entries.rbegin(); it != entries.rend(); ++it) {
    if (it->release != id) continue;
    if (it->event == Event::Failed) return *err = "release " + id + " failed (" + it->reason + "); deploy it again instead", false;
    if (it->event == Event::RolledBack && it->bad)
      return *err = "release " + id + " failed its bake (" + it->reason + "); deploy it again instead", false;
    if (it->event == Event::Baked) continue;
    break;
  }
  return true;
}

bool ReleaseStore::rollback_to(const std::string& id, long uid, std::string* err) {
  if (!check_rollback_to(id, err)) return false;
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  auto stack = activation_stack(entries);
  auto at = std::find(stack.begin(), stack.end(), id);
  std::vector<std::string> above(at == stack.end() ? stack.end() - std::min<size_t>(1, stack.size()) : at + 1, stack.end());
  std::string from = stack.empty() ? "" : stack.back();
  std::vector<JournalEntry> lines;
  for (auto it = above.rbegin(); it != above.rend(); ++it)
    lines.push_back(entry_about(entries, Event::RolledBack, *it, "rolled back to " + id, uid));
  lines.push_back(entry_about(entries, Event::Activated, id, "rollback from " + from, uid));
  return switch_current(id, lines, err);
}

bool ReleaseStore::list(std::vector<ReleaseInfo>* out, std::vector<std::string>* warnings, std::string* err) const {
  std::vector<JournalEntry> entries;
  if (!journal_.read(&entries, warnings, err)) return false;
  auto cur = current();
  std::map<std::string, ReleaseInfo> by_id;
  std::map<std::string, size_t> staged_at;  // id -> the place of its staged line: the true order
  std::vector<ReleaseInfo> refused;
  for (const auto& e : entries) {
    if (e.event == Event::Staged) staged_at.emplace(e.release, staged_at.size());
    if (e.event == Event::Refused) {
      refused.push_back({"", e.version, e.source, e.revision, e.time, e.reason, ReleaseState::Refused, false});
      continue;
    }
    ReleaseInfo& r = by_id[e.release];
    r.id = e.release;
    if (!e.version.empty()) r.version = e.version;
    if (!e.source.empty()) r.source = e.source;
    if (!e.revision.empty()) r.revision = e.revision;
    if (e.event == Event::Staged) r.time = e.time;
    if (e.event == Event::Baked || e.event == Event::Note) continue;  // a note on the release, not a change of its state
    r.reason = e.reason;
    switch (e.event) {
      case Event::Staged: r.state = ReleaseState::Staged; break;
      case Event::Activated: r.state = ReleaseState::Previous; break;
      case Event::Failed: r.state = ReleaseState::Failed; break;
      case Event::RolledBack: r.state = e.bad ? ReleaseState::Bad : ReleaseState::RolledBack; break;
      case Event::Halted: r.state = ReleaseState::Halted; break;
      case Event::Refused:
      case Event::Baked:
      case Event::Note: break;
    }
  }
  out->clear();
  auto ids = release_ids();
  // Newest staged first. Ids begin with their second of staging, so two staged in the same
  // second compare by what follows ("1.10.0" before "1.9.0"): the journal's order decides.
  // Releases the journal does not know (it was lost) go by id, before the others.
  std::stable_sort(ids.begin(), ids.end(), [&](const std::string& a, const std::string& b) {
    auto rank = [&](const std::string& id) {
      auto it = staged_at.find(id);
      return it == staged_at.end() ? std::pair(0, size_t{0}) : std::pair(1, it->second);
    };
    return rank(a) < rank(b);
  });
  for (auto it = ids.rbegin(); it != ids.rend(); ++it) {
    ReleaseInfo r = by_id[*it];
    r.id = *it;
    r.current = cur == *it;
    if (r.current) r.state = ReleaseState::Active;
    out->push_back(std::move(r));
  }
  // Refused deploys, between the releases by time ("2026-11-22T10:15:00Z" sorts with the id's
  // "20261122T101500Z" once its separators are dropped): recent ones only, as pruning does.
  auto key = [](const ReleaseInfo& r) {
    if (!r.id.empty()) return r.id.substr(0, 16);
    std::string k;
    for (char c : r.time) if (c != '-' && c != ':') k += c;
    return k;
  };
  std::string oldest = ids.empty() ? std::string() : ids.front().substr(0, 16);
  std::vector<ReleaseInfo> recent;  // newest first
  for (auto it = refused.rbegin(); it != refused.rend() && recent.size() < 5 && key(*it) >= oldest; ++it) recent.push_back(*it);
  // Oldest first, each before the first row no newer than it: ties keep the newest on top.
  for (auto it = recent.rbegin(); it != recent.rend(); ++it) {
    auto pos = std::find_if(out->begin(), out->end(), [&](const ReleaseInfo& r) { return key(r) <= key(*it); });
    out->insert(pos, *it);
  }
  return true;
}

bool ReleaseStore::prune(int keep, const std::set<std::string>& in_use, std::vector<std::string>* removed,
                         std::string* err) {
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  auto stack = activation_stack(entries);
  std::set<std::string> protect(in_use);
  // The current release and the rollback targets 1..keep-1 below it.
  for (size_t i = 0; i < stack.size() && i < static_cast<size_t>(std::max(keep, 1)); ++i)
    protect.insert(stack[stack.size() - 1 - i]);
  if (auto cur = current()) protect.insert(*cur);
  auto ids = release_ids();  // oldest first
  size_t count = ids.size();
  for (const auto& id : ids) {
    if (count <= static_cast<size_t>(keep)) break;
    if (protect.count(id)) continue;
    if (!discard(id, err)) return false;
    removed->push_back(id);
    --count;
  }
  return true;
}

bool ReleaseStore::compact_journal(std::string* note, std::string* err) {
  note->clear();
  std::vector<JournalEntry> entries;
  if (!read_journal(&entries, err)) return false;
  if (entries.size() <= kCompactAbove) return true;
  std::vector<std::string> ids = release_ids();
  std::set<std::string> on_disk(ids.begin(), ids.end());
  size_t refused = 0;
  for (const auto& e : entries) refused += e.event == Event::Refused;
  size_t drop_refused = refused > kKeepRefused ? refused - kKeepRefused : 0;  // the oldest ones
  std::vector<JournalEntry> kept;
  for (auto& e : entries) {
    if (e.event == Event::Refused) {
      if (drop_refused > 0) {
        --drop_refused;
        continue;
      }
    } else if (!on_disk.count(e.release)) {
      continue;
    }
    kept.push_back(std::move(e));
  }
  if (kept.size() == entries.size()) return true;
  if (!journal_.rewrite(kept, err)) return false;
  *note = "journal compacted: " + std::to_string(entries.size() - kept.size()) + " entries about releases no longer on disk dropped, " +
          std::to_string(kept.size()) + " kept";
  return true;
}

}  // namespace releases
