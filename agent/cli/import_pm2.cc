// PM2 ecosystem file -> agent.toml (import_pm2.h). Two steps: JSON5 is rewritten into plain JSON
// (json5.h), so that a syntax error points into the user's file; then each app is mapped key by
// key onto the agent's config (docs/reference.md "Config keys").
#include "agent/cli/import_pm2.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <optional>
#include <set>

#include <nlohmann/json.hpp>

#include "agent/cli/json5.h"

namespace agent {
namespace {

using Json = nlohmann::ordered_json;  // keeps the file's key order: the comments follow it
constexpr size_t npos = std::string::npos;

// ---- TOML text -------------------------------------------------------------------------------

std::string toml_str(const std::string& s) {
  std::string o = "\"";
  char hex[8];
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    if (c >= 0x20 && c != 0x7f) o += static_cast<char>(c);
    else o += c == '\n' ? "\\n" : c == '\t' ? "\\t" : (std::snprintf(hex, sizeof hex, "\\u%04X", c), hex);
  }
  return o + "\"";
}

std::string toml_array(const std::vector<std::string>& v) {
  std::string o = "[";
  for (size_t i = 0; i < v.size(); ++i) o += (i ? ", " : "") + toml_str(v[i]);
  return o + "]";
}

// A PM2 value on one line, as JSON (escaped: safe in a comment), cut short when long.
std::string shown(const Json& v) {
  std::string s = v.dump();
  size_t cut = 57;
  while (s.size() > 60 && cut > 0 && (s[cut] & 0xC0) == 0x80) --cut;  // not inside a UTF-8 sequence
  return s.size() > 60 ? s.substr(0, cut) + "..." : s;
}

// "# text", wrapped at about 100 columns.
void comment(std::vector<std::string>* lines, const std::string& text) {
  std::string line = "#", word;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] != ' ') { word += text[i]; continue; }
    if (line.size() + 1 + word.size() > 100 && line.size() > 4) lines->push_back(line), line = "#  ";
    if (!word.empty()) line += " " + word;
    word.clear();
  }
  lines->push_back(line);
}

// ---- PM2 values ------------------------------------------------------------------------------

// A whole number, as PM2 takes them: 14, 14.0 or "14".
std::optional<long long> whole(const Json& v) {
  long long n = 0;
  if (v.is_number_integer()) return v.get<long long>();
  if (v.is_number_float() && std::abs(v.get<double>()) < 1e15 && v.get<double>() == std::floor(v.get<double>()))
    return static_cast<long long>(v.get<double>());
  if (!v.is_string()) return std::nullopt;
  const std::string& s = v.get_ref<const std::string&>();
  auto r = std::from_chars(s.data(), s.data() + s.size(), n);
  return r.ec == std::errc() && r.ptr == s.data() + s.size() ? std::optional<long long>(n) : std::nullopt;
}

// max_memory_restart, bytes or "200K", "500M", "1G" -> the agent's size text ("500M").
std::optional<std::string> size_text(const Json& v) {
  std::string s = v.is_string() ? v.get<std::string>() : v.is_number_integer() ? v.dump() : "";
  char unit = s.empty() || std::isdigit(static_cast<unsigned char>(s.back())) ? 0 : static_cast<char>(std::toupper(s.back()));
  if (unit) s.pop_back();
  auto n = whole(Json(s));
  if (!n || *n <= 0 || (unit && unit != 'K' && unit != 'M' && unit != 'G')) return std::nullopt;
  if (unit) return std::to_string(*n) + unit;
  for (int shift : {30, 20, 10})
    if (*n % (1LL << shift) == 0) return std::to_string(*n >> shift) + "KMG"[shift / 10 - 1];
  return std::to_string((*n + 1023) >> 10) + "K";  // the agent wants a unit: up to the next KiB
}

std::string ms_text(long long ms) { return ms % 1000 ? std::to_string(ms) + "ms" : std::to_string(ms / 1000) + "s"; }

// args, node_args: an array, or one string split on blanks ('quoted' and "quoted" kept whole).
std::vector<std::string> arg_list(const Json& v) {
  std::vector<std::string> out;
  if (v.is_array()) {
    for (const auto& e : v) out.push_back(e.is_string() ? e.get<std::string>() : e.dump());
    return out;
  }
  std::string s = v.is_string() ? v.get<std::string>() : v.dump(), word;
  bool in_word = false;
  char quote = 0;
  for (char c : s) {
    if (quote && c == quote) quote = 0;
    else if (quote) word += c;
    else if (c == '"' || c == '\'') quote = c, in_word = true;
    else if (!std::isspace(static_cast<unsigned char>(c))) word += c, in_word = true;
    else if (in_word) out.push_back(word), word.clear(), in_word = false;
  }
  if (in_word) out.push_back(word);
  return out;
}

