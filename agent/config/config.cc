// agent.toml, read and checked (config.h). Over 500 lines on purpose: every key's parse, default
// and check sit side by side, in the order of the README's key table, so the contract is read
// in one place.
#include "agent/config/config.h"


#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <toml++/toml.h>

#include "base/text.h"

namespace agent {

std::string ConfigError::format() const {
  return file + ":" + std::to_string(line) + ":" + std::to_string(column) + ": " + message;
}

const char* ready_mode_name(ReadyMode m) {
  switch (m) {
    case ReadyMode::Fd: return "fd";
    case ReadyMode::Notify: return "notify";
    case ReadyMode::Delay: return "delay";
  }
  return "?";
}

const AppConfig* Config::find_app(std::string_view name) const {
  for (const auto& a : apps)
    if (a.name == name) return &a;
  return nullptr;
}

std::string default_config_path() {
  const char* env = std::getenv("AGENT_CONFIG");
  return env && *env ? env : "/etc/agent/agent.toml";
}

bool valid_app_name(std::string_view name) {
  if (name.empty() || name.size() > 64 || name[0] == '.') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
  });
}

namespace {

bool valid_env_name(std::string_view n) {
  if (n.empty() || (n[0] >= '0' && n[0] <= '9')) return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
}

// A path inside a release: relative, no "..", no empty or "." components.
bool valid_relative_path(std::string_view p) {
  if (p.empty() || p[0] == '/') return false;
  std::string_view rest = p;
  while (!rest.empty()) {
    size_t slash = rest.find('/');
    std::string_view part = rest.substr(0, slash);
    if (part.empty() || part == "." || part == "..") return false;
    if (slash == std::string_view::npos) break;
    rest.remove_prefix(slash + 1);
  }
  return true;
}

using base::edit_distance;

// A PM2 key where an agent key was meant (seed 004's pm2.json): what to write instead.
std::string pm2_hint(std::string_view key) {
  static const std::pair<const char*, const char*> kHints[] = {
      {"max_memory_restart", "PM2's max_memory_restart is max_memory here: \"500M\""},
      {"script", "PM2's script and args are one command here: command = [\"node\", \"app.js\", \"--flag\"]"},
      {"args", "PM2's script and args are one command here: command = [\"node\", \"app.js\", \"--flag\"]"},
      {"exec_interpreter", "the interpreter is command[0] here: command = [\"node\", \"app.js\"]"},
      {"interpreter", "the interpreter is command[0] here: command = [\"node\", \"app.js\"]"},
      {"exec_mode", "not needed: every app runs `instances` workers sharing the agent's listen sockets"},
      {"cwd", "PM2's cwd is source here: the directory each release is staged from"},
      {"env_production", "the agent has one environment per app: put it in [app.env] (or env_file)"},
      {"listen_timeout", "PM2's listen_timeout is ready_timeout here: \"10s\""},
      {"kill_signal", "PM2's kill_signal is drain_signal here"},
      {"merge_logs", "not needed: every worker's lines go to <log_dir>/<app>/app.log, stamped with slot and pid"},
      {"error_file", "the agent writes <log_dir>/<app>/app.log; see agent logs --stream err"},
      {"out_file", "the agent writes <log_dir>/<app>/app.log; see agent logs --stream out"},
      {"autorestart", "not needed: a crashed worker is always restarted, with backoff"},
      {"ignore_watch", "the agent watches one file, `watch` (package.json or a marker), not a tree"},
  };
  for (const auto& [pm2, hint] : kHints)
    if (key == pm2) return hint;
  if (key.starts_with("env_")) return "PM2's env_<name> has no place here: the agent has one environment per app, [app.env]";
  return "";
}

const char* type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::array: return "an array";
    case toml::node_type::table: return "a table";
    case toml::node_type::date: case toml::node_type::time: case toml::node_type::date_time:
      return "a date/time";
    default: return "nothing";
  }
}

