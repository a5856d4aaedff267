// ReleaseStore: an app's releases on disk, Capistrano-style, and their history.
//
//   <app_dir>/releases/<id>/     one complete tree per release, never modified once named
//   <app_dir>/releases/<id>.tmp  a release being staged (or removed): never used, cleaned at start
//   <app_dir>/current            symlink -> releases/<id>, switched by rename(2)
//   <app_dir>/shared/            kept across releases; linked_dirs point here
//   <app_dir>/journal.jsonl      staged / activated / failed / rolled_back, append-only
//
// The journal is the history; the directories are the data. The activation history is the stack
// of releases that were live, newest on top: an activation pushes, a rollback pops (recording
// rolled_back), a failure removes. `rollback 1` is the entry below the top, so doing it twice
// goes back two releases rather than back and forth.
#pragma once

#include <atomic>
#include <chrono>
#include <memory>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "base/fs.h"
#include "releases/journal.h"

namespace releases {

struct StageRequest {
  std::string from;                      // directory to copy
  std::string watch = "package.json";    // the file that holds the version, relative to `from`
  std::string source = "cli";            // rpm | git | cli, for the journal
  std::string revision;                  // git: what to export (a sha, a branch); journaled as the full id
  std::string git_repo;                  // set: export `revision` from this bare repository instead of copying `from`
  std::vector<std::string> linked_dirs;  // relative paths, symlinked to shared/
  long uid = -1;
  int max_tries = 5;                     // restage while the watched file or the tree keeps changing
  // The tree must not have changed for this long before the copy (nor during it); staging
  // again waits at least this long. 0: only changes during the copy count.
  std::chrono::milliseconds quiet{0};
  std::function<void(const std::string&)> progress;  // optional progress lines
  std::shared_ptr<std::atomic<bool>> cancel;          // optional: true stops staging (agent shutdown)
};

struct Release {
  std::string id, dir, version;
  std::string revision;  // git: the commit, once resolved (set even when staging then fails)
  base::CopyStats stats;
  int tries = 0;
};

enum class ReleaseState { Staged, Active, Previous, Failed, RolledBack, Bad, Refused, Halted, Unknown };
const char* state_name(ReleaseState s);

struct ReleaseInfo {
  std::string id, version, source, revision, time, reason;  // id is empty for a refused deploy
  ReleaseState state = ReleaseState::Unknown;
  bool current = false;
};

class ReleaseStore {
 public:
  explicit ReleaseStore(std::string app_dir);

  const std::string& app_dir() const { return app_dir_; }
  std::string releases_dir() const { return app_dir_ + "/releases"; }
  std::string release_dir(const std::string& id) const { return releases_dir() + "/" + id; }
  std::string current_link() const { return app_dir_ + "/current"; }
  std::string shared_dir() const { return app_dir_ + "/shared"; }
  const Journal& journal() const { return journal_; }

  /// Creates the layout if missing.
  bool init(std::string* err);

  /// At daemon start: removes what a crash left half-done (releases/*.tmp, current.tmp) and
  /// records in the journal an activation the crash kept it from recording. `notes` says what
  /// was done.
  bool recover(std::vector<std::string>* notes, std::string* err);

  /// The id `current` points to, if it points to an existing release.
  std::optional<std::string> current() const;

  /// With req.git_repo: exports the commit req.revision instead, its version being the watched
  /// file's version plus "+<short id>".
  /// Copies req.from into releases/<id>.tmp, checks the watched file did not change meanwhile
  /// (else stages again, up to req.max_tries), links linked_dirs, syncs, renames into place and
  /// journals "staged". On failure nothing new is visible and the journal is untouched.
  bool stage(const StageRequest& req, Release* out, std::string* err);

  /// Points `current` at `id` and journals "activated".
  bool activate(const std::string& id, const std::string& reason, long uid, std::string* err);

  /// Journals "refused" for a deploy turned down before anything was staged.
  bool record_refused(const StageRequest& req, const std::string& reason, std::string* err);

