#include "base/curl.h"

#include <chrono>
#include <mutex>

#include "base/dynlib.h"

namespace base::curl {

AGENT_CURL_FUNCTIONS(AGENT_DL_DECLARE)

bool open(std::string* err) {
  static std::mutex mu;
  static bool ok = false;
  return base::dynlib::open_once(mu, ok, AGENT_LIBCURL_SONAME, [](void* handle, std::string& err) {
        const char* soname = AGENT_LIBCURL_SONAME;
        AGENT_CURL_FUNCTIONS(AGENT_DL_RESOLVE)
        if (CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT); rc != CURLE_OK)
          return err = std::string("curl_global_init: ") + curl_easy_strerror(rc), false;
        return true;
      }, err);
}

namespace {

int check_abort(void* clientp, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  auto* deadline = static_cast<const std::atomic<std::int64_t>*>(clientp);
  std::int64_t d = deadline->load();
  return d != 0 && std::chrono::steady_clock::now().time_since_epoch().count() >= d;
}

}  // namespace

Easy::Easy(long connect_timeout_s, long transfer_timeout_s) : h(curl_easy_init()) {
  if (!h) return;
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, connect_timeout_s);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, transfer_timeout_s);
}

Easy::~Easy() {
  if (list) curl_slist_free_all(list);
  if (h) curl_easy_cleanup(h);
}

bool Easy::perform(const std::string& what, const std::atomic<std::int64_t>* abort_at, std::string* err) {
  if (!h) return *err = "curl_easy_init failed", false;
  if (abort_at) {
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, check_abort);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, abort_at);
  }
  CURLcode rc = curl_easy_perform(h);
  if (rc == CURLE_OK) return true;
  *err = what + ": " + (error[0] ? std::string(error) : curl_easy_strerror(rc));
  return false;
}

}  // namespace base::curl
