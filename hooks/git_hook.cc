#include "hooks/git_hook.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/fs.h"
#include "releases/git.h"

namespace hooks {

extern const char kPostReceiveTemplate[];  // generated from hooks/post-receive.in

namespace {

constexpr const char* kManaged = "deploy-agent managed hook";


// The repository belongs to whoever pushes, and the agent is often root: every step here is
// made relative to a directory fd opened without following symlinks, and nothing is opened
// by a name the pusher could have pointed elsewhere (no symlinked hooks/, no planted temp file).
bool read_at(int dirfd, const char* name, std::string* out, bool* exists) {
  int fd = ::openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  *exists = fd >= 0 || errno != ENOENT;
  if (fd < 0) return false;
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return ::close(fd), false;
  char buf[8192];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) out->append(buf, static_cast<size_t>(n));
  ::close(fd);
  return n == 0;
}

}  // namespace

bool is_deploy_branch(const std::string& app, const std::string& branch, const std::string& ref, std::string* why) {
  if (ref == "refs/heads/" + branch) return true;
  *why = "ignored: " + app + " deploys pushes to " + branch + ", not " + (ref.starts_with("refs/heads/") ? ref.substr(11) : ref) +
         "; nothing changed";
  return false;
}

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string render_post_receive(const GitHookPlan& plan) {
  // One pass over the template: a value that happens to contain "@APP@" stays as it is.
  const std::pair<const char*, std::string> values[] = {{"@AGENT@", shell_quote(plan.agent_exe)},
                                                         {"@SOCKET@", shell_quote(plan.control_socket)},
                                                         {"@BRANCH@", shell_quote(plan.branch)},
                                                         {"@APP@", shell_quote(plan.app)}};
  std::string in = kPostReceiveTemplate, out;
  for (size_t i = 0; i < in.size();) {
    bool matched = false;
    for (const auto& [key, value] : values) {
      if (in.compare(i, std::strlen(key), key) != 0) continue;
      out += value;
      i += std::strlen(key);
      matched = true;
      break;
    }
    if (!matched) out += in[i++];
  }
  return out;
}

bool ensure_git_hook(const GitHookPlan& plan, std::vector<std::string>* notes, std::string* err) {
  bool created = false;
  if (!releases::git_ensure_bare(plan.repo, plan.branch, &created, err)) return false;
  if (created) notes->push_back("created bare repository " + plan.repo + " (push to its branch " + plan.branch + " to deploy)");
  std::string dir = plan.repo + "/hooks", path = dir + "/post-receive", existing;
  int repo_fd = ::open(plan.repo.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (repo_fd < 0) return *err = base::errno_message("open", plan.repo), false;
  if (::mkdirat(repo_fd, "hooks", 0755) != 0 && errno != EEXIST) {
    *err = base::errno_message("mkdir", dir);
    ::close(repo_fd);
    return false;
  }
  int hooks_fd = ::openat(repo_fd, "hooks", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  ::close(repo_fd);
  if (hooks_fd < 0) return *err = base::errno_message("open", dir) + " (a symlink is not followed)", false;
  struct Closer { int fd; ~Closer() { ::close(fd); } } closer{hooks_fd};
  std::string text = render_post_receive(plan);
  bool exists = false;
  bool readable = read_at(hooks_fd, "post-receive", &existing, &exists);
  if (readable && existing == text) return true;
  if (exists && (!readable || existing.find(kManaged) == std::string::npos)) {
    notes->push_back(path + " is not the agent's hook and was left alone: pushes deploy only if it runs `" +
                     plan.agent_exe + " post-receive --socket " + plan.control_socket + " --branch " + plan.branch + " " +
                     plan.app + "`");
    return true;
  }
  if (!base::write_file_at(hooks_fd, dir, "post-receive", text, 0755, err)) return false;
  notes->push_back((exists ? "updated " : "installed ") + path);
  return true;
}

}  // namespace hooks