struct Ctx {
  std::string file;
  std::vector<ConfigError>* errors;
  void error(const toml::source_region& at, std::string msg) {
    errors->push_back({file, static_cast<int>(at.begin.line), static_cast<int>(at.begin.column),
                       std::move(msg)});
  }
};

// Reads the keys of one table, remembering which were used, so that every key left over is
// reported as unknown (with the nearest known name as a hint).
class TableReader {
 public:
  TableReader(const toml::table& t, std::string where, Ctx& ctx) : t_(t), where_(std::move(where)), ctx_(ctx) {}

  const toml::node* get(std::string_view key, bool required = false) {
    known_.insert(std::string(key));
    const toml::node* n = t_.get(key);
    if (!n && required) ctx_.error(t_.source(), "missing required key \"" + std::string(key) + "\" in " + where_);
    return n;
  }

  void type_error(const toml::node& n, std::string_view key, const char* want) {
    ctx_.error(n.source(), where_ + " " + std::string(key) + ": expected " + want + ", found " + type_name(n.type()));
  }
  void error(const toml::node& n, std::string_view key, const std::string& msg) {
    ctx_.error(n.source(), where_ + " " + std::string(key) + ": " + msg);
  }

  bool string(std::string_view key, std::string* out, bool required = false) {
    const toml::node* n = get(key, required);
    if (!n) return false;
    if (!n->is_string()) return type_error(*n, key, "a string"), false;
    *out = n->as_string()->get();
    return true;
  }

  void abs_path(std::string_view key, std::string* out, bool required = false) {
    if (!string(key, out, required)) return;
    if (out->empty() || (*out)[0] != '/')
      error(*t_.get(key), key, "\"" + *out + "\" must be an absolute path (start with /)");
  }

  bool string_array(std::string_view key, std::vector<std::string>* out) {
    const toml::node* n = get(key);
    if (!n) return false;
    const toml::array* arr = n->as_array();
    if (!arr) return type_error(*n, key, "an array of strings"), false;
    out->clear();
    bool ok = true;
    for (const toml::node& e : *arr) {
      if (!e.is_string()) {
        type_error(e, key, "a string in the array");
        ok = false;
        continue;
      }
      out->push_back(e.as_string()->get());
    }
    return ok;
  }

  void integer(std::string_view key, int* out, long min, long max) {
    const toml::node* n = get(key);
    if (!n) return;
    if (!n->is_integer()) return type_error(*n, key, "an integer");
    auto v = n->as_integer()->get();
    if (v < min || v > max)
      return error(*n, key, std::to_string(v) + " is out of range (" + std::to_string(min) + " to " + std::to_string(max) + ")");
    *out = static_cast<int>(v);
  }

  void duration(std::string_view key, base::Millis* out, bool allow_never = false, bool* never = nullptr) {
    const toml::node* n = get(key);
    if (!n) return;
    if (!n->is_string())
      return type_error(*n, key, allow_never ? "a duration string such as \"10s\", or \"never\"" : "a duration string such as \"10s\"");
    const std::string& s = n->as_string()->get();
    if (allow_never && s == "never") {
      *never = true;
      return;
    }
    std::string err;
    if (auto d = base::parse_duration(s, &err)) {
      if (d->count() == 0) return error(*n, key, "must be longer than 0");
      *out = *d;
    } else {
      error(*n, key, err);
    }
  }

  void size(std::string_view key, std::uint64_t* out) {
    const toml::node* n = get(key);
    if (!n) return;
    if (!n->is_string()) return type_error(*n, key, "a size string such as \"500M\"");
    const std::string& text = n->as_string()->get();
    // A bare number is bytes to parse_size, and "200" meant as megabytes would replace every
    // worker at once: here a size says its unit (0 alone needs none).
    if (!text.empty() && text != "0" && text.find_first_not_of("0123456789") == std::string::npos)
      return ctx_.error(n->source(), where_ + " " + std::string(key) + " = \"" + text + "\": " + text + " what? use K, M or G (\"" + text +
                                         "M\"; \"0\" is no limit)");
    std::string err;
    if (auto v = base::parse_size(text, &err)) *out = *v;
    else error(*n, key, err);
  }

