#include "agent/fleet/etcd.h"

#include <charconv>
#include <chrono>

#include "base/base64.h"
#include "base/curl.h"
#include "base/fs.h"

namespace agent::fleet {

namespace {

using base::curl::curl_easy_getinfo;
using base::curl::curl_easy_setopt;
using base::curl::curl_slist_append;
using base::curl::curl_slist_free_all;
using json = nlohmann::json;

constexpr long kConnectTimeoutS = 1;  // a member that does not answer a connect in 1 s is skipped
constexpr long kCallTimeoutS = 4;

// gRPC codes etcd answers with that mean "this member cannot serve now, ask another".
bool try_another_member(int code) { return code == 14 /* unavailable */ || code == 4 /* deadline */ || code == 2 /* unknown */; }

std::string b64(const std::string& s) { return base::base64_encode(s); }

std::int64_t as_int(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return 0;
  if (it->is_string()) {
    const std::string& s = it->get_ref<const std::string&>();
    std::int64_t v = 0;
    auto r = std::from_chars(s.data(), s.data() + s.size(), v);
    return r.ec == std::errc() ? v : 0;
  }
  if (it->is_number_integer()) return it->get<std::int64_t>();
  return 0;
}

std::string unb64(const json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) return "";
  return base::base64_decode(it->get<std::string>()).value_or("");
}

KeyValue key_value(const json& kv) {
  KeyValue out;
  out.key = unb64(kv, "key");
  out.value = unb64(kv, "value");
  out.create_revision = as_int(kv, "create_revision");
  out.mod_revision = as_int(kv, "mod_revision");
  out.lease = as_int(kv, "lease");
  return out;
}

size_t collect(char* data, size_t size, size_t n, void* userp) {
  auto* sink = static_cast<std::pair<std::string*, const std::function<bool(std::string&)>*>*>(userp);
  sink->first->append(data, size * n);
  if (*sink->second && !(*sink->second)(*sink->first)) return 0;  // the watcher has seen enough: end the transfer
  return size * n;
}

}  // namespace

std::string prefix_end(const std::string& prefix) {
  std::string end = prefix;
  while (!end.empty()) {
    auto& c = reinterpret_cast<unsigned char&>(end.back());
    if (c < 0xff) {
      ++c;
      return end;
    }
    end.pop_back();
  }
  return std::string(1, '\0');  // every key
}

Etcd::Etcd(EtcdSettings settings) : settings_(std::move(settings)) {}

Etcd::~Etcd() = default;

void Etcd::abort() { set_deadline(std::chrono::steady_clock::now()); }

void Etcd::set_deadline(std::chrono::steady_clock::time_point t) { abort_at_ = t.time_since_epoch().count(); }

std::string Etcd::endpoint() const {
  return settings_.endpoints.empty() ? "" : settings_.endpoints[preferred_ % settings_.endpoints.size()];
}

bool Etcd::post(const std::string& url, const std::string& body, std::string* reply, long* status, std::string* err,
                long transfer_timeout_s, const std::function<bool(std::string&)>& on_data) {
  if (!base::curl::open(err)) return false;
  if (!easy_) easy_ = std::make_unique<base::curl::Easy>(kConnectTimeoutS, transfer_timeout_s);
  base::curl::Easy& c = *easy_;
  if (!c.h) return *err = "curl_easy_init failed", false;
  curl_easy_setopt(c.h, CURLOPT_TIMEOUT, transfer_timeout_s);
  curl_easy_setopt(c.h, CURLOPT_URL, url.c_str());
  if (c.list) curl_slist_free_all(c.list);
  c.list = curl_slist_append(nullptr, "Content-Type: application/json");
  std::string auth;
  if (!token_.empty()) {
    auth = "Authorization: " + token_;
    c.list = curl_slist_append(c.list, auth.c_str());
  }
  curl_easy_setopt(c.h, CURLOPT_HTTPHEADER, c.list);
  curl_easy_setopt(c.h, CURLOPT_POSTFIELDS, body.c_str());
  curl_easy_setopt(c.h, CURLOPT_POSTFIELDSIZE, static_cast<long>(body.size()));
  if (!settings_.ca_file.empty()) curl_easy_setopt(c.h, CURLOPT_CAINFO, settings_.ca_file.c_str());
  if (!settings_.cert_file.empty()) curl_easy_setopt(c.h, CURLOPT_SSLCERT, settings_.cert_file.c_str());
  if (!settings_.key_file.empty()) curl_easy_setopt(c.h, CURLOPT_SSLKEY, settings_.key_file.c_str());
  std::pair<std::string*, const std::function<bool(std::string&)>*> sink{reply, &on_data};
  curl_easy_setopt(c.h, CURLOPT_WRITEFUNCTION, collect);
  curl_easy_setopt(c.h, CURLOPT_WRITEDATA, &sink);
  // The path names the call, never the body (a password may be in it).
  if (!c.perform(url, &abort_at_, err)) return false;
  curl_easy_getinfo(c.h, CURLINFO_RESPONSE_CODE, status);
  return true;
}

