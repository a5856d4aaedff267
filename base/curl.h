// libcurl, opened on first use (base/dynlib.h) and shared by everything that speaks HTTP or
// SMTP: alert delivery (agent/alerts/delivery.cc) and the etcd client (agent/fleet/etcd.cc).
// A user brings the functions it calls into its own namespace with using-declarations
// (`using base::curl::curl_easy_perform;`): the pointers then hide libcurl's declarations and
// the calls read as usual.
#pragma once

#include <curl/curl.h>

#include <atomic>
#include <cstdint>
#include <string>

#define AGENT_CURL_FUNCTIONS(X)                                                                 \
  X(curl_global_init) X(curl_easy_init) X(curl_easy_setopt) X(curl_easy_perform)              \
  X(curl_easy_getinfo) X(curl_easy_strerror) X(curl_easy_cleanup) X(curl_slist_append)        \
  X(curl_slist_free_all)

namespace base::curl {

#define AGENT_CURL_EXTERN(fn) extern decltype(&::fn) fn;
AGENT_CURL_FUNCTIONS(AGENT_CURL_EXTERN)
#undef AGENT_CURL_EXTERN

/// Loads libcurl and runs curl_global_init once; false and *err ("cannot load libcurl.so.4:
/// ...") when it cannot, tried again by the next caller.
bool open(std::string* err);

/// An easy handle with the settings every user shares (an error buffer, no signals, the two
/// timeouts), freed at scope exit with its header list.
struct Easy {
  CURL* h = nullptr;
  char error[CURL_ERROR_SIZE] = {};
  curl_slist* list = nullptr;
  Easy(long connect_timeout_s, long transfer_timeout_s);
  ~Easy();
  Easy(const Easy&) = delete;
  Easy& operator=(const Easy&) = delete;
  /// Runs the transfer. It is aborted once the steady clock passes *abort_at (its count since
  /// the epoch; 0: never), checked about once a second and on every chunk. false and *err
  /// ("<what>: <curl's message>") when it failed.
  bool perform(const std::string& what, const std::atomic<std::int64_t>* abort_at, std::string* err);
};

}  // namespace base::curl
