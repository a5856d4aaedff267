// The git trigger's side of staging: a bare repository the agent owns, and commits exported
// from it with libgit2 (the agent needs no `git` binary).
//
// An exported tree is written with the same care as a copied one, and more suspicion: a pushed
// tree comes from whoever can push. Every entry name is checked ("", ".", "..", ".git", '/',
// NUL are refused), directories are entered by file descriptor with O_NOFOLLOW and files are
// created with O_EXCL|O_NOFOLLOW, so no entry, symlink or not, can make the export write
// outside the release directory. Symlinks are recreated as symlinks, never followed.
// Submodules (gitlinks) are skipped with a note: their content is not in this repository.
#pragma once

#include <string>

#include "base/fs.h"

namespace releases {

struct GitCommit {
  std::string oid;        // 40 hex digits
  std::string short_id;   // the first 7
  std::string summary;    // the first line of the message
};

/// Opens (or, when `path` does not exist, creates) a bare repository whose HEAD names
/// `branch`. `*created` says whether it was made now.
bool git_ensure_bare(const std::string& path, const std::string& branch, bool* created, std::string* err);

/// Resolves `rev` (a sha, a branch, "HEAD~1", ...) in the repository at `repo` to a commit.
bool git_resolve(const std::string& repo, const std::string& rev, GitCommit* out, std::string* err);

/// The content of the file at `path` (relative, '/'-separated) in the commit's tree.
/// `*missing` is set when the commit has no such file (as opposed to a read error).
bool git_read_file(const std::string& repo, const std::string& oid, const std::string& path, std::string* out,
                   bool* missing, std::string* err);

/// Writes the commit's tree into `to` (which must not exist). On error, whatever was created
/// under `to` is left for the caller to remove.
bool git_export(const std::string& repo, const std::string& oid, const std::string& to, base::CopyStats* stats,
                std::string* err);

/// True for a tree entry name that can only name a child of its directory.
bool git_safe_entry_name(const std::string& name);

}  // namespace releases