  /// Reports every key that no reader asked for. Call after reading all known keys.
  void reject_unknown() {
    for (const auto& [k, v] : t_) {
      if (known_.count(std::string(k.str()))) continue;
      std::string hint;
      size_t best = 3;
      for (const auto& name : known_) {
        size_t d = edit_distance(k.str(), name);
        if (d < best) best = d, hint = name;
      }
      std::string pm2 = pm2_hint(k.str());
      ctx_.error(k.source(), "unknown key \"" + std::string(k.str()) + "\" in " + where_ +
                                 (!pm2.empty() ? " (" + pm2 + ")" : hint.empty() ? "" : " (did you mean \"" + hint + "\"?)"));
    }
  }

 private:
  const toml::table& t_;
  std::string where_;
  Ctx& ctx_;
  std::set<std::string> known_;
};

void read_agent(const toml::table& t, AgentSettings* a, Ctx& ctx) {
  TableReader r(t, "[agent]", ctx);
  r.abs_path("state_dir", &a->state_dir);
  r.abs_path("log_dir", &a->log_dir);
  r.abs_path("control_socket", &a->control_socket);
  if (r.string("control_group", &a->control_group) && !a->control_group.empty() &&
      !getgrnam(a->control_group.c_str()))
    r.error(*t.get("control_group"), "control_group", "group \"" + a->control_group + "\" does not exist on this host");
  r.size("log_max_size", &a->log_max_size);
  r.integer("log_max_files", &a->log_max_files, 0, 1000);
  std::string metrics;
  if (r.string("metrics_listen", &metrics)) {
    std::string err;
    if (auto l = base::parse_listen(metrics, &err)) a->metrics_listen = *l;
    else r.error(*t.get("metrics_listen"), "metrics_listen", err);
  }
  r.reject_unknown();
}

void read_alerts(const toml::table& t, AlertSettings* a, Ctx& ctx) {
  TableReader r(t, "[alerts]", ctx);
  if (r.string_array("email_to", &a->email_to)) {
    for (const auto& to : a->email_to)
      if (to.find('@') == std::string::npos)
        r.error(*t.get("email_to"), "email_to", "\"" + to + "\" is not an email address");
  }
  r.string("email_from", &a->email_from);
  if (r.string("smtp_url", &a->smtp_url) && !a->smtp_url.starts_with("smtp://") &&
      !a->smtp_url.starts_with("smtps://"))
    r.error(*t.get("smtp_url"), "smtp_url", "must start with smtp:// or smtps://");  // the URL may hold a secret: not echoed
  if (!a->smtp_url.empty()) {
    // user:password@ in the URL would put the secret in the config and in error messages.
    size_t scheme = a->smtp_url.find("://"), at = a->smtp_url.find('@'), slash = a->smtp_url.find('/', scheme + 3);
    if (at != std::string::npos && (slash == std::string::npos || at < slash))
      r.error(*t.get("smtp_url"), "smtp_url", "credentials do not belong in the URL: use smtp_user and smtp_password_file");
  }
  r.string("smtp_user", &a->smtp_user);
  r.abs_path("smtp_password_file", &a->smtp_password_file);
  if (r.string("webhook_url", &a->webhook_url) && !a->webhook_url.empty() &&
      !a->webhook_url.starts_with("http://") && !a->webhook_url.starts_with("https://"))
    r.error(*t.get("webhook_url"), "webhook_url", "must start with http:// or https://");  // may hold a token: not echoed
  if (size_t at = a->webhook_url.find('@'); at != std::string::npos && at < a->webhook_url.find('/', a->webhook_url.find("://") + 3))
    r.error(*t.get("webhook_url"), "webhook_url", "credentials do not belong in the URL (put a token in the path if the receiver needs one)");
  r.abs_path("tls_ca_file", &a->tls_ca_file);
  r.duration("min_interval", &a->min_interval);
  r.duration("retry_for", &a->retry_for);
  if (!a->email_to.empty() && (a->smtp_url.empty() || a->email_from.empty()))
    r.error(*t.get("email_to"), "email_to", "email alerts need smtp_url and email_from too");
  if (!a->smtp_user.empty() && a->smtp_password_file.empty())
    r.error(*t.get("smtp_user"), "smtp_user", "smtp_user needs smtp_password_file (the password never lives in the config)");
  r.reject_unknown();
}