  /// Journals "failed" for a release that did not go live.
  bool record_failed(const std::string& id, const std::string& reason, long uid, std::string* err);

  /// The release `n` steps back in the activation history (n >= 1), skipping failed and
  /// rolled-back releases and ones no longer on disk.
  bool rollback_target(int n, std::string* id, std::string* err) const;

  /// Checks that `id` can be rolled back to by name: it exists, is not current, did not fail.
  bool check_rollback_to(const std::string& id, std::string* err) const;

  /// Makes `id` current as a rollback: journals rolled_back for every release above it in the
  /// activation history (the current one at least), then activated.
  bool rollback_to(const std::string& id, long uid, std::string* err);

  /// `id` passed its bake: journaled `baked` with `reason` ("60s, 30 probes ok").
  bool record_baked(const std::string& id, const std::string& reason, long uid, std::string* err);

  /// Journals `event` about `id` with `reason`: halted (its version was halted in the fleet
  /// before it rolled here) or a note.
  bool record(releases::Event event, const std::string& id, const std::string& reason, long uid, std::string* err);

  /// `id` failed its bake: journaled rolled_back with `bad` and the reason, then `to` (the
  /// release live before it) made current again and journaled activated. With no `to` (a first
  /// deploy), only the rolled_back line: there is nothing to go back to.
  bool record_bake_failed(const std::string& id, const std::string& to, const std::string& reason, long uid,
                          std::string* err);

  /// A bad release (failed its bake) that `staged` repeats: the same git commit, or the same
  /// content of the watched file (package.json, a version marker). Its id and why it was bad.
  std::optional<std::pair<std::string, std::string>> same_as_bad(const Release& staged, const std::string& watch) const;

  /// Removes a release (renamed to .tmp first, so a crash leaves no half release): one pruned,
  /// or one staged that will not be used.
  bool discard(const std::string& id, std::string* err);

  /// Every release on disk, newest first, with its state from the journal, and the refused
  /// deploys among them (the last 5 no older than the oldest release listed).
  bool list(std::vector<ReleaseInfo>* out, std::vector<std::string>* warnings, std::string* err) const;

  /// Keeps journal.jsonl bounded: past kCompactAbove entries, drops those about releases no
  /// longer on disk (rollback and `agent releases` never look at them) and all but the last
  /// kKeepRefused refusals. `*note` says what was dropped (empty when nothing was).
  static constexpr size_t kCompactAbove = 1000;
  static constexpr size_t kKeepRefused = 20;
  bool compact_journal(std::string* note, std::string* err);

  /// Removes the oldest releases until at most `keep` remain. Never removes the current
  /// release, the next keep-1 rollback targets, or any id in `in_use`.
  bool prune(int keep, const std::set<std::string>& in_use, std::vector<std::string>* removed,
             std::string* err);

 private:
  bool read_journal(std::vector<JournalEntry>* entries, std::string* err) const;
  /// Release ids that were live, oldest first, current on top, all still on disk.
  std::vector<std::string> activation_stack(const std::vector<JournalEntry>& entries) const;
  std::vector<std::string> release_ids() const;
  std::string unique_id(const std::string& version) const;
  /// Points current at `id`, then journals `lines`; if the journal cannot take them, current
  /// is switched back, so the two never disagree.
  bool switch_current(const std::string& id, const std::vector<JournalEntry>& lines, std::string* err);
  bool stage_commit(const StageRequest& req, Release* out, std::string* err);
  /// Links shared dirs into releases/<id>.tmp, syncs, renames it into place, journals "staged".
  bool finish_staging(const StageRequest& req, const std::string& id, const std::string& version, const base::CopyStats& stats,
                      int attempt, Release* out, std::string* err);
  bool link_shared(const std::string& release_dir, const std::vector<std::string>& dirs, std::string* err);

  std::string app_dir_;
  Journal journal_;
};

}  // namespace releases
