// Delivery: delivers alerts by email (SMTP, with libcurl) and webhook (a JSON POST), on a
// thread of its own, so that no delivery ever blocks the event loop or a rollout.
//
// Folding. The first alert of an (app, kind) goes out at once. More of the same within
// `min_interval` are held and go out together, as one message with their count, when the
// interval ends: a stuck drain on 14 workers is one mail, then one more, not 14.
//
// Retries. A delivery that fails is retried with backoff (1 s doubling to 60 s) for
// `retry_for`; then one error line is logged and it is dropped. Each channel (email, webhook)
// is retried on its own. At shutdown what is still queued gets one last try, bounded.
//
// Secrets. The SMTP password is read from smtp_password_file at each delivery and handed to
// libcurl only: it is in no message, log line or error.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "agent/alerts/alerts.h"
#include "agent/config/config.h"

namespace agent {

struct Outgoing {
  Alert alert;
  std::chrono::system_clock::time_point when;  // of the (latest) alert
  int folded = 0;                              // more alerts of this (app, kind) this message stands for
  std::chrono::system_clock::time_point first_folded;  // when the first of them was raised
  std::string id;                              // Message-ID, the same for every retry
};

/// The email for `o`: RFC 5322 headers (Date, Message-ID, From, To, Subject, MIME) and a
/// plain-text body, lines ending in CRLF.
std::string format_email(const Outgoing& o, const AlertSettings& s, const std::string& host, const std::string& message_id);
/// "[agent] HOST APP: SUMMARY (release R)", with the folded count; RFC 2047-encoded if not ASCII.
std::string email_subject(const Outgoing& o, const std::string& host);
/// "https://hooks.example.com/..." : a URL fit for a log line (no path, query or userinfo).
std::string redacted_url(const std::string& url);
/// The webhook's JSON body.
std::string format_webhook(const Outgoing& o, const std::string& host);

class Delivery {
 public:
  /// `carried`: what hand_off() of the previous image of the agent returned (or null).
  Delivery(AlertSettings settings, std::string host, const nlohmann::json& carried = nullptr);
  ~Delivery();
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;

  /// Queues `a` (raised at `when`). Never blocks on delivery.
  void submit(const Alert& a, std::chrono::system_clock::time_point when);
  /// A reloaded config (SIGHUP): used from the next delivery on.
  void configure(AlertSettings settings);
  /// `agent upgrade`: stops the thread without delivering what waits (a transfer in flight
  /// ends first, aborted after `wait`) and returns it all, held alerts, retries and their
  /// times, for the next image's Delivery. Nothing is delivered by this one after.
  nlohmann::json hand_off(std::chrono::milliseconds wait);
  /// Whether any channel is configured.
  static bool enabled(const AlertSettings& s) { return !s.email_to.empty() || !s.webhook_url.empty(); }

 private:
  enum class Channel { Email, Webhook };
  struct Job {
    Channel channel;
    Outgoing out;
    int attempts = 0;
    std::chrono::steady_clock::time_point first_try, next_try;
    std::string last_error;
  };
  struct Fold {
    std::chrono::steady_clock::time_point last_sent;
    bool sent = false;
    Outgoing held;  // the latest alert held back; held.folded counts every one held (0: none)
  };

  void run();
  void enqueue(Outgoing o, const AlertSettings& s, std::chrono::steady_clock::time_point now);
  bool deliver(Job& job, const AlertSettings& s, std::string* err);
  bool send_email(const Outgoing& o, const AlertSettings& s, std::string* err);
  bool send_webhook(const Outgoing& o, const AlertSettings& s, std::string* err);
  std::string describe(const Job& job) const;

  std::string host_;
  std::mutex mu_;
  std::condition_variable cv_;
  AlertSettings settings_;
  std::deque<Outgoing> inbox_;
  bool stop_ = false;
  std::atomic<bool> handing_off_{false};
  std::chrono::steady_clock::time_point stop_deadline_;
  std::atomic<std::int64_t> abort_at_{0};  // steady-clock ticks: a transfer still running then is aborted
  // Only the thread touches these.
  std::map<std::pair<std::string, std::string>, Fold> folds_;
  std::vector<Job> jobs_;
  unsigned long sequence_ = 0;
  std::thread thread_;
};

}  // namespace agent
