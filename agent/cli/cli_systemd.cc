// agent systemd-socket: agent.socket's ListenStream= lines for the config's listen addresses,
// as a drop-in. The shipped agent.socket lists none: it cannot know the apps' ports.
#include <cstdio>
#include <set>

#include "agent/cli/verbs.h"

namespace agent {

int cmd_systemd_socket(const Args& a) {
  Config cfg;
  if (!load(a, &cfg)) return 1;
  std::printf("# agent.socket: the listening addresses of %s (agent systemd-socket).\n"
              "# Install as a drop-in, then let systemd hold the sockets:\n"
              "#   agent systemd-socket > /etc/systemd/system/agent.socket.d/listen.conf\n"
              "#   systemctl daemon-reload && systemctl enable --now agent.socket && systemctl restart agent\n"
              "[Socket]\n",
              a.config.c_str());
  std::set<std::string> said;
  size_t n = 0;
  for (const auto& app : cfg.apps)
    for (const auto& l : app.listen) {
      std::string canon = l.canonical();
      if (!said.insert(canon).second) continue;
      // The agent matches what systemd passes by this same canonical spelling.
      std::string stream = l.kind == base::ListenAddress::Kind::Unix ? l.path : canon;
      std::printf("# %s: %s\nListenStream=%s\n", app.name.c_str(), l.text.c_str(), stream.c_str());
      ++n;
    }
  if (n == 0) std::fprintf(stderr, "agent: no app in %s listens on anything: agent.socket has nothing to hold\n", a.config.c_str());
  return n == 0 ? 1 : 0;
}

}  // namespace agent
