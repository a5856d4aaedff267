#include "agent/process/launch_env.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <map>

#include "base/fs.h"

namespace agent {
namespace {

constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

std::string strip_trailing_slashes(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

bool executable_by(const struct stat& st, const Account& a) {
  if (a.uid == 0) return st.st_mode & (S_IXUSR | S_IXGRP | S_IXOTH);
  if (st.st_uid == a.uid) return st.st_mode & S_IXUSR;
  bool in_group = st.st_gid == a.gid || std::find(a.groups.begin(), a.groups.end(), st.st_gid) != a.groups.end();
  if (in_group) return st.st_mode & S_IXGRP;
  return st.st_mode & S_IXOTH;
}

// Search (x) permission on `dir` and every directory above it, for `a`.
bool reachable_by(const std::string& dir, const Account& a, std::string* why) {
  if (a.uid == 0) return true;
  std::string path;
  size_t pos = 0;
  while (pos != std::string::npos) {
    size_t slash = dir.find('/', pos + 1);
    path = dir.substr(0, slash == std::string::npos ? dir.size() : slash);
    if (path.empty()) path = "/";
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
      bool ok = st.st_uid == a.uid ? (st.st_mode & S_IXUSR)
                : (st.st_gid == a.gid || std::find(a.groups.begin(), a.groups.end(), st.st_gid) != a.groups.end())
                    ? (st.st_mode & S_IXGRP) : (st.st_mode & S_IXOTH);
      if (!ok) return *why = "directory " + path + " cannot be entered by " + a.name, false;
    }
    pos = slash;
  }
  return true;
}

bool reserved(const std::string& name) { return is_agent_variable(name); }

}  // namespace

std::string self_executable() {
  char exe[4096];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0) return "";
  std::string self(exe, static_cast<size_t>(n));
  if (self.ends_with(" (deleted)")) self.resize(self.size() - 10);  // the binary was upgraded under us
  return self;
}

std::string find_node_shim(std::string* searched) {
  std::string dir = self_executable();
  if (dir.empty()) return "";
  dir = dir.substr(0, dir.rfind('/'));
  // Installed: <prefix>/bin/agent and <prefix>/share/...; a build tree mirrors it beside the
  // binary (<build>/agent and <build>/share/..., CMakeLists.txt), wherever the build tree is.
  for (const std::string& candidate : {dir + "/../share/deploy-agent/shims/node/shim.js", dir + "/share/deploy-agent/shims/node/shim.js"}) {
    char real[4096];
    if (::realpath(candidate.c_str(), real)) return real;
    if (searched) *searched += (searched->empty() ? "" : ", ") + candidate;
  }
  return "";
}

bool lookup_account(const AppConfig& app, Account* out, std::string* err) {
  struct passwd* pw = app.user.empty() ? getpwuid(geteuid()) : getpwnam(app.user.c_str());
  if (!pw) {
    *err = app.user.empty() ? "the agent's own uid " + std::to_string(geteuid()) + " has no passwd entry"
                            : "user \"" + app.user + "\" does not exist on this host";
    return false;
  }
  out->name = pw->pw_name;
  out->uid = pw->pw_uid;
  out->gid = pw->pw_gid;
  out->home = pw->pw_dir ? pw->pw_dir : "/";
  if (!app.group.empty()) {
    struct group* gr = getgrnam(app.group.c_str());
    if (!gr) return *err = "group \"" + app.group + "\" does not exist on this host", false;
    out->gid = gr->gr_gid;
  }
  out->groups = groups_of(out->name, out->gid);
  return true;
}

std::vector<gid_t> groups_of(const std::string& user, gid_t gid) {
  int n = 64;
  std::vector<gid_t> groups(static_cast<size_t>(n));
  if (getgrouplist(user.c_str(), gid, groups.data(), &n) < 0) {  // n now says how many there are
    groups.resize(static_cast<size_t>(n));
    getgrouplist(user.c_str(), gid, groups.data(), &n);
  }
  groups.resize(static_cast<size_t>(std::max(n, 0)));
  return groups;
}

