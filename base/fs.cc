#include "base/fs.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <vector>

namespace base {
namespace {

constexpr int kMaxDepth = kMaxTreeDepth;

// Closes an fd at scope exit.
struct Fd {
  int fd = -1;
  explicit Fd(int f) : fd(f) {}
  ~Fd() { if (fd >= 0) ::close(fd); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
};

// Reads the directory open at `dfd` through a dup of it (the caller keeps its fd); closed at scope exit.
struct Dir {
  DIR* d = nullptr;
  explicit Dir(int dfd) {
    int dup = ::fcntl(dfd, F_DUPFD_CLOEXEC, 0);
    if (dup >= 0 && !(d = ::fdopendir(dup))) ::close(dup);
  }
  ~Dir() { if (d) ::closedir(d); }
  Dir(const Dir&) = delete;
  Dir& operator=(const Dir&) = delete;
  dirent* next() { return ::readdir(d); }
};

std::string join(const std::string& a, const char* b) { return a.empty() ? b : a + "/" + b; }

// A shutdown stops a large file's copy between chunks of at most 64 MiB, not after it.
bool copy_bytes(int in, int out, const std::string& path, std::uint64_t size, const std::atomic<bool>* cancel,
                CopyStats* stats, std::string* err) {
  if (size > 0 && ::ioctl(out, FICLONE, in) == 0) {
    stats->cloned++;
    return true;
  }
  std::uint64_t done = 0;
  bool use_cfr = true;
  std::vector<char> buf;
  while (true) {
    if (cancel && cancel->load()) {
      errno = ECANCELED;
      return *err = "copy of " + path + " cancelled", false;
    }
    ssize_t n;
    if (use_cfr) {
      n = ::copy_file_range(in, nullptr, out, nullptr, 64 << 20, 0);
      if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) && done == 0) {
        use_cfr = false;
        continue;
      }
    } else {
      if (buf.empty()) buf.resize(1 << 17);
      n = ::read(in, buf.data(), buf.size());
      for (ssize_t off = 0; n > 0 && off < n;) {
        ssize_t w = ::write(out, buf.data() + off, static_cast<size_t>(n - off));
        if (w < 0) {
          if (errno == EINTR) continue;
          *err = errno_message("write", path);
          return false;
        }
        off += w;
      }
    }
    if (n < 0) {
      if (errno == EINTR) continue;
      *err = errno_message("copy", path);
      return false;
    }
    if (n == 0) break;
    done += static_cast<std::uint64_t>(n);
  }
  stats->bytes += done;
  return true;
}

bool copy_dir(int sfd, int dfd, const std::string& from_path, const std::string& to_path, int depth,
              bool as_root, const std::atomic<bool>* cancel, CopyStats* stats, std::string* err) {
  if (depth > kMaxDepth) {
    *err = "copy " + from_path + ": directories nested deeper than " + std::to_string(kMaxDepth);
    return false;
  }
  int dup = ::fcntl(sfd, F_DUPFD_CLOEXEC, 0);  // never leak into a worker forked meanwhile
  if (dup < 0) return *err = errno_message("open", from_path), false;
  DIR* d = ::fdopendir(dup);
  if (!d) {
    ::close(dup);
    return *err = errno_message("open", from_path), false;
  }
  struct Closer { DIR* d; ~Closer() { ::closedir(d); } } closer{d};
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    const char* name = e->d_name;
    if (!std::strcmp(name, ".") || !std::strcmp(name, "..")) continue;
    if (cancel && cancel->load()) {
      errno = ECANCELED;
      return *err = "copy of " + from_path + " cancelled", false;
    }
    std::string src = join(from_path, name), dst = join(to_path, name);
    struct stat st {};
    if (::fstatat(sfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return *err = errno_message("stat", src), false;
    timespec times[2] = {st.st_atim, st.st_mtim};
    mode_t perm = st.st_mode & (as_root ? 07777 : 0777);

    if (S_ISDIR(st.st_mode)) {
      if (::mkdirat(dfd, name, 0700) != 0) return *err = errno_message("mkdir", dst), false;
      Fd sub_s(::openat(sfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub_s.fd < 0) return *err = errno_message("open", src), false;
      Fd sub_d(::openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub_d.fd < 0) return *err = errno_message("open", dst), false;
      if (!copy_dir(sub_s.fd, sub_d.fd, src, dst, depth + 1, as_root, cancel, stats, err)) return false;
      // Permissions and times last: a read-only source dir must not stop us filling the copy.
      if (as_root && ::fchown(sub_d.fd, st.st_uid, st.st_gid) != 0) return *err = errno_message("chown", dst), false;
      if (::fchmod(sub_d.fd, perm) != 0) return *err = errno_message("chmod", dst), false;
      ::futimens(sub_d.fd, times);
      stats->dirs++;
    } else if (S_ISREG(st.st_mode)) {
      // O_NONBLOCK: if the file was swapped for a fifo since the stat, open must not hang.
      Fd in(::openat(sfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
      if (in.fd < 0) return *err = errno_message("open", src), false;
      struct stat now {};
      if (::fstat(in.fd, &now) != 0 || !S_ISREG(now.st_mode)) {
        errno = ENOENT;  // it changed under us: the caller stages again
        return *err = "copy " + src + ": replaced while staging", false;
      }
      Fd out(::openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
      if (out.fd < 0) return *err = errno_message("create", dst), false;
      if (!copy_bytes(in.fd, out.fd, dst, static_cast<std::uint64_t>(st.st_size), cancel, stats, err)) return false;
      if (as_root && ::fchown(out.fd, st.st_uid, st.st_gid) != 0) return *err = errno_message("chown", dst), false;
      if (::fchmod(out.fd, perm) != 0) return *err = errno_message("chmod", dst), false;
      ::futimens(out.fd, times);
      stats->files++;
    } else if (S_ISLNK(st.st_mode)) {
      std::vector<char> target(static_cast<size_t>(st.st_size > 0 ? st.st_size : 255) + 1);
      ssize_t n = ::readlinkat(sfd, name, target.data(), target.size());
      if (n < 0 || static_cast<size_t>(n) >= target.size()) return *err = errno_message("readlink", src), false;
      target[static_cast<size_t>(n)] = '\0';
      if (::symlinkat(target.data(), dfd, name) != 0) return *err = errno_message("symlink", dst), false;
      if (as_root) ::fchownat(dfd, name, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW);
      ::utimensat(dfd, name, times, AT_SYMLINK_NOFOLLOW);
      stats->symlinks++;
    } else {
      stats->skipped++;
    }
    errno = 0;
  }
  if (errno != 0) return *err = errno_message("read directory", from_path), false;
  return true;
}

bool remove_at(int dfd, const char* name, const std::string& path, int depth, std::string* err) {
  if (::unlinkat(dfd, name, 0) == 0 || errno == ENOENT) return true;
  if (errno != EISDIR && errno != EPERM) return *err = errno_message("remove", path), false;
  // Deeper than copying or exporting ever creates (they stop at kMaxDepth), still bounded.
  if (depth > 4 * kMaxDepth) return *err = "remove " + path + ": nested too deep", false;
  Fd sub(::openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (sub.fd < 0) return *err = errno_message("open", path), false;
  ::fchmod(sub.fd, 0700);  // a read-only directory copied from the source must still empty out
  int dup = ::fcntl(sub.fd, F_DUPFD_CLOEXEC, 0);
  DIR* d = dup >= 0 ? ::fdopendir(dup) : nullptr;
  if (!d) {
    if (dup >= 0) ::close(dup);
    return *err = errno_message("open", path), false;
  }
  std::vector<std::string> names;
  while (dirent* e = ::readdir(d))
    if (std::strcmp(e->d_name, ".") && std::strcmp(e->d_name, "..")) names.emplace_back(e->d_name);
  ::closedir(d);
  for (const auto& n : names)
    if (!remove_at(sub.fd, n.c_str(), path + "/" + n, depth + 1, err)) return false;
  if (::unlinkat(dfd, name, AT_REMOVEDIR) != 0 && errno != ENOENT) return *err = errno_message("remove", path), false;
  return true;
}

// Finds an entry under the directory open at `dfd` whose inode changed at or after `since`.
bool find_change(int dfd, const std::string& path, const timespec& since, int depth, std::string* changed,
                 std::string* err) {
  if (depth > kMaxDepth) return true;
  Dir d(dfd);
  if (!d.d) return *err = errno_message("open", path), false;
  auto after = [&](const timespec& t) { return t.tv_sec > since.tv_sec || (t.tv_sec == since.tv_sec && t.tv_nsec > since.tv_nsec); };
  while (dirent* e = d.next()) {
    const char* name = e->d_name;
    if (!std::strcmp(name, ".") || !std::strcmp(name, "..")) continue;
    struct stat st {};
    if (::fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return *changed = join(path, name), true;  // removed: that is a change
      return *err = errno_message("stat", join(path, name)), false;
    }
    if (after(st.st_ctim)) return *changed = join(path, name), true;
    if (S_ISDIR(st.st_mode)) {
      Fd sub(::openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub.fd < 0) return *err = errno_message("open", join(path, name)), false;
      if (!find_change(sub.fd, join(path, name), since, depth + 1, changed, err)) return false;
      if (!changed->empty()) return true;
    }
  }
  return true;
}

bool chown_at(int dfd, const std::string& path, uid_t uid, gid_t gid, int depth, std::string* err) {
  if (depth > 4 * kMaxDepth) return *err = "chown " + path + ": nested too deep", false;
  Dir d(dfd);
  if (!d.d) return *err = errno_message("open", path), false;
  while (dirent* e = d.next()) {
    const char* name = e->d_name;
    if (!std::strcmp(name, ".") || !std::strcmp(name, "..")) continue;
    if (::fchownat(dfd, name, uid, gid, AT_SYMLINK_NOFOLLOW) != 0) return *err = errno_message("chown", join(path, name)), false;
    struct stat st {};
    if (::fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
      Fd sub(::openat(dfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub.fd < 0) return *err = errno_message("open", join(path, name)), false;
      if (!chown_at(sub.fd, join(path, name), uid, gid, depth + 1, err)) return false;
    }
  }
  return true;
}

}  // namespace

bool write_file_at(int dirfd, const std::string& dir, const char* name, const std::string& text, mode_t mode,
                   std::string* err) {
  std::string tmp = std::string(".") + name + ".agent-tmp";
  ::unlinkat(dirfd, tmp.c_str(), 0);
  int fd = ::openat(dirfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) return *err = errno_message("create", dir + "/" + tmp), false;
  bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) && ::fchmod(fd, mode) == 0 &&
            ::fsync(fd) == 0;
  if (::close(fd) != 0) ok = false;
  if (ok && ::renameat(dirfd, tmp.c_str(), dirfd, name) != 0) ok = false;
  if (!ok) {
    *err = errno_message("write", dir + "/" + name);
    ::unlinkat(dirfd, tmp.c_str(), 0);
  }
  return ok;
}

bool write_file_atomically(const std::string& path, const std::string& text, mode_t mode, std::string* err) {
  size_t slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "." : path.substr(0, slash), name = path.substr(slash + 1);
  Fd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (d.fd < 0) return *err = errno_message("open", dir), false;
  return write_file_at(d.fd, dir, name.c_str(), text, mode, err);
}

bool chown_tree(const std::string& path, uid_t uid, gid_t gid, std::string* err) {
  Fd root(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (root.fd < 0) return *err = errno_message("open", path), false;
  if (::fchown(root.fd, uid, gid) != 0) return *err = errno_message("chown", path), false;
  return chown_at(root.fd, path, uid, gid, 0, err);
}

std::string errno_message(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

bool copy_tree(const std::string& from, const std::string& to, CopyStats* stats, std::string* err,
               const std::atomic<bool>* cancel) {
  Fd src(::open(from.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (src.fd < 0) return *err = errno_message("open", from), false;
  struct stat st {};
  if (::fstat(src.fd, &st) != 0) return *err = errno_message("stat", from), false;
  if (::mkdir(to.c_str(), 0700) != 0) return *err = errno_message("mkdir", to), false;
  Fd dst(::open(to.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dst.fd < 0) return *err = errno_message("open", to), false;
  bool as_root = ::geteuid() == 0;
  if (!copy_dir(src.fd, dst.fd, from, to, 0, as_root, cancel, stats, err)) return false;
  // The release root stays writable by the agent (linked_dirs are made in it); 0755 for readers.
  ::fchmod(dst.fd, (st.st_mode & 0777) | 0700);
  return true;
}

timespec change_clock() {
  timespec now {};
  ::clock_gettime(CLOCK_REALTIME, &now);
  return now;
}

bool changed_since(const std::string& dir, const timespec& since, std::string* changed, std::string* err) {
  changed->clear();
  Fd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (root.fd < 0) return *err = errno_message("open", dir), false;
  struct stat st {};
  if (::fstat(root.fd, &st) != 0) return *err = errno_message("stat", dir), false;
  if (st.st_ctim.tv_sec > since.tv_sec || (st.st_ctim.tv_sec == since.tv_sec && st.st_ctim.tv_nsec > since.tv_nsec))
    return *changed = dir, true;
  return find_change(root.fd, dir, since, 0, changed, err);
}

bool remove_tree(const std::string& path, std::string* err) {
  return remove_at(AT_FDCWD, path.c_str(), path, 0, err);
}

bool fsync_dir(const std::string& dir, std::string* err) {
  Fd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.fd < 0 || ::fsync(fd.fd) != 0) return *err = errno_message("fsync", dir), false;
  return true;
}

bool sync_filesystem(const std::string& path, std::string* err) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.fd < 0 || ::syncfs(fd.fd) != 0) return *err = errno_message("sync", path), false;
  return true;
}

bool replace_symlink(const std::string& target, const std::string& link, std::string* err) {
  std::string tmp = link + ".tmp";
  ::unlink(tmp.c_str());
  if (::symlink(target.c_str(), tmp.c_str()) != 0) return *err = errno_message("symlink", tmp), false;
  if (::rename(tmp.c_str(), link.c_str()) != 0) {
    *err = errno_message("rename " + tmp + " to", link);
    ::unlink(tmp.c_str());
    return false;
  }
  size_t slash = link.rfind('/');
  return fsync_dir(slash == std::string::npos ? "." : link.substr(0, slash == 0 ? 1 : slash), err);
}

bool make_dirs(const std::string& path, std::string* err) {
  for (size_t pos = 1; pos <= path.size(); ++pos) {
    if (pos != path.size() && path[pos] != '/') continue;
    std::string part = path.substr(0, pos);
    if (::mkdir(part.c_str(), 0755) != 0 && errno != EEXIST) return *err = errno_message("mkdir", part), false;
  }
  if (!is_directory(path)) return *err = "mkdir " + path + ": exists and is not a directory", false;
  return true;
}

bool read_file(const std::string& path, std::string* out, std::string* err) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (fd.fd < 0) return *err = errno_message("read", path), false;
  out->clear();
  char buf[65536];
  while (true) {
    ssize_t n = ::read(fd.fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return *err = errno_message("read", path), false;
    if (n == 0) return true;
    out->append(buf, static_cast<size_t>(n));
  }
}

bool is_directory(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace base