std::string env_value(const Json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); }  // as PM2 does

bool env_name(const std::string& n) {
  return !n.empty() && !std::isdigit(static_cast<unsigned char>(n[0])) &&
         std::all_of(n.begin(), n.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; });
}

// Set by the agent for each worker (config.cc is_agent_variable): no config may supply them.
bool agent_variable(const std::string& n) {
  static const std::set<std::string> kNames = {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "READY_FD", "NOTIFY_SOCKET",
      "APP_NAME", "APP_RELEASE", "APP_VERSION", "APP_RELEASE_DIR", "APP_WORKER", "AGENT_LISTEN", "AGENT_DRAIN_SIGNAL"};
  return kNames.count(n) > 0;
}

// PM2 keys with no agent key, and what their comment says instead.
const char* reason_for(const std::string& key) {
  static const std::pair<std::set<std::string>, const char*> kReasons[] = {
      {{"exec_mode"}, "not needed: the agent runs `instances` separate workers sharing the listen sockets it holds"},
      {{"watch", "ignore_watch", "ignoreWatch", "watch_options", "watch_delay"},
       "the agent does not restart on file changes; it deploys a new release when source/<watch> changes (`watch`: "
       "package.json by default, or a marker such as REVISION that the installer writes last)"},
      {{"merge_logs", "combine_logs", "log_date_format", "error_file", "err_file", "out_file", "log_file", "output",
        "error", "log", "log_type", "time", "disable_logs"},
       "the agent writes all workers' stdout and stderr, each line stamped with time, slot, pid and stream, to "
       "<log_dir>/<app>/app.log ([agent] log_dir), rotated at log_max_size/log_max_files; see `agent logs APP`"},
      {{"pid_file", "pid"}, "the agent keeps the workers' pids itself: `agent status`"},
      {{"autorestart", "max_restarts", "min_uptime", "restart_delay", "exp_backoff_restart_delay", "stop_exit_codes"},
       "the agent always restarts a crashed worker, with exponential backoff, and alerts on a crash loop"},
      {{"cron_restart"}, "no scheduled restarts: a cron job or systemd timer running `agent reload APP` does it without downtime"},
      {{"wait_ready"}, "with shim = \"node\" a worker is ready when it listens; an app that says so itself writes a newline "
                       "to $READY_FD (ready = \"fd\")"},
      {{"shutdown_with_message", "kill_retry_time", "treekill"}, "the agent sends drain_signal, then SIGKILL after kill_timeout"},
      {{"increment_var", "instance_var"}, "each worker gets APP_WORKER (its slot, 0 to instances-1) instead"},
      {{"filter_env"}, "the agent passes on only the variables in `inherit` (default PATH, LANG, TZ), never its whole environment"},
      {{"namespace", "append_env_to_name"}, "the agent has no namespaces: its commands take an app's name"},
      {{"version"}, "the agent reads each release's version from source/package.json or the `watch` marker"},
  };
  for (const auto& [keys, why] : kReasons)
    if (keys.count(key)) return why;
  return "not carried over (unknown to the agent)";
}

// ---- the apps --------------------------------------------------------------------------------

struct Converter {
  std::vector<std::string>* warnings;
  std::set<std::string> names;  // app names so far: they must differ
  std::set<long long> ports;    // ports given to `listen` so far: one app each
  std::string toml;

  bool app(const Json& a, const std::string& at, size_t index, std::string* err);
};

