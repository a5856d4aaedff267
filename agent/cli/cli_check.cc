// `agent check [--deep]`: the config, and with --deep the host it will run on: what the daemon
// would otherwise find only when it starts a worker.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "agent/cli/verbs.h"
#include "base/fs.h"

namespace agent {
namespace {

// What --deep finds wrong, one line each ("app web: env_file /etc/web.env: No such file").
std::vector<std::string> deep_problems(const Config& cfg) {
  std::vector<std::string> out;
  auto readable = [&](const std::string& what, const std::string& path) {
    if (!path.empty() && ::access(path.c_str(), R_OK) != 0) out.push_back(what + " " + path + ": " + std::strerror(errno));
  };
  readable("[alerts] smtp_password_file", cfg.alerts.smtp_password_file);
  readable("[alerts] tls_ca_file", cfg.alerts.tls_ca_file);
  if (cfg.fleet)
    for (const auto& [key, path] : {std::pair{"etcd_password_file", cfg.fleet->etcd_password_file}, {"etcd_ca_file", cfg.fleet->etcd_ca_file},
                                    {"etcd_cert_file", cfg.fleet->etcd_cert_file}, {"etcd_key_file", cfg.fleet->etcd_key_file}})
      readable(std::string("[fleet] ") + key, path);
  for (const auto& app : cfg.apps) {
    std::string prefix = "app " + app.name + ": ";
    if (!app.source.empty() && !base::is_directory(app.source))
      out.push_back(prefix + "source " + app.source + ": no such directory (nothing to stage from until it is installed)");
    // Every problem of the app, not only the first: each one is checked on its own, and the
    // command is looked up on the PATH the launch would have without an env_file that is missing.
    AppConfig probe = app;
    if (!app.env_file.empty() && ::access(app.env_file.c_str(), R_OK) != 0) {
      out.push_back(prefix + "env_file: read " + app.env_file + ": " + std::strerror(errno));
      probe.env_file.clear();
    }
    LaunchPreview p;
    std::string err;
    if (!preview_launch(cfg, probe, std::nullopt, &p, &err)) {
      // preview_launch says "app web: ..." itself; no release and no source is already said above
      if (app.source.empty() || base::is_directory(app.source)) out.push_back(err);
      continue;
    }
    if (!p.resolves) out.push_back(prefix + p.resolve_error);
  }
  return out;
}

}  // namespace

int cmd_check(const Args& a) {
  Config cfg;
  if (!load(a, &cfg)) return 1;
  if (a.deep) {
    auto problems = deep_problems(cfg);
    for (const auto& p : problems) std::fprintf(stderr, "%s: %s\n", a.config.c_str(), p.c_str());
    if (!problems.empty()) {
      std::fprintf(stderr, "agent: %zu problem%s on this host (the config itself is valid)\n", problems.size(), problems.size() == 1 ? "" : "s");
      return 1;
    }
  }
  std::printf("%s: ok (%zu app%s: %s)%s\n", a.config.c_str(), cfg.apps.size(), cfg.apps.size() == 1 ? "" : "s", app_names(cfg).c_str(),
              a.deep ? "; env files, commands, accounts and sources checked on this host" : "");
  return 0;
}

}  // namespace agent