bool parse_env_file(std::string_view text, const std::string& path, std::vector<std::pair<std::string, int>>* out,
                    std::string* err) {
  int lineno = 0;
  size_t pos = 0;
  while (pos <= text.size()) {
    size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = nl == std::string_view::npos ? text.size() + 1 : nl + 1;
    ++lineno;
    while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
    while (!line.empty() && (line.back() == ' ' || line.back() == '\t' || line.back() == '\r')) line.remove_suffix(1);
    if (line.empty() || line[0] == '#') continue;
    if (line.starts_with("export ")) line.remove_prefix(7);
    size_t eq = line.find('=');
    std::string_view name = line.substr(0, eq);
    bool name_ok = eq != std::string_view::npos && !name.empty() && !(name[0] >= '0' && name[0] <= '9') &&
                   std::all_of(name.begin(), name.end(), [](char c) {
                     return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
                   });
    if (!name_ok) {
      *err = path + ":" + std::to_string(lineno) + ": expected NAME=value";
      return false;
    }
    std::string_view value = line.substr(eq + 1);
    if (value.size() >= 2 && (value.front() == '"' || value.front() == '\'') && value.back() == value.front())
      value = value.substr(1, value.size() - 2);
    out->emplace_back(std::string(name) + "=" + std::string(value), lineno);
  }
  return true;
}

bool LaunchEnv::build(const AppConfig& app, const LaunchContext& ctx, LaunchEnv* out, std::string* err) {
  *out = LaunchEnv{};
  std::map<std::string, EnvVar> vars;
  auto set = [&](const std::string& name, const std::string& value, const std::string& origin) {
    vars[name] = EnvVar{name, value, origin};
  };

  for (const auto& kv : ctx.agent_environ) {
    size_t eq = kv.find('=');
    if (eq == std::string::npos) continue;
    std::string name = kv.substr(0, eq);
    if (std::find(app.inherit.begin(), app.inherit.end(), name) == app.inherit.end()) continue;
    if (reserved(name)) out->dropped.push_back("variable " + name + " (inherited): set by the agent for each worker");
    else set(name, kv.substr(eq + 1), "inherited");
  }
  set("HOME", ctx.account.home, "account " + ctx.account.name);
  set("USER", ctx.account.name, "account " + ctx.account.name);
  set("LOGNAME", ctx.account.name, "account " + ctx.account.name);

  if (!app.env_file.empty()) {
    std::string text;
    if (!base::read_file(app.env_file, &text, err)) return *err = "env_file: " + *err, false;
    std::vector<std::pair<std::string, int>> lines;
    if (!parse_env_file(text, app.env_file, &lines, err)) return false;
    for (const auto& [kv, line] : lines) {
      size_t eq = kv.find('=');
      std::string name = kv.substr(0, eq), where = "env_file " + app.env_file + ":" + std::to_string(line);
      if (reserved(name)) out->dropped.push_back("variable " + name + " (" + where + "): set by the agent for each worker");
      else if (name == "PATH") out->dropped.push_back("variable PATH (" + where + "): PATH is composed by the agent; use path_prepend / path_append");
      else set(name, kv.substr(eq + 1), where);
    }
  }
  for (const auto& [k, v] : app.env)
    if (k != "PATH" && !reserved(k)) set(k, v, "config [app.env]");  // the config refuses them; belt and braces

  // PATH: the global part is what the layers above settled on; the rest is composed around it.
  std::vector<PathEntry> candidates;
  candidates.push_back({ctx.release_dir + "/node_modules/.bin", "release"});
  candidates.push_back({ctx.release_dir + "/.node/bin", "release"});
  for (const auto& p : app.path_prepend) candidates.push_back({p, "path_prepend"});
  // The global part is the inherited PATH; an agent started without one (or with an empty
  // one) still gives its workers the system directories, never just the release's.
  std::string global = kDefaultPath, global_origin = "default (the agent has no PATH to inherit)";
  if (auto it = vars.find("PATH"); it != vars.end() && !it->second.value.empty()) {
    global = it->second.value;
    global_origin = "inherited";
  }
  for (size_t pos = 0; pos <= global.size();) {
    size_t colon = global.find(':', pos);
    if (colon == std::string::npos) colon = global.size();
    candidates.push_back({global.substr(pos, colon - pos), global_origin});
    pos = colon + 1;
  }
  for (const auto& p : app.path_append) candidates.push_back({p, "path_append"});
  std::vector<std::string> seen;
  for (auto& c : candidates) {
    std::string dir = strip_trailing_slashes(c.dir);
    if (dir.empty()) {
      out->dropped.push_back("an empty entry (" + c.origin + "): it would mean the worker's cwd");
    } else if (dir[0] != '/') {
      out->dropped.push_back("\"" + dir + "\" (" + c.origin + "): relative, it would depend on the worker's cwd");
    } else if (std::find(seen.begin(), seen.end(), dir) != seen.end()) {
      out->dropped.push_back("\"" + dir + "\" (" + c.origin + "): already earlier on PATH");
    } else {
      seen.push_back(dir);
      out->path.push_back({dir, c.origin});
    }
  }
  std::string path;
  for (const auto& e : out->path) path += (path.empty() ? "" : ":") + e.dir;
  set("PATH", path, "composed");

  // The agent's own variables last: nothing above may change them.
  size_t nlisten = app.listen.size();
  if (nlisten > 0) {
    std::string names;
    for (size_t i = 0; i < nlisten; ++i) names += (i ? ":" : "") + app.name;
    set("LISTEN_FDS", std::to_string(nlisten), "agent");
    set("LISTEN_FDNAMES", names, "agent");
    if (ctx.worker < 0) set("LISTEN_PID", "(the worker's pid, set after fork)", "agent");
  }
  if (nlisten > 0) {
    std::string addrs;
    for (const auto& l : app.listen) addrs += (addrs.empty() ? "" : " ") + l.canonical();
    set("AGENT_LISTEN", addrs, "agent");
  }
  if (app.shim == "node") {
    if (ctx.node_shim.empty()) {
      std::string searched;
      find_node_shim(&searched);
      return *err = "shim = \"node\": the agent's Node shim is not installed (looked in " + searched + ")", false;
    }
    auto it = vars.find("NODE_OPTIONS");
    std::string before = it == vars.end() || it->second.value.empty() ? "" : it->second.value + " ";
    set("NODE_OPTIONS", before + "--require \"" + ctx.node_shim + "\"", "agent (shim; keeps what was there)");
    set("AGENT_DRAIN_SIGNAL", base::signal_name(app.drain_signal), "agent (shim)");
    if (!vars.count("PORT"))
      for (const auto& l : app.listen)
        if (l.kind != base::ListenAddress::Kind::Unix) {
          set("PORT", std::to_string(l.port), "agent (shim)");
          break;
        }
  }
  if (app.ready == ReadyMode::Fd) set("READY_FD", std::to_string(3 + nlisten), "agent");
  if (app.ready == ReadyMode::Notify) set("NOTIFY_SOCKET", ctx.notify_socket, "agent");
  set("APP_NAME", app.name, "agent");
  set("APP_RELEASE", ctx.release_id, "agent");
  set("APP_VERSION", ctx.version, "agent");
  set("APP_RELEASE_DIR", ctx.release_dir, "agent");
  set("APP_WORKER", ctx.worker < 0 ? "(the worker's slot, 0.." + std::to_string(app.instances - 1) + ")" : std::to_string(ctx.worker), "agent");

  for (auto& [name, v] : vars) out->vars.push_back(std::move(v));
  return true;
}