bool Converter::app(const Json& a, const std::string& at, size_t index, std::string* err) {
  if (!a.is_object()) return *err = at + " is not an object", false;
  auto str = [&](const char* k) { return a.contains(k) && a[k].is_string() ? a[k].get<std::string>() : std::string(); };
  std::string script = str("script"), cwd = str("cwd"), name = str("name"), given = name;
  if (script.empty()) return *err = at + (name.empty() ? "" : " (" + Json(name).dump() + ")") + ": no \"script\"", false;

  std::vector<std::string> lines, env_lines;  // the app's keys, and its [app.env], with their comments
  std::set<std::string> used = {"name", "script", "cwd", "interpreter", "exec_interpreter", "node_args",
                                "interpreter_args", "args", "kill_signal"};
  auto take = [&](const char* k) -> const Json* { return a.contains(k) ? (used.insert(k), &a[k]) : nullptr; };
  auto set = [&](const std::string& key, const std::string& value, const std::string& why = "") {
    if (!why.empty()) comment(&lines, why);
    lines.push_back(key + " = " + value);
  };
  auto note = [&](std::vector<std::string>* to, const std::string& key, const Json* v, const std::string& why) {
    comment(to, "pm2 " + Json(key).dump() + (v ? " = " + shown(*v) : "") + ": " + why);
    warnings->push_back("app " + name + ": pm2 " + Json(key).dump() + ": " + why);
  };

  // The interpreter: PM2's for the script's extension, else node; a bare name ("npm") runs as it is.
  std::string interp = str("interpreter").empty() ? str("exec_interpreter") : str("interpreter");
  std::string base = script.substr(script.rfind('/') + 1), ext = base.substr(std::min(base.rfind('.'), base.size()));
  const char* const kByExt[][2] = {{".py", "python3"}, {".sh", "bash"}, {".rb", "ruby"}, {".php", "php"}, {".pl", "perl"}};
  for (const auto& [e, i] : kByExt)
    if (interp.empty() && ext == e) interp = i;
  if (interp.empty()) interp = ext.empty() && script.find('/') == npos ? "none" : "node";
  std::string program = interp.substr(interp.rfind('/') + 1);
  bool node = program == "node" || program == "nodejs";

  // The name: the script's when missing (as PM2 does), made a valid directory name.
  if (name.empty()) name = base.substr(0, base.size() - ext.size());
  for (char& c : name)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != '-') c = '-';
  name = name.empty() || name[0] == '.' ? "app" + std::to_string(index + 1) : name.substr(0, 64);
  if (!names.insert(name).second) return *err = at + ": a second app named " + Json(name).dump(), false;
  set("name", toml_str(name), given == name ? "" : given.empty() ? "no \"name\" in pm2: the script's, as PM2 does"
                                                  : "from pm2 name " + Json(given).dump() + ": letters, digits, '.', '_', '-' only");

  if (!cwd.empty() && cwd[0] == '/') {
    set("source", toml_str(cwd), "from pm2 cwd: each release is staged from here (source/package.json is watched); "
                                 "workers run in their release's directory");
    if (script.starts_with(cwd + "/")) script.erase(0, cwd.size() + 1);
  } else {
    if (!cwd.empty()) note(&lines, "cwd", &a["cwd"], "relative: `source` is an absolute directory");
    comment(&lines, "fill in source: the directory the app is installed in (PM2 has no such key); until then, deploy "
                    "with `agent deploy " + name + " --from DIR`");
    lines.push_back("# source = " + toml_str("/opt/" + name));
  }

  std::vector<std::string> command;
  if (interp != "none") command.push_back(interp);
  for (const char* k : {"node_args", "interpreter_args"})
    for (auto& s : a.contains(k) && interp != "none" ? arg_list(a[k]) : std::vector<std::string>()) command.push_back(s);
  command.push_back(script);
  for (auto& s : a.contains("args") ? arg_list(a["args"]) : std::vector<std::string>()) command.push_back(s);
  set("command", toml_array(command), script[0] == '/' ? "an absolute script runs that file, not its copy in each "
                                                         "release: make it relative to source" : "");

  if (const Json* v = take("instances"); v && whole(*v) >= 1 && whole(*v) <= 1024) {
    set("instances", std::to_string(*whole(*v)));
  } else if (v) {
    note(&lines, "instances", v, "the agent runs a fixed number of workers (1 to 1024), not one per CPU: write the "
                                 "number you want (nproc on this host); 1 until then");
    set("instances", "1");
  }

  // The environment, and its PORT: the socket the agent holds for the workers.
  std::optional<long long> port;
  if (const Json* env = take("env"); env && !env->is_object()) note(&lines, "env", env, "not a table of variables");
  else if (env)
    for (const auto& [k, v] : env->items()) {
      const char* why = !env_name(k) ? "not a variable name" : agent_variable(k) ? "set by the agent for each worker"
                        : k == "PATH" ? "the agent builds PATH: use path_prepend or path_append" : v.is_null() ? "no value" : "";
      if (*why) { note(&env_lines, "env." + k, &v, why); continue; }
      if (k.starts_with("PM2_")) comment(&env_lines, k + " is read by PM2, not by the app (kept): the agent's "
                                                        "drain_timeout and kill_timeout say when a worker is stopped");
      if (k == "PORT") port = whole(v);
      env_lines.push_back(k + " = " + toml_str(env_value(v)));
    }
  if (node && port > 0 && port < 65536 && ports.insert(*port).second) {
    set("shim", "\"node\"", "an unmodified Node app: the agent's shim hands it the listen socket, counts it ready "
                            "when it listens, and drains it on the drain signal");
    set("listen", toml_array({"0.0.0.0:" + std::to_string(*port)}), "from env PORT (kept): bound once by the agent, "
        "shared by every worker; add \"[::]:" + std::to_string(*port) + "\" for IPv6");
  } else {
    set("ready", "\"delay\"", std::string(node ? "no PORT in env (or another app has it): the agent does not know the port. "
        "Add listen = [\"0.0.0.0:PORT\"] and shim = \"node\" for a shared socket, readiness and drain; until then a"
        : "not a Node app: a") + " worker counts as ready after ready_delay (1s)");
  }

  if (const Json* v = take("max_memory_restart")) {
    if (auto s = size_text(*v)) set("max_memory", toml_str(*s), "a worker past this RSS is replaced without downtime");
    else note(&lines, "max_memory_restart", v, "not a size (bytes, \"200K\", \"500M\", \"1G\"): set max_memory by hand");
  }
  if (const Json* v = take("listen_timeout")) {
    if (whole(*v) > 0) set("ready_timeout", toml_str(ms_text(*whole(*v))), "from pm2 listen_timeout (ms)");
    else note(&lines, "listen_timeout", v, "not a number of milliseconds: set ready_timeout by hand");
  }
  std::string sig = a.contains("kill_signal") ? str("kill_signal") : "SIGINT";
  if (std::set<std::string>{"SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"}.count(sig))
    set("drain_signal", toml_str(sig), a.contains("kill_signal") ? "from pm2 kill_signal"
        : "PM2 stops a worker with SIGINT (the agent's default is SIGTERM): kept for apps that handle it");
  else note(&lines, "kill_signal", &a["kill_signal"], "not a signal the agent drains with: set drain_signal by hand");
  if (const Json* v = take("kill_timeout")) {
    if (whole(*v) > 0 && whole(*v) < 10000)
      set("drain_timeout", toml_str(ms_text(*whole(*v))), "down from 10s: drain_timeout must not pass kill_timeout");
    if (whole(*v) > 0) set("kill_timeout", toml_str(ms_text(*whole(*v))), "from pm2 kill_timeout (ms): SIGKILL this long after the drain signal");
    else note(&lines, "kill_timeout", v, "not a number of milliseconds: set kill_timeout by hand");
  }
  std::set<std::string> accounts;  // user or uid, group or gid: the first one given
  for (const char* k : {"user", "uid", "group", "gid"})
    if (const Json* v = take(k)) {
      std::string key = k[0] == 'u' ? "user" : "group";
      if (v->is_string() && !v->get<std::string>().empty() && !whole(*v) && accounts.insert(key).second)
        set(key, toml_str(v->get<std::string>()), "must exist on this host; workers run as it when the agent is root");
      else note(&lines, k, v, accounts.count(key) ? key + " is set already" : "set " + key + " to an account name");
    }

  // Every other key: a comment each, in the file's order; then PM2's other environments.
  for (const char* k : {"name", "cwd", "interpreter", "exec_interpreter"})
    if (a.contains(k) && !a[k].is_string()) note(&lines, k, &a[k], "not a string");
  for (const auto& [k, v] : a.items())
    if (!used.count(k) && !(k.starts_with("env_") && v.is_object())) note(&lines, k, &v, reason_for(k));
  for (const auto& [k, v] : a.items()) {
    if (used.count(k) || !k.starts_with("env_") || !v.is_object()) continue;
    note(&lines, k, nullptr, "PM2 environment '" + k.substr(4) + "' (pm2 start --env " + k.substr(4) + "): the agent "
                             "has one environment per app; merge into [app.env] or use env_file. It held:");
    for (const auto& [ek, ev] : v.items())
      lines.push_back("#     " + (env_name(ek) ? ek : Json(ek).dump()) + " = " + toml_str(env_value(ev)));
  }

  toml += "\n[[app]]\n";
  for (const auto& l : lines) toml += l + "\n";
  if (!env_lines.empty()) toml += "[app.env]\n";
  for (const auto& l : env_lines) toml += l + "\n";
  return true;
}

