#include "hooks/git_hook.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "releases/fs.h"
#include "releases/git.h"

namespace hooks {

extern const char kPostReceiveTemplate[];  // generated from hooks/post-receive.in

namespace {

constexpr const char* kManaged = "deploy-agent managed hook";

void replace_all(std::string* s, const std::string& from, const std::string& to) {
  for (size_t pos = 0; (pos = s->find(from, pos)) != std::string::npos; pos += to.size()) s->replace(pos, from.size(), to);
}

bool write_file_atomically(const std::string& path, const std::string& text, mode_t mode, std::string* err) {
  std::string tmp = path + ".agent-tmp";
  FILE* f = std::fopen(tmp.c_str(), "we");
  if (!f) return *err = releases::errno_message("create", tmp), false;
  bool ok = std::fwrite(text.data(), 1, text.size(), f) == text.size();
  ok = (std::fflush(f) == 0) && ok && ::fsync(fileno(f)) == 0;
  if (std::fclose(f) != 0) ok = false;
  if (ok && ::chmod(tmp.c_str(), mode) != 0) ok = false;
  if (ok && ::rename(tmp.c_str(), path.c_str()) != 0) ok = false;
  if (!ok) {
    *err = releases::errno_message("write", path);
    ::unlink(tmp.c_str());
  }
  return ok;
}

}  // namespace

std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string render_post_receive(const GitHookPlan& plan) {
  std::string text = kPostReceiveTemplate;
  replace_all(&text, "@AGENT@", shell_quote(plan.agent_exe));
  replace_all(&text, "@SOCKET@", shell_quote(plan.control_socket));
  replace_all(&text, "@APP@", shell_quote(plan.app));
  return text;
}

bool ensure_git_hook(const GitHookPlan& plan, std::vector<std::string>* notes, std::string* err) {
  bool created = false;
  if (!releases::git_ensure_bare(plan.repo, plan.branch, &created, err)) return false;
  if (created) notes->push_back("created bare repository " + plan.repo + " (push to its branch " + plan.branch + " to deploy)");
  std::string dir = plan.repo + "/hooks", path = dir + "/post-receive", existing, ignored;
  if (!releases::make_dirs(dir, err)) return false;
  std::string text = render_post_receive(plan);
  bool exists = releases::read_file(path, &existing, &ignored);
  if (exists && existing == text) return true;
  if (exists && existing.find(kManaged) == std::string::npos) {
    notes->push_back(path + " is not the agent's hook and was left alone: pushes deploy only if it runs `" +
                     plan.agent_exe + " post-receive --socket " + plan.control_socket + " " + plan.app + "`");
    return true;
  }
  if (!write_file_atomically(path, text, 0755, err)) return false;
  notes->push_back((exists ? "updated " : "installed ") + path);
  return true;
}

}  // namespace hooks