bool Etcd::authenticate(std::string* err) {
  std::string password;
  if (!settings_.password_file.empty() && !base::read_file(settings_.password_file, &password, err))
    return *err = "etcd_password_file: " + *err, false;
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  token_.clear();
  // The password goes into the request body only: errors name the URL, never the body.
  json reply;
  if (!call("/v3/auth/authenticate", {{"name", settings_.user}, {"password", password}}, &reply, err))
    return *err = "authenticating as " + settings_.user + ": " + *err, false;
  token_ = reply.contains("token") && reply["token"].is_string() ? reply["token"].get<std::string>() : "";
  if (token_.empty()) return *err = "authenticating as " + settings_.user + ": etcd gave no token", false;
  return true;
}

bool Etcd::call(const std::string& path, const json& body, json* reply, std::string* err) {
  if (settings_.endpoints.empty()) return *err = "no etcd endpoints", false;
  if (!settings_.user.empty() && token_.empty() && path != "/v3/auth/authenticate" && !authenticate(err)) return false;
  std::string text = body.dump(), errors;
  bool reauthenticated = false;
  size_t n = settings_.endpoints.size();
  for (size_t i = 0; i < n; ++i) {
    std::int64_t deadline = abort_at_.load();
    if (deadline && std::chrono::steady_clock::now().time_since_epoch().count() >= deadline) {
      errors += (errors.empty() ? "" : "; ") + std::string("given up: the agent is stopping");
      break;
    }
    size_t at = (preferred_ + i) % n;
    const std::string& ep = settings_.endpoints[at];
    std::string raw, e;
    long status = 0;
    if (!post(ep + path, text, &raw, &status, &e, kCallTimeoutS)) {
      errors += (errors.empty() ? "" : "; ") + e;
      continue;
    }
    json j = json::parse(raw, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      std::string head = raw.substr(0, 120);
      for (char& c : head)
        if (c == '\n' || c == '\r') c = ' ';
      errors += (errors.empty() ? "" : "; ") + ep + path + ": HTTP " + std::to_string(status) + ", not JSON: " + head;
      continue;
    }
    if (j.contains("error") || status != 200) {
      int code = j.contains("code") && j["code"].is_number_integer() ? j["code"].get<int>() : 0;
      std::string message = j.contains("message") && j["message"].is_string() ? j["message"].get<std::string>()
                            : j.contains("error") && j["error"].is_string() ? j["error"].get<std::string>()
                                                                           : "HTTP " + std::to_string(status);
      if (code == 16 && !settings_.user.empty() && !reauthenticated && path != "/v3/auth/authenticate") {
        // The token expired (or the member restarted): once more with a new one.
        reauthenticated = true;
        if (!authenticate(err)) return false;
        --i;
        continue;
      }
      if (try_another_member(code) || (code == 0 && status != 200)) {
        errors += (errors.empty() ? "" : "; ") + ep + ": " + message;
        continue;
      }
      return *err = ep + path + ": " + message, false;
    }
    preferred_ = at;
    *reply = std::move(j);
    return true;
  }
  *err = "no etcd member answered (" + errors + ")";
  return false;
}

bool Etcd::range_prefix(const std::string& prefix, std::vector<KeyValue>* out, std::int64_t* revision, std::string* err) {
  json reply;
  if (!call("/v3/kv/range", {{"key", b64(prefix)}, {"range_end", b64(prefix_end(prefix))}}, &reply, err)) return false;
  out->clear();
  if (auto it = reply.find("kvs"); it != reply.end() && it->is_array())
    for (const auto& kv : *it) out->push_back(key_value(kv));
  if (revision) *revision = reply.contains("header") ? as_int(reply["header"], "revision") : 0;
  return true;
}

bool Etcd::get(const std::string& key, KeyValue* out, bool* found, std::string* err) {
  json reply;
  if (!call("/v3/kv/range", {{"key", b64(key)}}, &reply, err)) return false;
  *found = false;
  if (auto it = reply.find("kvs"); it != reply.end() && it->is_array() && !it->empty()) {
    *out = key_value((*it)[0]);
    *found = true;
  }
  return true;
}