void read_fleet(const toml::table& t, FleetSettings* f, Ctx& ctx) {
  TableReader r(t, "[fleet]", ctx);
  if (r.string_array("etcd", &f->etcd)) {
    if (f->etcd.empty()) r.error(*t.get("etcd"), "etcd", "needs at least one endpoint, such as \"http://10.0.0.5:2379\"");
    for (auto& e : f->etcd) {
      if (!e.starts_with("http://") && !e.starts_with("https://"))
        r.error(*t.get("etcd"), "etcd", "\"" + e + "\" must start with http:// or https://");
      else if (e.find('@') != std::string::npos)
        r.error(*t.get("etcd"), "etcd", "credentials do not belong in the URL: use etcd_user and etcd_password_file");
      while (e.size() > 8 && e.back() == '/') e.pop_back();
    }
  } else if (!t.get("etcd")) {
    ctx.error(t.source(), "missing required key \"etcd\" in [fleet] (the client URLs of the etcd members)");
  }
  auto name_ok = [](const std::string& s) {
    return !s.empty() && s.size() <= 64 && s[0] != '.' &&
           std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isalnum(c) || c == '.' || c == '_' || c == '-'; });
  };
  if (r.string("name", &f->name, true) && !name_ok(f->name))
    r.error(*t.get("name"), "name", "\"" + f->name + "\": letters, digits, '.', '_' and '-' only, at most 64");
  if (r.string("host", &f->host) && !name_ok(f->host))
    r.error(*t.get("host"), "host", "\"" + f->host + "\": letters, digits, '.', '_' and '-' only, at most 64");
  if (f->host.empty()) {
    char buf[256] = {};
    gethostname(buf, sizeof buf - 1);
    f->host = buf;
  }
  r.duration("lease_ttl", &f->lease_ttl);
  r.duration("unreachable_alert", &f->unreachable_alert);
  if (f->lease_ttl < base::Millis(2000))
    r.error(*t.get("lease_ttl"), "lease_ttl", base::format_duration(f->lease_ttl) + " is too short: at least 2s (etcd's leases count in seconds)");
  r.string("etcd_user", &f->etcd_user);
  r.abs_path("etcd_password_file", &f->etcd_password_file);
  r.abs_path("etcd_ca_file", &f->etcd_ca_file);
  r.abs_path("etcd_cert_file", &f->etcd_cert_file);
  r.abs_path("etcd_key_file", &f->etcd_key_file);
  if (!f->etcd_user.empty() && f->etcd_password_file.empty())
    r.error(*t.get("etcd_user"), "etcd_user", "etcd_user needs etcd_password_file (the password never lives in the config)");
  if (f->etcd_cert_file.empty() != f->etcd_key_file.empty())
    r.error(*t.get(f->etcd_cert_file.empty() ? "etcd_key_file" : "etcd_cert_file"), f->etcd_cert_file.empty() ? "etcd_key_file" : "etcd_cert_file",
            "a client certificate needs both etcd_cert_file and etcd_key_file");
  r.reject_unknown();
}

