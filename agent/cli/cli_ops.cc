// The verbs that ask the daemon to change what runs: deploy, reload, start, stop, restart,
// rollback; and post-receive, the git hook's deploy of a pushed branch.
#include <climits>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "agent/cli/verbs.h"
#include "agent/daemon/control.h"
#include "hooks/git_hook.h"

namespace agent {

int cmd_op(const Args& a) {
  nlohmann::json req = {{"verb", a.verb}};
  std::vector<std::string> pos = a.positional;
  if (a.verb == "rollback" && !pos.empty() && !pos[0].empty() && std::isdigit(static_cast<unsigned char>(pos[0][0]))) {
    req["steps"] = std::stol(pos[0]);  // args.cc made sure it is 1 to 1000
    pos.erase(pos.begin());
  }
  if (pos.size() > 1) return usage_error(a.verb + " takes one APP, not \"" + pos[0] + " " + pos[1] + "\"");  // rollback web 2
  Config cfg;
  if (!load_for_client(a, &cfg)) return 1;
  if (!pos.empty()) req["app"] = pos[0];  // the daemon knows which apps it runs
  else if (cfg.apps.size() == 1) req["app"] = cfg.apps[0].name;
  if (a.from) {
    char real[PATH_MAX];
    if (!::realpath(a.from->c_str(), real)) return std::fprintf(stderr, "agent: --from %s: %s\n", a.from->c_str(), std::strerror(errno)), 1;
    req["from"] = real;
  }
  if (a.no_fleet) req["no_fleet"] = true;
  if (a.to) req["to"] = *a.to;
  if (a.rev) req["rev"] = *a.rev;
  return call(cfg, req);
}

// The git hook's side: one deploy request per pushed ref; the daemon decides which ref counts.
int cmd_post_receive(const Args& a) {
  Config cfg;
  if (a.socket) cfg.agent.control_socket = *a.socket;
  else if (!load_for_client(a, &cfg)) return 1;
  const std::string& app = a.positional[0];
  std::string branch = a.branch.value_or("");
  int rc = 0;
  char line[1200];
  while (std::fgets(line, sizeof line, stdin)) {
    char old_id[128] = {}, new_id[128] = {}, ref[900] = {};  // sha-256 ids are 64 hex digits
    if (std::sscanf(line, "%127s %127s %899s", old_id, new_id, ref) != 3) continue;
    std::string rev = new_id;
    if (std::string why; !branch.empty() && !hooks::is_deploy_branch(app, branch, ref, &why)) {
      std::printf("agent: %s\n", why.c_str());
      continue;
    }
    if (rev.find_first_not_of('0') == std::string::npos) {
      std::printf("agent: %s deleted: nothing to deploy\n", ref);
      continue;
    }
    std::printf("agent: %s %s pushed to %s\n", app.c_str(), rev.substr(0, 7).c_str(), ref);
    std::fflush(stdout);
    nlohmann::json req = {{"verb", "deploy"}, {"app", app}, {"rev", rev}, {"ref", ref}};
    std::string err;
    bool ok = false, ignored = false;
    std::string message;
    bool reached = call_daemon(cfg.agent.control_socket, req, [&](const nlohmann::json& j) {
      if (j.contains("progress")) {
        std::printf("agent: %s\n", j["progress"].get<std::string>().c_str());
        std::fflush(stdout);
        return;
      }
      ok = j.value("ok", false);
      message = j.value("message", "");
      ignored = j.contains("data") && j["data"].is_object() && j["data"].value("ignored", false);
    }, &err);
    if (!reached) message = err + " (the push is stored; deploy it with: agent deploy " + app + " --rev " + rev.substr(0, 7) + ")";
    if (ignored) std::printf("agent: %s\n", message.c_str());
    else if (reached && ok) std::printf("agent: %s%s\n", message.starts_with("live") ? "" : "live: ", message.c_str());
    else std::printf("agent: NOT deployed: %s\n", message.c_str()), rc = 1;
    std::fflush(stdout);
  }
  return rc;
}

}  // namespace agent