const EnvVar* LaunchEnv::find(std::string_view name) const {
  for (const auto& v : vars)
    if (v.name == name) return &v;
  return nullptr;
}

std::vector<std::string> LaunchEnv::envp() const {
  std::vector<std::string> out;
  out.reserve(vars.size());
  for (const auto& v : vars) out.push_back(v.name + "=" + v.value);
  return out;
}

bool resolve_command(const std::string& command0, const LaunchEnv& env, const std::string& release_dir,
                     const Account& account, std::string* resolved, std::string* err) {
  auto check = [&](const std::string& candidate, std::string* why) {
    struct stat st {};
    if (::stat(candidate.c_str(), &st) != 0) return false;
    if (!S_ISREG(st.st_mode)) return *why = candidate + " is not a regular file", false;
    if (!executable_by(st, account)) return *why = candidate + " is not executable by " + account.name, false;
    return reachable_by(candidate.substr(0, candidate.rfind('/')), account, why);
  };
  std::string why;
  if (!reachable_by(release_dir, account, &why)) return *err = "release " + release_dir + ": " + why, false;
  if (command0.find('/') != std::string::npos) {
    std::string p = command0[0] == '/' ? command0 : release_dir + "/" + command0;
    if (check(p, &why)) return *resolved = p, true;
    *err = "command \"" + command0 + "\": " + (why.empty() ? p + " does not exist" : why);
    return false;
  }
  std::string searched;
  for (const auto& e : env.path) {
    if (check(e.dir + "/" + command0, &why)) return *resolved = e.dir + "/" + command0, true;
    searched += (searched.empty() ? "" : ":") + e.dir;
  }
  *err = "command \"" + command0 + "\" is not on the launch PATH (" + searched + ")" +
         (why.empty() ? "" : "; " + why) +
         ": install it, or add its directory with path_prepend / path_append, or give an absolute path";
  return false;
}

}  // namespace agent