// fleet_waves = [1, "25%", "100%"]
void read_fleet_waves(TableReader& r, const toml::table& t, AppConfig* app) {
  const toml::node* n = r.get("fleet_waves");
  if (!n) return;
  const toml::array* arr = n->as_array();
  if (!arr || arr->empty()) return r.type_error(*n, "fleet_waves", "a non-empty array of host counts and percentages, such as [1, \"25%\", \"100%\"]");
  for (const toml::node& e : *arr) {
    FleetWave w;
    if (e.is_integer()) {
      w.count = static_cast<int>(std::clamp<int64_t>(e.as_integer()->get(), -1, 100000));
      if (w.count < 1) return r.error(e, "fleet_waves", std::to_string(e.as_integer()->get()) + " hosts: a wave has at least 1");
    } else if (e.is_string()) {
      const std::string& s = e.as_string()->get();
      char* end = nullptr;
      long v = s.size() > 1 && s.back() == '%' ? std::strtol(s.c_str(), &end, 10) : 0;
      if (!end || *end != '%' || v < 1 || v > 100)
        return r.error(e, "fleet_waves", "\"" + s + "\": a percentage is written \"25%\" (1% to 100%)");
      w.count = static_cast<int>(v);
      w.percent = true;
    } else {
      return r.type_error(e, "fleet_waves", "a host count (1) or a percentage (\"25%\")");
    }
    app->fleet_waves.push_back(w);
  }
  (void)t;
}

// Where an app's name and listen addresses were written, for the errors that compare apps.
struct AppSource {
  toml::source_region name_at;
  std::vector<toml::source_region> listen_at;
};

// health, health_host, health_interval, health_timeout, health_failures, bake.
void read_health(TableReader& r, const toml::table& t, AppConfig* app) {
  std::string health;
  if (r.string("health", &health)) {
    size_t sp = health.find(' ');
    std::string method = health.substr(0, sp), path = sp == std::string::npos ? "" : health.substr(sp + 1);
    bool clean_path = !path.empty() && path[0] == '/' &&
                      std::none_of(path.begin(), path.end(), [](unsigned char c) { return c <= ' ' || c == 0x7f; });
    if (method != "GET" && method != "HEAD")
      r.error(*t.get("health"), "health", "\"" + health + "\": the probe is \"GET /path\" or \"HEAD /path\"");
    else if (!clean_path)
      r.error(*t.get("health"), "health", "\"" + health + "\": the path must start with / and hold no spaces");
    else
      app->health_method = method, app->health_path = path;
    if (app->listen.empty())
      r.error(*t.get("health"), "health", "the probe goes through the app's first listen address, and it has none");
  }
  if (r.string("health_host", &app->health_host) &&
      std::any_of(app->health_host.begin(), app->health_host.end(), [](unsigned char c) { return c <= ' ' || c == 0x7f; }))
    r.error(*t.get("health_host"), "health_host", "\"" + app->health_host + "\" is not a host name");
  r.duration("health_interval", &app->health_interval);
  r.duration("health_timeout", &app->health_timeout);
  r.integer("health_failures", &app->health_failures, 1, 100);
  r.duration("bake", &app->bake);
  read_fleet_waves(r, t, app);
  auto window = app->health_interval * app->health_failures;
  if (t.get("bake") && !app->health_path.empty() && app->bake.count() > 0 && app->bake < window)
    r.error(*t.get("bake"), "bake", base::format_duration(app->bake) + " is shorter than health_interval x health_failures (" +
                                        base::format_duration(app->health_interval) + " x " + std::to_string(app->health_failures) +
                                        " = " + base::format_duration(window) + "): an unhealthy release could outlast its bake");
}

