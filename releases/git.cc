#include "releases/git.h"

#include <fcntl.h>
#include <git2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <mutex>

#include "base/dynlib.h"

namespace releases {

namespace {

// libgit2 is opened on first use, not linked (base/dynlib.h): a host without git deploys
// never maps it. These pointers hide the library's own declarations in this file.
#define AGENT_GIT_FUNCTIONS(X)                                                                       \
  X(git_libgit2_init) X(git_libgit2_opts) X(git_error_last) X(git_repository_open_bare)              \
  X(git_repository_free) X(git_repository_init_ext) X(git_commit_lookup) X(git_commit_free)          \
  X(git_commit_summary) X(git_commit_tree) X(git_tree_lookup) X(git_tree_free) X(git_tree_entrycount) \
  X(git_tree_entry_byindex) X(git_tree_entry_bypath) X(git_tree_entry_filemode) X(git_tree_entry_id) \
  X(git_tree_entry_name) X(git_tree_entry_free) X(git_blob_lookup) X(git_blob_free)                  \
  X(git_blob_rawcontent) X(git_blob_rawsize) X(git_object_id) X(git_object_peel) X(git_object_free)  \
  X(git_oid_fromstr) X(git_oid_tostr) X(git_revparse_single)
AGENT_GIT_FUNCTIONS(AGENT_DL_DECLARE)

// libgit2 keeps global state; it is set up once, and owner validation is turned off: the
// agent (often root) reads repositories owned by the account that pushes, which is the point.
bool init_libgit2(std::string* err) {
  static std::mutex mu;
  static bool ok = false;
  return base::dynlib::open_once(mu, ok, AGENT_LIBGIT2_SONAME, [](void* handle, std::string& err) {
        const char* soname = AGENT_LIBGIT2_SONAME;
        AGENT_GIT_FUNCTIONS(AGENT_DL_RESOLVE)
        git_libgit2_init();
        git_libgit2_opts(GIT_OPT_SET_OWNER_VALIDATION, 0);
        return true;
      }, err);
}

std::string git_message(const std::string& what) {
  const git_error* e = git_error_last();
  return what + ": " + (e && e->message ? e->message : "unknown libgit2 error");
}

template <typename T, auto& Free>  // Free: one of the pointers above, read when called
struct Freer {
  void operator()(T* p) const { if (p) Free(p); }
};
using Repo = std::unique_ptr<git_repository, Freer<git_repository, git_repository_free>>;
using Commit = std::unique_ptr<git_commit, Freer<git_commit, git_commit_free>>;
using Tree = std::unique_ptr<git_tree, Freer<git_tree, git_tree_free>>;
using Blob = std::unique_ptr<git_blob, Freer<git_blob, git_blob_free>>;
using Object = std::unique_ptr<git_object, Freer<git_object, git_object_free>>;
using Entry = std::unique_ptr<git_tree_entry, Freer<git_tree_entry, git_tree_entry_free>>;

bool open_repo(const std::string& path, Repo* out, std::string* err) {
  if (!init_libgit2(err)) return false;
  git_repository* r = nullptr;
  if (git_repository_open_bare(&r, path.c_str()) != 0) return *err = git_message("cannot open repository " + path), false;
  out->reset(r);
  return true;
}

bool lookup_commit(git_repository* repo, const std::string& oid_hex, Commit* out, std::string* err) {
  git_oid oid;
  git_commit* c = nullptr;
  if (git_oid_fromstr(&oid, oid_hex.c_str()) != 0 || git_commit_lookup(&c, repo, &oid) != 0)
    return *err = git_message("commit " + oid_hex), false;
  out->reset(c);
  return true;
}

// The repository at `path` and the tree of its commit `oid`.
bool open_commit_tree(const std::string& path, const std::string& oid, Repo* repo, Tree* tree, std::string* err) {
  Commit commit;
  if (!open_repo(path, repo, err) || !lookup_commit(repo->get(), oid, &commit, err)) return false;
  git_tree* t = nullptr;
  if (git_commit_tree(&t, commit.get()) != 0) return *err = git_message("tree of " + oid), false;
  tree->reset(t);
  return true;
}

bool write_all(int fd, const char* p, size_t n, const std::string& path, std::string* err) {
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return *err = base::errno_message("write", path), false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

struct Exporter {
  git_repository* repo;
  base::CopyStats* stats;
  std::string* err;

  // Writes `tree` into the directory open at `dirfd`; `where` is its path, for messages.
  bool tree(const git_tree* t, int dirfd, const std::string& where, int depth = 0) {
    if (depth > base::kMaxTreeDepth)
      return *err = "the tree nests deeper than " + std::to_string(base::kMaxTreeDepth) + " directories at \"" + where + "\"", false;
    size_t n = git_tree_entrycount(t);
    for (size_t i = 0; i < n; ++i) {
      const git_tree_entry* e = git_tree_entry_byindex(t, i);
      std::string name = git_tree_entry_name(e), path = where + "/" + name;
      if (!git_safe_entry_name(name)) return *err = "the tree has an entry that is not a safe file name: \"" + path + "\"", false;
      switch (git_tree_entry_filemode(e)) {
        case GIT_FILEMODE_TREE: {
          if (::mkdirat(dirfd, name.c_str(), 0755) != 0) return *err = base::errno_message("mkdir", path), false;
          int sub = ::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
          if (sub < 0) return *err = base::errno_message("open", path), false;
          git_tree* st = nullptr;
          bool ok = git_tree_lookup(&st, repo, git_tree_entry_id(e)) == 0;
          Tree holder(st);
          if (!ok) *err = git_message("tree " + path);
          ok = ok && tree(st, sub, path, depth + 1);
          ::close(sub);
          if (!ok) return false;
          ++stats->dirs;
          break;
        }
        case GIT_FILEMODE_BLOB:
        case GIT_FILEMODE_BLOB_EXECUTABLE:
        case GIT_FILEMODE_LINK: {
          git_blob* b = nullptr;
          if (git_blob_lookup(&b, repo, git_tree_entry_id(e)) != 0) return *err = git_message("blob " + path), false;
          Blob holder(b);
          const char* data = static_cast<const char*>(git_blob_rawcontent(b));
          size_t size = static_cast<size_t>(git_blob_rawsize(b));
          if (git_tree_entry_filemode(e) == GIT_FILEMODE_LINK) {
            // A link's target is its content; it is created as a link and never followed here.
            std::string target(data, size);
            if (target.empty() || target.find('\0') != std::string::npos)
              return *err = "the tree has a symlink with an unusable target: \"" + path + "\"", false;
            if (::symlinkat(target.c_str(), dirfd, name.c_str()) != 0) return *err = base::errno_message("symlink", path), false;
            ++stats->symlinks;
            break;
          }
          mode_t mode = git_tree_entry_filemode(e) == GIT_FILEMODE_BLOB_EXECUTABLE ? 0755 : 0644;
          int fd = ::openat(dirfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
          if (fd < 0) return *err = base::errno_message("create", path), false;
          bool ok = write_all(fd, data, size, path, err);
          if (::close(fd) != 0 && ok) ok = false, *err = base::errno_message("close", path);
          if (!ok) return false;
          ++stats->files;
          stats->bytes += size;
          break;
        }
        case GIT_FILEMODE_COMMIT:  // a submodule: its content lives in another repository
          ++stats->skipped;
          break;
        default:
          return *err = "the tree has an entry of unknown mode: \"" + path + "\"", false;
      }
    }
    return true;
  }
};

}  // namespace

bool git_safe_entry_name(const std::string& name) {
  if (name.empty() || name == "." || name == "..") return false;
  if (name.find('/') != std::string::npos || name.find('\0') != std::string::npos) return false;
  // git itself refuses to check out ".git" in any case (it would be the repository's own dir).
  std::string lower;
  for (char c : name) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return lower != ".git";
}

bool git_ensure_bare(const std::string& path, const std::string& branch, bool* created, std::string* err) {
  *created = false;
  if (!init_libgit2(err)) return false;
  git_repository* r = nullptr;
  if (git_repository_open_bare(&r, path.c_str()) == 0) {
    git_repository_free(r);
    return true;
  }
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0) {
    // Something is there and it is not a bare repository: never write over it.
    return *err = git_message(path + " exists but is not a bare git repository"), false;
  }
  git_repository_init_options opts{};  // GIT_REPOSITORY_INIT_OPTIONS_INIT, spelled out: clang flags the macro's partial initializer
  opts.version = GIT_REPOSITORY_INIT_OPTIONS_VERSION;
  opts.flags = GIT_REPOSITORY_INIT_BARE | GIT_REPOSITORY_INIT_MKPATH;
  std::string head = "refs/heads/" + branch;
  opts.initial_head = head.c_str();
  if (git_repository_init_ext(&r, path.c_str(), &opts) != 0) return *err = git_message("cannot create repository " + path), false;
  git_repository_free(r);
  *created = true;
  return true;
}

bool git_resolve(const std::string& repo_path, const std::string& rev, GitCommit* out, std::string* err) {
  Repo repo;
  if (!open_repo(repo_path, &repo, err)) return false;
  git_object* obj = nullptr;
  if (git_revparse_single(&obj, repo.get(), rev.c_str()) != 0) return *err = git_message("revision \"" + rev + "\" in " + repo_path), false;
  Object holder(obj);
  git_object* peeled = nullptr;
  if (git_object_peel(&peeled, obj, GIT_OBJECT_COMMIT) != 0) return *err = git_message("revision \"" + rev + "\" is not a commit"), false;
  Object peeled_holder(peeled);
  char hex[GIT_OID_HEXSZ + 1] = {};
  git_oid_tostr(hex, sizeof hex, git_object_id(peeled));
  out->oid = hex;
  out->short_id = out->oid.substr(0, 7);
  const char* summary = git_commit_summary(reinterpret_cast<git_commit*>(peeled));
  out->summary = summary ? summary : "";
  return true;
}

bool git_read_file(const std::string& repo_path, const std::string& oid, const std::string& path, std::string* out,
                   bool* missing, std::string* err) {
  *missing = false;
  Repo repo;
  Tree tree;
  if (!open_commit_tree(repo_path, oid, &repo, &tree, err)) return false;
  git_tree* t = tree.get();
  git_tree_entry* e = nullptr;
  int rc = git_tree_entry_bypath(&e, t, path.c_str());
  if (rc == GIT_ENOTFOUND) return *missing = true, *err = "commit " + oid.substr(0, 7) + " has no " + path, false;
  if (rc != 0) return *err = git_message(path + " in commit " + oid.substr(0, 7)), false;
  Entry entry(e);
  git_filemode_t mode = git_tree_entry_filemode(e);
  if (mode != GIT_FILEMODE_BLOB && mode != GIT_FILEMODE_BLOB_EXECUTABLE)
    return *err = path + " in commit " + oid.substr(0, 7) + " is not a regular file", false;
  git_blob* b = nullptr;
  if (git_blob_lookup(&b, repo.get(), git_tree_entry_id(e)) != 0) return *err = git_message(path), false;
  Blob blob(b);
  out->assign(static_cast<const char*>(git_blob_rawcontent(b)), static_cast<size_t>(git_blob_rawsize(b)));
  return true;
}

bool git_export(const std::string& repo_path, const std::string& oid, const std::string& to, base::CopyStats* stats,
                std::string* err) {
  Repo repo;
  Tree tree;
  if (!open_commit_tree(repo_path, oid, &repo, &tree, err)) return false;
  git_tree* t = tree.get();
  if (::mkdir(to.c_str(), 0755) != 0) return *err = base::errno_message("mkdir", to), false;
  int dirfd = ::open(to.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dirfd < 0) return *err = base::errno_message("open", to), false;
  Exporter ex{repo.get(), stats, err};
  bool ok = ex.tree(t, dirfd, to);
  ::close(dirfd);
  if (ok) ++stats->dirs;
  return ok;
}

}  // namespace releases
