// The control socket: how the CLI talks to the daemon.
//
// Protocol: the client sends one JSON object on one line ({"verb": "deploy", "app": "web",
// ...}); the daemon answers with lines of JSON: any number of {"progress": "..."} while the
// work goes on, then one {"ok": true|false, "message": "...", "data": ...}, and closes. A
// request over 64 KiB or that is not a JSON object gets an error line; the daemon carries on.
// The peer's uid comes from SO_PEERCRED, never from the request.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "base/event_loop.h"

namespace agent {

/// One request, checked: what any client may ask, whatever bytes it sent. Fields it did not
/// send are empty (steps: 1).
struct ControlRequest {
  std::string verb;  // status, deploy, reload, rollback, start, stop, restart, fleet-status, fleet-resume, upgrade
  std::string app, from, to, rev, ref;
  std::string version;    // fleet-resume
  int steps = 1;          // rollback N: 1..1000
  bool no_fleet = false;  // deploy --no-fleet
};

/// Parses one request line. False with a one-line reason ("bad request: ...") when it is not
/// a JSON object with a known "verb", a field has the wrong type, a string is over 4 KiB or
/// holds a NUL, or "steps" is not 1..1000. Unknown fields are ignored.
bool parse_control_request(std::string_view line, ControlRequest* out, std::string* err);

/// One client connection, owned by the ControlServer from accept until it closes: after the
/// outcome was written, when the client went away, or when a client that stopped reading has
/// not taken its outcome within kOutcomeDeadline. Whoever answers holds a shared_ptr too;
/// sending to a closed session is a no-op (the work it asked for goes on).
///
/// What waits to be written is bounded (kMaxPending): past it, progress lines are dropped and
/// counted ("(N progress lines dropped ...)" is sent once there is room), the outcome never is.
class Session {
 public:
  Session(base::EventLoop& loop, int fd, uid_t uid, pid_t pid);
  ~Session();
  uid_t uid() const { return uid_; }
  pid_t pid() const { return pid_; }
  bool closed() const { return fd_ < 0; }
  void progress(const std::string& line);
  /// The last line; the connection closes once it is written.
  void finish(bool ok, const std::string& message, const nlohmann::json& data = nullptr);

  static constexpr size_t kMaxPending = 256 * 1024;
  static constexpr std::chrono::milliseconds kOutcomeDeadline{120'000};

 private:
  friend class ControlServer;
  void send(const nlohmann::json& j, bool droppable);
  void flush();
  void close();
  base::EventLoop& loop_;
  int fd_;
  uid_t uid_;
  pid_t pid_;
  base::EventLoop::Id watch_ = 0;
  base::EventLoop::Id deadline_ = 0;  // until the request line is complete
  base::EventLoop::Id outcome_deadline_ = 0;  // from finish() until the outcome is written
  std::string in_, out_;
  size_t dropped_ = 0;  // progress lines not sent because the client read too slowly
  bool finishing_ = false, writable_watch_ = false;
  std::function<void()> on_close_;  // set by the server: forget this session
};

class ControlServer {
 public:
  using Handler = std::function<void(std::shared_ptr<Session>, const ControlRequest& request)>;
  ControlServer(base::EventLoop& loop, Handler handler) : loop_(loop), handler_(std::move(handler)) {}
  ~ControlServer();

  /// Binds `path` (mode 0600, or 0660 with group `gid` when gid != -1). Refuses when another
  /// daemon answers there; replaces a stale socket file.
  bool listen(const std::string& path, long gid, std::string* err);
  /// The socket the previous image of the agent listened on at `path` (`agent upgrade`).
  void adopt(int fd, const std::string& path);
  int fd() const { return fd_; }

 private:
  void accept_all();
  void read_request(Session* s);
  base::EventLoop& loop_;
  Handler handler_;
  int fd_ = -1;
  base::EventLoop::Id watch_ = 0;
  std::string path_;
  /// Every open session, from accept until it closes. Whoever answers a request holds it too.
  std::map<Session*, std::shared_ptr<Session>> sessions_;
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // expires with the server
};

/// The client side: sends `request` to the daemon at `path`, calls `on_line` for each line of
/// the answer. Returns false with *err when the daemon cannot be reached.
bool call_daemon(const std::string& path, const nlohmann::json& request,
                 const std::function<void(const nlohmann::json&)>& on_line, std::string* err);

}  // namespace agent