void read_app(const toml::table& t, AppConfig* app, AppSource* src, Ctx& ctx) {
  src->name_at = t.source();
  std::string where = "[[app]]";
  {
    // Read the name first so every later message can say which app it is about.
    const toml::node* n = t.get("name");
    if (n && n->is_string()) where = "[[app]] \"" + n->as_string()->get() + "\"";
  }
  TableReader r(t, where, ctx);

  if (r.string("name", &app->name, true)) {
    src->name_at = t.get("name")->source();
    if (!valid_app_name(app->name))
      r.error(*t.get("name"), "name", "\"" + app->name + "\" is not a valid app name (letters, digits, '.', '_', '-'; at most 64; not starting with '.')");
  }
  r.abs_path("source", &app->source);
  if (r.string("watch", &app->watch) && !valid_relative_path(app->watch))
    r.error(*t.get("watch"), "watch", "\"" + app->watch + "\" must be a path inside source (relative, no \"..\")");
  r.abs_path("git", &app->git);
  if (r.string("branch", &app->branch) &&
      (app->branch.empty() || app->branch.find_first_of(" ~^:?*[\\") != std::string::npos ||
       app->branch.find("..") != std::string::npos))
    r.error(*t.get("branch"), "branch", "\"" + app->branch + "\" is not a valid branch name");

  if (const toml::node* n = r.get("command", true)) {
    r.string_array("command", &app->command);
    if (n->is_array() && (app->command.empty() || app->command[0].empty()))
      r.error(*n, "command", "must name a program to run, e.g. [\"node\", \"app.js\"]");
  }
  r.integer("instances", &app->instances, 1, 1024);

  if (const toml::node* n = r.get("listen")) {
    std::vector<std::string> texts;
    if (r.string_array("listen", &texts)) {
      const toml::array& arr = *n->as_array();
      if (texts.size() > kMaxListen)
        r.error(*n, "listen", "at most " + std::to_string(kMaxListen) + " addresses per app (this has " +
                                  std::to_string(texts.size()) + ")");
      for (size_t i = 0; i < texts.size(); ++i) {
        std::string err;
        if (auto a = base::parse_listen(texts[i], &err)) {
          app->listen.push_back(*a);
          src->listen_at.push_back(arr[i].source());
        } else {
          r.error(arr[i], "listen", err);
        }
      }
    }
  }

  if (r.string("shim", &app->shim) && app->shim != "node" && !app->shim.empty())
    r.error(*t.get("shim"), "shim", "unknown shim \"" + app->shim + "\" (the agent ships \"node\")");
  std::string ready;
  if (r.string("ready", &ready)) {
    if (ready == "fd") app->ready = ReadyMode::Fd;
    else if (ready == "notify") app->ready = ReadyMode::Notify;
    else if (ready == "delay") app->ready = ReadyMode::Delay;
    else r.error(*t.get("ready"), "ready", "\"" + ready + "\" is not one of fd, notify, delay");
    if (app->shim == "node" && app->ready != ReadyMode::Fd)
      r.error(*t.get("ready"), "ready", "shim = \"node\" reports readiness on $READY_FD: use ready = \"fd\" or leave it out");
  }
  r.duration("ready_timeout", &app->ready_timeout);
  r.duration("ready_delay", &app->ready_delay);
  r.integer("max_surge", &app->max_surge, 1, 1024);
  std::string sig;
  if (r.string("drain_signal", &sig)) {
    if (auto s = base::parse_signal(sig)) app->drain_signal = *s;
    else r.error(*t.get("drain_signal"), "drain_signal", "unknown signal \"" + sig + "\" (e.g. \"SIGTERM\", \"SIGINT\", \"SIGQUIT\")");
  }
  r.duration("drain_timeout", &app->drain_timeout);
  bool never = false;
  base::Millis kill = app->kill_timeout.value_or(base::Millis{0});
  r.duration("kill_timeout", &kill, true, &never);
  app->kill_timeout = never ? std::nullopt : std::optional<base::Millis>(kill);
  if (app->kill_timeout && *app->kill_timeout < app->drain_timeout) {
    if (const toml::node* k = t.get("kill_timeout"))
      r.error(*k, "kill_timeout", base::format_duration(*app->kill_timeout) + " is shorter than drain_timeout (" +
                                      base::format_duration(app->drain_timeout) + "): the drain-stalled alert could never fire");
    else
      r.error(*t.get("drain_timeout"), "drain_timeout", base::format_duration(app->drain_timeout) +
              " is longer than kill_timeout (default " + base::format_duration(*app->kill_timeout) +
              "): the worker would be killed before the drain-stalled alert; set kill_timeout too");
  }
  read_health(r, t, app);
  r.size("max_memory", &app->max_memory);
  r.integer("keep_releases", &app->keep_releases, 1, 1000);
  r.string("build", &app->build);
  r.duration("build_timeout", &app->build_timeout);

  if (r.string("user", &app->user) && !app->user.empty() && !getpwnam(app->user.c_str()))
    r.error(*t.get("user"), "user", "user \"" + app->user + "\" does not exist on this host");
  if (r.string("group", &app->group) && !app->group.empty() && !getgrnam(app->group.c_str()))
    r.error(*t.get("group"), "group", "group \"" + app->group + "\" does not exist on this host");
  r.abs_path("env_file", &app->env_file);
  r.duration("settle", &app->settle);
  base::Millis poll{0};
  r.duration("poll_interval", &poll);
  if (poll.count() > 0) app->poll_interval = poll;

  if (r.string_array("inherit", &app->inherit))
    for (const auto& v : app->inherit)
      if (!valid_env_name(v)) r.error(*t.get("inherit"), "inherit", "\"" + v + "\" is not a variable name");
  for (const char* key : {"path_prepend", "path_append"}) {
    auto* list = std::string_view(key) == "path_prepend" ? &app->path_prepend : &app->path_append;
    if (r.string_array(key, list))
      for (const auto& p : *list)
        if (p.empty() || p[0] != '/')
          r.error(*t.get(key), key, "\"" + p + "\" must be an absolute directory");
  }
  if (r.string_array("linked_dirs", &app->linked_dirs)) {
    std::set<std::string> seen;
    for (const auto& d : app->linked_dirs)
      if (!valid_relative_path(d) || !seen.insert(d).second)
        r.error(*t.get("linked_dirs"), "linked_dirs",
                "\"" + d + "\" must be a distinct relative path inside the release (no \"..\")");
  }

  if (const toml::node* n = r.get("env")) {
    if (!n->is_table()) {
      r.type_error(*n, "env", "a table ([app.env])");
    } else {
      for (const auto& [k, v] : *n->as_table()) {
        std::string name(k.str());
        std::string value;
        if (v.is_string()) value = v.as_string()->get();
        else if (v.is_integer()) value = std::to_string(v.as_integer()->get());
        else if (v.is_boolean()) value = v.as_boolean()->get() ? "true" : "false";
        else if (v.is_floating_point()) {
          char buf[64];
          std::snprintf(buf, sizeof buf, "%.17g", v.as_floating_point()->get());
          value = buf;
        }
        else {
          ctx.error(v.source(), where + " env." + name + ": expected a string, number or boolean, found " + type_name(v.type()));
          continue;
        }
        if (!valid_env_name(name)) ctx.error(k.source(), where + " env: \"" + name + "\" is not a variable name");
        else if (is_agent_variable(name)) ctx.error(k.source(), where + " env: " + name + " is set by the agent for each worker and cannot be overridden");
        else if (name == "PATH") ctx.error(k.source(), where + " env: PATH is composed by the agent around the inherited global PATH; use path_prepend or path_append");
        else app->env.emplace_back(name, value);
      }
    }
  }
  r.reject_unknown();
  // Surge beyond the instance count just means "all at once".
  app->max_surge = std::min(app->max_surge, app->instances);
}

}  // namespace

