// The git trigger's entry: the app's bare repository and the post-receive hook in it that
// hands each push to the daemon (the hook's text is hooks/post-receive.in).
#pragma once

#include <string>
#include <vector>

namespace hooks {

struct GitHookPlan {
  std::string repo;            // the app's `git`
  std::string branch;          // HEAD of a repository created now
  std::string app;
  std::string agent_exe;       // absolute path of the agent binary the hook runs
  std::string control_socket;  // where the hook reaches the daemon
};

/// Creates the bare repository if missing and writes hooks/post-receive from the template,
/// unless a hook there is not ours (no "deploy-agent managed hook" line): that one is left
/// alone and a note says pushes will not deploy through it. `notes` says what was done.
bool ensure_git_hook(const GitHookPlan& plan, std::vector<std::string>* notes, std::string* err);

/// The hook text for `plan`: the template with each value shell-quoted.
std::string render_post_receive(const GitHookPlan& plan);

/// Whether `ref` ("refs/heads/main") is the app's branch; if not, `*why` is the line the
/// pusher sees ("ignored: web deploys pushes to main, not feature; nothing changed").
bool is_deploy_branch(const std::string& app, const std::string& branch, const std::string& ref, std::string* why);

/// 'text' for /bin/sh, with embedded single quotes escaped.
std::string shell_quote(const std::string& text);

}  // namespace hooks