bool convert(const std::string& text, const std::string& file, Pm2Import* out, std::string* err) {
  std::string json;
  std::vector<size_t> from;
  if (!json5_to_json(text, file, &json, &from, err)) return false;
  // An ecosystem file is a few levels deep; thousands would only exhaust the stack of the
  // recursive copies and dumps below (a crash is no answer to bad input).
  constexpr int kMaxDepth = 64;
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < json.size(); ++i) {
    char c = json[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxDepth)
        return *err = where(text, file, i < from.size() ? from[i] : text.size()) + ": nested deeper than " + std::to_string(kMaxDepth) +
                      " levels: not a PM2 ecosystem file",
               false;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  Json root;
  try {
    root = Json::parse(json);
  } catch (const Json::parse_error& e) {
    // "[json.exception.parse_error.101] parse error at line 1, column 5: syntax error while parsing X - why"
    std::string msg = e.what();
    msg = msg.find(" - ") != npos ? msg.substr(msg.find(" - ") + 3) : msg.substr(msg.find(": ") + 2);
    size_t b = e.byte > 0 ? e.byte - 1 : 0;  // the token's last byte: back to its first
    if (b < json.size() && json[b] == '"')
      do b--; while (b > 0 && (json[b] != '"' || json[b - 1] == '\\'));
    while (b > 0 && b < json.size() && ident_char(json[b]) && ident_char(json[b - 1])) b--;
    return *err = where(text, file, b < from.size() ? from[b] : text.size()) + ": " + msg, false;
  }

  Json apps;  // PM2 takes {"apps": [...]}, a bare array, or one app
  if (root.is_array()) apps = root;
  else if (root.is_object() && root.contains("apps")) apps = root["apps"].is_object() ? Json::array({root["apps"]}) : root["apps"];
  else if (root.is_object() && root.contains("script")) apps = Json::array({root});
  if (!apps.is_array() || apps.empty())
    return *err = file + ": no apps (PM2 takes {\"apps\": [...]}, an array of apps, or one app with \"script\")", false;

  std::string file_shown;
  for (char c : file) file_shown += static_cast<unsigned char>(c) < 0x20 ? '?' : c;  // one line in a comment
  std::vector<std::string> head;
  comment(&head, "agent.toml generated from " + file_shown + " by `agent import-pm2`. Each \"# pm2\" line is a PM2 key "
                 "that was not carried over, with the reason or what to do instead.");
  comment(&head, "To fill in: `source` where it is left out (PM2 has no such key), and `listen` where no PORT was "
                 "found. The [agent] paths are the agent's defaults. Then: agent check -c FILE");
  for (const auto& [k, v] : root.items()) {
    if (!root.is_object() || !root.contains("apps") || k == "apps") continue;
    std::string why = k != "deploy" ? reason_for(k) : "the agent deploys on each host, from `source` (an RPM drop) or a "
                                                      "`git push` to the app's `git` repository; for many hosts see [fleet]";
    comment(&head, "pm2 " + Json(k).dump() + " = " + shown(v) + ": " + why);
    out->warnings.push_back("pm2 " + Json(k).dump() + ": " + why);
  }
  Converter conv{&out->warnings, {}, {}, {}};
  for (size_t i = 0; i < apps.size(); ++i)
    if (!conv.app(apps[i], file + ": app " + std::to_string(i + 1), i, err)) return false;

  for (const auto& l : head) out->toml += l + "\n";
  out->toml += "\n[agent]\nstate_dir = \"/var/lib/agent\"\nlog_dir = \"/var/log/agent\"\n"
               "control_socket = \"/run/agent/agent.sock\"\n" + conv.toml;
  return true;
}

}  // namespace

bool import_pm2(const std::string& text, const std::string& file_name, Pm2Import* out, std::string* err) {
  *out = Pm2Import{};
  try {
    if (convert(text, file_name, out, err)) return true;
  } catch (const std::exception& e) {
    *err = file_name + ": " + e.what();
  }
  *out = Pm2Import{};
  return false;
}

}  // namespace agent
