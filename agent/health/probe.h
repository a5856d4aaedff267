// HealthProbe: one HTTP/1.1 request to an app through its listen address (IPv4, IPv6 or a unix
// socket), run on the event loop: a non-blocking connect, the request, the status line and the
// start of the body. Nothing in it blocks; an app that accepts and never answers fails at the
// timeout. 2xx and 3xx are healthy (docs/operating.md "Health and bake").
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/event_loop.h"
#include "base/listen.h"
#include "base/units.h"

namespace agent {

struct ProbeTarget {
  base::ListenAddress address;
  std::string method = "GET", path = "/";
  std::string host;  // the Host header; "" = the address
  base::Millis timeout{2'000};
};

struct ProbeResult {
  bool ok = false;
  int status = 0;      // the HTTP status, 0 when none came
  std::string detail;  // "GET /healthz: HTTP 500: database down", "...: connection refused", "...: no answer within 2s"
};

class HealthProbe {
 public:
  explicit HealthProbe(base::EventLoop& loop) : loop_(loop) {}
  ~HealthProbe() { cancel(); }
  HealthProbe(const HealthProbe&) = delete;
  HealthProbe& operator=(const HealthProbe&) = delete;

  /// Starts one probe; `done` is called once, on the loop, never from inside start(). A probe
  /// still running is cancelled first.
  void start(const ProbeTarget& target, std::function<void(const ProbeResult&)> done);
  bool busy() const { return fd_ >= 0; }
  /// Drops a running probe without calling its `done`.
  void cancel();

 private:
  void on_event(std::uint32_t events);
  void finish(bool ok, int status, const std::string& why);

  base::EventLoop& loop_;
  ProbeTarget target_;
  std::function<void(const ProbeResult&)> done_;
  int fd_ = -1;
  bool sent_ = false;
  std::string request_, response_;
  base::EventLoop::Id watch_ = 0, timer_ = 0;
  std::uint64_t gen_ = 0;  // bumped by cancel(): work posted for an older probe is dropped
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

/// "HTTP/1.1 503 Service Unavailable\r\n..." -> 503; 0 when `response` does not start with a
/// complete status line.
int http_status(const std::string& response);

/// The first bytes of the body of `response` (headers skipped), on one line, at most `max`.
std::string body_start(const std::string& response, size_t max = 120);

}  // namespace agent
