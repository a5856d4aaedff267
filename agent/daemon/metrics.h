// /metrics and /healthz (docs/operating.md "Metrics and a health endpoint"): a small HTTP/1.1 server on
// the event loop at [agent] metrics_listen, and the Prometheus text format (0.0.4) it serves.
// Each request is answered from what the daemon holds in memory (and /proc), then the
// connection is closed; a client that does not send a request within 5 s, or sends more than
// 8 KiB of it, is dropped; at most 32 connections at once.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "agent/rollout/machine.h"
#include "base/event_loop.h"
#include "base/listen.h"

namespace agent {

/// Builds the text format: each family's # HELP and # TYPE once, then all its samples
/// together (the format wants a family in one group), whatever order they were added in:
/// a family's samples for every app, added app by app, still come out as one group.
class MetricsText {
 public:
  using Labels = std::vector<std::pair<std::string, std::string>>;
  void family(const std::string& name, const char* type, const std::string& help);
  void sample(const std::string& name, const Labels& labels, double value);
  /// name_bucket{le=...} (cumulative), name_sum, name_count, in the family `name`.
  void histogram(const std::string& name, const Labels& labels, const Histogram& h);
  std::string str() const;

 private:
  struct Family {
    std::string head, lines;
  };
  Family& group(const std::string& name);
  void line(Family& f, const std::string& name, const Labels& labels, double value);
  std::vector<Family> families_;  // in the order first named
  std::map<std::string, size_t> index_;
};

/// A label value as the format wants it: backslash, double quote and newline escaped.
std::string escape_label_value(const std::string& v);

/// The agent's own process_* series (resident and virtual memory, CPU seconds, open and max
/// fds, start time), from /proc/self.
void process_metrics(MetricsText* m);

class MetricsServer {
 public:
  /// `metrics` renders /metrics; `health` says whether every app is up (and why not).
  MetricsServer(base::EventLoop& loop, std::function<std::string()> metrics, std::function<std::pair<bool, std::string>()> health);
  ~MetricsServer();
  MetricsServer(const MetricsServer&) = delete;
  MetricsServer& operator=(const MetricsServer&) = delete;
  bool listen(const base::ListenAddress& address, std::string* err);
  /// The listening socket the previous image of the agent held (`agent upgrade`).
  void adopt(int fd, const base::ListenAddress& address);
  int fd() const { return fd_; }

 private:
  struct Conn {
    int fd = -1;
    std::string in, out;
    size_t sent = 0;
    base::EventLoop::Id watch = 0, timer = 0;
  };
  void on_accept();
  void on_readable(int fd);
  void on_writable(int fd);
  void respond(Conn& c);
  void close(int fd);

  base::EventLoop& loop_;
  std::function<std::string()> metrics_;
  std::function<std::pair<bool, std::string>()> health_;
  int fd_ = -1;
  base::EventLoop::Id watch_ = 0;
  std::map<int, std::unique_ptr<Conn>> conns_;
};

}  // namespace agent
