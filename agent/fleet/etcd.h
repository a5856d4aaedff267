// A client of etcd v3's JSON gateway (/v3/kv/*, /v3/lease/*, /v3/watch, /v3/auth/*) over
// libcurl: no gRPC. Every call blocks, so it runs on the fleet's own threads, never on the
// event loop. Keys and values are plain strings here; the base64 of the wire stays inside.
//
// Endpoints are tried in turn: the one that answered last goes first, a member that refuses
// or times out makes the call go on to the next (one member down changes nothing). With a
// user, a token from /v3/auth/authenticate rides in the Authorization header, renewed once
// when etcd says it is no longer valid. The password is read from its file for each
// authentication and never reaches a log or an error message.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace base::curl {
struct Easy;
}

namespace agent::fleet {

struct EtcdSettings {
  std::vector<std::string> endpoints;  // "http://127.0.0.1:2379"
  std::string user, password_file, ca_file, cert_file, key_file;
};

struct KeyValue {
  std::string key, value;
  std::int64_t create_revision = 0, mod_revision = 0, lease = 0;
};

/// The end of the range holding every key that starts with `prefix` (etcd's range_end).
std::string prefix_end(const std::string& prefix);

class Etcd {
 public:
  explicit Etcd(EtcdSettings settings);
  ~Etcd();

  /// Every key under `prefix`, in key order, and the store's revision when it was read.
  bool range_prefix(const std::string& prefix, std::vector<KeyValue>* out, std::int64_t* revision, std::string* err);
  /// One key: found (true, *out set), absent (true, *found false), or an error.
  bool get(const std::string& key, KeyValue* out, bool* found, std::string* err);
  bool put(const std::string& key, const std::string& value, std::int64_t lease, std::string* err);
  bool delete_key(const std::string& key, std::string* err);
  bool delete_prefix(const std::string& prefix, std::string* err);

  /// A transaction: if every comparison holds, the `success` operations run, else `failure`.
  /// Build its parts with the helpers below. *succeeded says which.
  bool txn(const nlohmann::json& compare, const nlohmann::json& success, const nlohmann::json& failure, bool* succeeded,
           std::string* err);
  static nlohmann::json absent(const std::string& key);  // compare: create_revision == 0
  static nlohmann::json put_op(const std::string& key, const std::string& value, std::int64_t lease = 0);
  static nlohmann::json delete_op(const std::string& key);

  bool lease_grant(std::int64_t ttl_s, std::int64_t* id, std::string* err);
  /// Renews a lease: *ttl_left is 0 when etcd no longer knows it (it expired).
  bool lease_keepalive(std::int64_t id, std::int64_t* ttl_left, std::string* err);
  bool lease_revoke(std::int64_t id, std::string* err);

  /// Streams changes under `prefix` from revision `from` (0: from now), calling `on_change`
  /// for each batch of events, until it returns false, the stream breaks, or abort(). Returns
  /// why it ended in *err.
  bool watch(const std::string& prefix, std::int64_t from, const std::function<bool(std::int64_t revision)>& on_change,
             std::string* err);

  /// Makes a call in progress (or the next) return soon with an error; for shutting down.
  void abort();
  /// Calls in progress and later ones give up at `t` (steady clock).
  void set_deadline(std::chrono::steady_clock::time_point t);
  /// The endpoint that answered last.
  std::string endpoint() const;

 private:
  /// POSTs `body` to `path`, endpoint after endpoint; the reply's JSON in *reply.
  bool call(const std::string& path, const nlohmann::json& body, nlohmann::json* reply, std::string* err);
  bool post(const std::string& url, const std::string& body, std::string* reply, long* status, std::string* err,
            long transfer_timeout_s, const std::function<bool(std::string&)>& on_data = nullptr);
  bool authenticate(std::string* err);

  EtcdSettings settings_;
  // One handle for every call: libcurl keeps the connection to the member open between them
  // (a grant is then one round trip, not a TCP handshake and one).
  std::unique_ptr<base::curl::Easy> easy_;
  size_t preferred_ = 0;
  std::string token_;
  std::atomic<std::int64_t> abort_at_{0};
};

}  // namespace agent::fleet