bool parse_config(std::string_view text, const std::string& path, Config* out,
                  std::vector<ConfigError>* errors) {
  Ctx ctx{path, errors};
  size_t before = errors->size();
  *out = Config{};
  out->path = path;
  toml::table root;
  try {
    root = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    ctx.error(e.source(), std::string(e.description()));
    return false;
  }
  out->syntax_ok = true;

  TableReader r(root, "the file", ctx);
  if (const toml::node* n = r.get("agent")) {
    if (n->is_table()) read_agent(*n->as_table(), &out->agent, ctx);
    else r.type_error(*n, "agent", "a table ([agent])");
  }
  if (const toml::node* n = r.get("alerts")) {
    if (n->is_table()) read_alerts(*n->as_table(), &out->alerts, ctx);
    else r.type_error(*n, "alerts", "a table ([alerts])");
  }
  const toml::node* fleet_at = r.get("fleet");
  if (fleet_at) {
    out->fleet.emplace();
    if (fleet_at->is_table()) read_fleet(*fleet_at->as_table(), &*out->fleet, ctx);
    else r.type_error(*fleet_at, "fleet", "a table ([fleet])");
  }
  std::vector<AppSource> sources;
  if (const toml::node* n = r.get("app")) {
    if (const toml::array* arr = n->as_array(); arr && arr->is_array_of_tables()) {
      for (const toml::node& e : *arr) {
        AppConfig app;
        AppSource src;
        read_app(*e.as_table(), &app, &src, ctx);
        out->apps.push_back(std::move(app));
        sources.push_back(std::move(src));
      }
    } else {
      r.type_error(*n, "app", "an array of tables (write [[app]], with two brackets)");
    }
  }
  r.reject_unknown();
  if (out->apps.empty() && errors->size() == before)
    errors->push_back({path, 1, 1, "no [[app]] defined: the agent has nothing to run"});

  // Checks across apps: names are directories, addresses are bound once.
  for (size_t i = 0; i < out->apps.size(); ++i) {
    const AppConfig& a = out->apps[i];
    if (!a.fleet_waves.empty() && !out->fleet)
      ctx.error(sources[i].name_at, "app \"" + a.name + "\" has fleet_waves but the file has no [fleet] (which etcd, which fleet)");
    for (size_t j = 0; j < i; ++j) {
      const AppConfig& b = out->apps[j];
      if (!a.name.empty() && a.name == b.name)
        ctx.error(sources[i].name_at, "duplicate app name \"" + a.name + "\" (first defined on line " +
                                          std::to_string(sources[j].name_at.begin.line) + ")");
    }
    for (size_t k = 0; k < a.listen.size(); ++k) {
      for (size_t j = 0; j <= i; ++j) {
        const AppConfig& b = out->apps[j];
        size_t limit = (j == i) ? k : b.listen.size();
        for (size_t m = 0; m < limit; ++m) {
          if (!base::listen_conflicts(a.listen[k], b.listen[m])) continue;
          ctx.error(sources[i].listen_at[k],
                    "listen \"" + a.listen[k].text + "\" of app \"" + a.name + "\" overlaps \"" +
                        b.listen[m].text + "\" of app \"" + b.name + "\" (line " +
                        std::to_string(sources[j].listen_at[m].begin.line) + ")");
        }
      }
    }
  }
  return errors->size() == before;
}

