#include "agent/fleet/keys.h"

#include <ctime>

namespace agent::fleet {

using json = nlohmann::json;

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '/') out += "%2F";
    else if (c == '%') out += "%25";
    else out += c;
  }
  return out;
}

std::string unescape(const std::string& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && s.compare(i, 3, "%2F") == 0) out += '/', i += 2;
    else if (s[i] == '%' && s.compare(i, 3, "%25") == 0) out += '%', i += 2;
    else out += s[i];
  }
  return out;
}

std::string now_iso() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

json parse(const std::string& s) {
  json j = json::parse(s, nullptr, false);
  return j.is_object() ? j : json::object();
}

// A field of a value read from etcd, of the type wanted or the default: whatever another
// program (or an operator with etcdctl) wrote there, it never throws.
std::string text(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

bool flag(const json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_boolean() && it->get<bool>();
}

std::string state_value(const std::string& state, const std::string& reason) {
  json j = {{"state", state}, {"time", now_iso()}};
  if (!reason.empty()) j["reason"] = reason;
  return j.dump();
}


VersionKeys read_version(const std::vector<KeyValue>& kvs, const std::string& vp) {
  VersionKeys v;
  for (const auto& kv : kvs) {
    if (!kv.key.starts_with(vp)) continue;
    std::string rest = kv.key.substr(vp.size());
    if (!v.first_revision || kv.create_revision < v.first_revision) v.first_revision = kv.create_revision;
    if (rest == "halt") v.halt = kv;
    else if (rest.starts_with("want/")) v.want.push_back({rest.substr(5), kv.create_revision});
    else if (rest.starts_with("slot/")) {
      json j = parse(kv.value);
      std::string host = text(j, "host");
      bool done = flag(j, "done");
      v.slots[std::atoi(rest.c_str() + 5)] = {host, done};
      if (done) ++v.done;
      else v.slot.push_back(host);
    }
    else if (rest.starts_with("state/")) v.state[rest.substr(6)] = parse(kv.value);
  }
  return v;
}

std::string state_of(const VersionKeys& v, const std::string& host) {
  auto it = v.state.find(host);
  return it == v.state.end() ? "" : text(it->second, "state");
}

std::string halt_text(const KeyValue& halt) {
  json h = parse(halt.value);
  return "halted by " + text(h, "host") + ": " + text(h, "reason");
}

// The hosts counted for the waves' percentages: every registered one, and every one that
// took part in this version (done, holding or waiting), alive now or not, so that a done host
// whose agent stopped does not shrink the waves under those still to go.
// The hosts of alive/<host> keys read under `prefix` + "alive/".
std::set<std::string> hosts_of(const std::vector<KeyValue>& alive, const std::string& alive_prefix) {
  std::set<std::string> up;
  for (const auto& kv : alive) up.insert(kv.key.substr(alive_prefix.size()));
  return up;
}

WaveView view_of(const VersionKeys& v, const std::set<std::string>& alive) {
  WaveView view;
  std::set<std::string> hosts = alive;
  for (const auto& [n, slot] : v.slots) hosts.insert(slot.first);
  for (const auto& w : v.want) hosts.insert(w.host);
  view.hosts = static_cast<int>(hosts.size());
  view.done = v.done;
  view.holding = v.slot;
  for (const auto& w : v.want)
    if (std::find(v.slot.begin(), v.slot.end(), w.host) == v.slot.end()) view.waiting.push_back(w);
  return view;
}

}  // namespace agent::fleet