bool Etcd::put(const std::string& key, const std::string& value, std::int64_t lease, std::string* err) {
  json body = {{"key", b64(key)}, {"value", b64(value)}};
  if (lease) body["lease"] = std::to_string(lease);
  json reply;
  return call("/v3/kv/put", body, &reply, err);
}

bool Etcd::delete_key(const std::string& key, std::string* err) {
  json reply;
  return call("/v3/kv/deleterange", {{"key", b64(key)}}, &reply, err);
}

bool Etcd::delete_prefix(const std::string& prefix, std::string* err) {
  json reply;
  return call("/v3/kv/deleterange", {{"key", b64(prefix)}, {"range_end", b64(prefix_end(prefix))}}, &reply, err);
}

json Etcd::absent(const std::string& key) {
  return {{"key", b64(key)}, {"target", "CREATE"}, {"result", "EQUAL"}, {"create_revision", "0"}};
}

json Etcd::put_op(const std::string& key, const std::string& value, std::int64_t lease) {
  json put = {{"key", b64(key)}, {"value", b64(value)}};
  if (lease) put["lease"] = std::to_string(lease);
  return {{"request_put", put}};
}

json Etcd::delete_op(const std::string& key) { return {{"request_delete_range", {{"key", b64(key)}}}}; }

bool Etcd::txn(const json& compare, const json& success, const json& failure, bool* succeeded, std::string* err) {
  json body = json::object();
  if (!compare.empty()) body["compare"] = compare;
  if (!success.empty()) body["success"] = success;
  if (!failure.empty()) body["failure"] = failure;
  json reply;
  if (!call("/v3/kv/txn", body, &reply, err)) return false;
  *succeeded = reply.contains("succeeded") && reply["succeeded"].is_boolean() && reply["succeeded"].get<bool>();
  return true;
}

bool Etcd::lease_grant(std::int64_t ttl_s, std::int64_t* id, std::string* err) {
  json reply;
  if (!call("/v3/lease/grant", {{"TTL", std::to_string(ttl_s)}}, &reply, err)) return false;
  *id = as_int(reply, "ID");
  if (!*id) return *err = "etcd granted no lease", false;
  return true;
}

bool Etcd::lease_keepalive(std::int64_t id, std::int64_t* ttl_left, std::string* err) {
  json reply;
  if (!call("/v3/lease/keepalive", {{"ID", std::to_string(id)}}, &reply, err)) return false;
  *ttl_left = reply.contains("result") ? as_int(reply["result"], "TTL") : 0;
  return true;
}

bool Etcd::lease_revoke(std::int64_t id, std::string* err) {
  json reply;
  return call("/v3/lease/revoke", {{"ID", std::to_string(id)}}, &reply, err);
}

bool Etcd::watch(const std::string& prefix, std::int64_t from, const std::function<bool(std::int64_t)>& on_change,
                 std::string* err) {
  if (settings_.endpoints.empty()) return *err = "no etcd endpoints", false;
  if (!settings_.user.empty() && token_.empty() && !authenticate(err)) return false;
  json create = {{"key", b64(prefix)}, {"range_end", b64(prefix_end(prefix))}};
  if (from) create["start_revision"] = std::to_string(from);
  std::string body = json{{"create_request", create}}.dump();
  const std::string& ep = settings_.endpoints[preferred_ % settings_.endpoints.size()];
  bool stopped = false;
  // The gateway streams one JSON object per line: {"result":{"header":...,"events":[...]}}.
  auto on_data = [&](std::string& buf) {
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      json j = json::parse(buf.substr(0, nl), nullptr, false);
      buf.erase(0, nl + 1);
      if (j.is_discarded()) continue;
      if (j.contains("error")) return false;
      const json& r = j.contains("result") ? j["result"] : j;
      if (r.contains("canceled") && r["canceled"].is_boolean() && r["canceled"].get<bool>()) return false;
      std::int64_t rev = r.contains("header") ? as_int(r["header"], "revision") : 0;
      if (!on_change(rev)) {
        stopped = true;
        return false;
      }
    }
    return true;
  };
  std::string raw;
  long status = 0;
  bool ok = post(ep + "/v3/watch", body, &raw, &status, err, 0, on_data);
  if (stopped) return true;
  if (ok) *err = ep + "/v3/watch: the stream ended (HTTP " + std::to_string(status) + ")";
  preferred_ = (preferred_ + 1) % settings_.endpoints.size();  // the next attempt asks another member
  if (!settings_.user.empty()) token_.clear();                  // ... with a fresh token (it may have expired)
  return false;
}

}  // namespace agent::fleet