bool load_config(const std::string& path, Config* out, std::vector<ConfigError>* errors) {
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    errors->push_back({path, 1, 1, "not a regular file"});
    return false;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    errors->push_back({path, 1, 1, std::string("cannot read: ") + std::strerror(errno)});
    return false;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  bool ok = parse_config(ss.str(), path, out, errors);
  out->text = ss.str();
  if (stat(path.c_str(), &st) == 0 && (st.st_mode & S_IWOTH)) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", st.st_mode & 07777);
    errors->push_back({path, 1, 1, std::string("writable by every user (mode ") + mode +
                                       "): anyone on this host could change what the agent runs; chmod o-w " + path});
    ok = false;
  }
  return ok;
}

bool is_agent_variable(std::string_view name) {
  static const char* const kNames[] = {"LISTEN_FDS",  "LISTEN_PID",      "LISTEN_FDNAMES", "READY_FD",
                                       "NOTIFY_SOCKET", "APP_NAME",      "APP_RELEASE",    "APP_VERSION",
                                       "APP_RELEASE_DIR", "APP_WORKER",  "AGENT_LISTEN",   "AGENT_DRAIN_SIGNAL"};
  return std::find(std::begin(kNames), std::end(kNames), name) != std::end(kNames);
}

}  // namespace agent
