// Filesystem primitives for staging releases: copy a tree faithfully, remove one without
// following links, and make changes durable (fsync) and atomic (rename).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <ctime>
#include <string>

namespace base {

/// How deep a release tree may nest: copying and exporting refuse more, removing copes with it.
constexpr int kMaxTreeDepth = 256;

struct CopyStats {
  std::uint64_t files = 0, dirs = 0, symlinks = 0, bytes = 0;
  std::uint64_t cloned = 0;   // files shared with the source by reflink (no bytes copied)
  std::uint64_t skipped = 0;  // sockets, fifos, devices: not part of an app
};

/// Copies the directory `from` into `to` (which must not exist): regular files with their
/// permission bits and times (ownership too when running as root), symlinks as links (never
/// followed), empty directories. Files are cloned (FICLONE) where the filesystem allows, else
/// copied with copy_file_range. On error, `*err` names the path and the reason; whatever
/// was created under `to` is left for the caller to remove. A `cancel` that turns true stops
/// the copy at the next entry (errno ECANCELED).
bool copy_tree(const std::string& from, const std::string& to, CopyStats* stats, std::string* err,
               const std::atomic<bool>* cancel = nullptr);

/// Now, as inode change times count it. A change made before this call never carries a later
/// time; one made within a clock tick after it (a few ms) may carry an earlier one where the
/// kernel stamps inodes with its coarse clock, and is then not seen.
timespec change_clock();
/// Whether anything under `dir` (itself included) changed after `since`: its inode
/// ctime, which every write, create, rename, chmod and delete-in-a-directory moves. `*changed`
/// names the first such path found, empty if none. Symlinks are not followed.
bool changed_since(const std::string& dir, const timespec& since, std::string* changed, std::string* err);
/// Removes `path` and everything below it. Symlinks are removed, never followed. A missing
/// path is not an error.
bool remove_tree(const std::string& path, std::string* err);

/// Replaces `name` in the directory open at `dirfd` (`dir` names it in messages) with `text`,
/// atomically: a fresh ".<name>.agent-tmp" (whatever was there, a planted symlink too, is
/// removed first; created O_EXCL|O_NOFOLLOW), fsynced, renamed over `name`.
bool write_file_at(int dirfd, const std::string& dir, const char* name, const std::string& text, mode_t mode,
                   std::string* err);
/// The same for the file `path`, its directory opened without following a final symlink.
bool write_file_atomically(const std::string& path, const std::string& text, mode_t mode, std::string* err);
/// chown -R without following symlinks (links themselves are chowned).
bool chown_tree(const std::string& path, uid_t uid, gid_t gid, std::string* err);
/// fsync() a directory so that entries created or renamed in it survive a crash.
bool fsync_dir(const std::string& dir, std::string* err);

/// Flushes every dirty page of the filesystem holding `path` (one call instead of an fsync per
/// staged file).
bool sync_filesystem(const std::string& path, std::string* err);

/// Points `link` at `target` atomically: a fresh symlink under a temporary name, renamed over
/// `link`, then the directory fsynced. Readers see the old target or the new, never neither.
bool replace_symlink(const std::string& target, const std::string& link, std::string* err);

/// mkdir -p, mode 0755 for what it creates.
bool make_dirs(const std::string& path, std::string* err);

/// Whole file into *out; false with *err if it cannot be read.
bool read_file(const std::string& path, std::string* out, std::string* err);

bool is_directory(const std::string& path);

/// "what path: strerror(errno)".
std::string errno_message(const std::string& what, const std::string& path);

}  // namespace base
