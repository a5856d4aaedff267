#include "agent/daemon/control.h"

#include <algorithm>
#include <utility>

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <spdlog/spdlog.h>

#include "base/fs.h"

namespace agent {
namespace {

constexpr size_t kMaxRequest = 64 * 1024;
constexpr std::chrono::milliseconds kRequestDeadline{10'000};

bool make_addr(const std::string& path, sockaddr_un* addr, std::string* err) {
  *addr = sockaddr_un{};
  addr->sun_family = AF_UNIX;
  if (path.size() >= sizeof addr->sun_path) return *err = "control socket path too long: " + path, false;
  std::memcpy(addr->sun_path, path.c_str(), path.size() + 1);
  return true;
}

}  // namespace

Session::Session(base::EventLoop& loop, int fd, uid_t uid, pid_t pid) : loop_(loop), fd_(fd), uid_(uid), pid_(pid) {}

Session::~Session() { close(); }

void Session::close() {
  if (fd_ < 0) return;
  if (watch_) loop_.remove(watch_);
  watch_ = 0;
  loop_.cancel(std::exchange(deadline_, 0));
  loop_.cancel(std::exchange(outcome_deadline_, 0));
  ::close(fd_);
  fd_ = -1;
  if (on_close_) std::exchange(on_close_, nullptr)();
}

void Session::send(const nlohmann::json& j, bool droppable) {
  if (fd_ < 0) return;
  if (droppable && out_.size() >= kMaxPending) {
    ++dropped_;  // the client reads slower than the work goes: keep the memory bounded
    return;
  }
  if (dropped_) {
    nlohmann::json note = {{"progress", "(" + std::to_string(dropped_) +
                                            " progress lines dropped: the client read too slowly; the agent's log has them)"}};
    out_ += note.dump() + "\n";
    dropped_ = 0;
  }
  out_ += j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  flush();
}

void Session::progress(const std::string& line) { send({{"progress", line}}, true); }

void Session::finish(bool ok, const std::string& message, const nlohmann::json& data) {
  if (finishing_) return;  // one outcome per request
  nlohmann::json j = {{"ok", ok}, {"message", message}};
  if (!data.is_null()) j["data"] = data;
  finishing_ = true;
  send(j, false);
  // A client that stopped reading altogether must not hold its fd and buffer forever.
  if (fd_ >= 0)
    outcome_deadline_ = loop_.after(kOutcomeDeadline, [this] {
      outcome_deadline_ = 0;
      spdlog::warn("control: client pid {} did not read its answer within {}s; closed", pid_,
                   std::chrono::duration_cast<std::chrono::seconds>(kOutcomeDeadline).count());
      close();
    });
}

void Session::flush() {
  while (fd_ >= 0 && !out_.empty()) {
    ssize_t n = ::send(fd_, out_.data(), out_.size(), MSG_NOSIGNAL);
    if (n > 0) {
      out_.erase(0, static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      if (!writable_watch_) {
        // Wait for room: a slow reader must not stall the loop. The server owns this session
        // until close(), which removes the watch: `this` outlives it.
        loop_.remove(watch_);
        watch_ = loop_.add(fd_, EPOLLOUT, [this](std::uint32_t) { flush(); });
        writable_watch_ = true;
      }
      return;
    }
    return close();  // the client went away
  }
  if (fd_ >= 0 && out_.empty() && writable_watch_) {
    // All written: stop asking for writability, or level-triggered epoll spins the loop.
    loop_.remove(watch_);
    watch_ = 0;
    writable_watch_ = false;
  }
  if (fd_ >= 0 && out_.empty() && finishing_) close();
}

ControlServer::~ControlServer() {
  if (watch_) loop_.remove(watch_);
  for (auto& [raw, s] : sessions_) {
    s->on_close_ = nullptr;
    s->close();
  }
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

bool ControlServer::listen(const std::string& path, long gid, std::string* err) {
  sockaddr_un addr;
  if (!make_addr(path, &addr, err)) return false;
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0 && !base::make_dirs(path.substr(0, slash), err)) return false;
  // Another daemon answering here? Then we are the second one: refuse.
  int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
    ::close(probe);
    return *err = "another agent is already answering on " + path, false;
  }
  if (probe >= 0) ::close(probe);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return *err = path + " exists and is not a socket", false;
    ::unlink(path.c_str());
  }
  fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  mode_t old = ::umask(0177);  // no window in which the socket is open to others
  bool ok = fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::umask(old);
  if (!ok || ::listen(fd_, 64) != 0) return *err = base::errno_message("listen on", path), false;
  path_ = path;
  if (gid >= 0 && (::chown(path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(gid)) != 0 || ::chmod(path.c_str(), 0660) != 0))
    return *err = base::errno_message("chmod/chown", path), false;
  watch_ = loop_.add(fd_, EPOLLIN, [this](std::uint32_t) { accept_all(); });
  return true;
}

void ControlServer::adopt(int fd, const std::string& path) {
  fd_ = fd;
  path_ = path;
  ::fcntl(fd_, F_SETFD, FD_CLOEXEC);
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  watch_ = loop_.add(fd_, EPOLLIN, [this](std::uint32_t) { accept_all(); });
}

void ControlServer::accept_all() {
  while (true) {
    int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0 && (errno == EMFILE || errno == ENFILE)) {
      // Out of fds: the pending connection keeps the socket readable, and accepting again at
      // once would spin. Pause, let workers and clients free some, try again.
      spdlog::error("control socket: cannot accept: {}; pausing 200ms", std::strerror(errno));
      loop_.remove(watch_);
      watch_ = 0;
      loop_.after(std::chrono::milliseconds(200), [this] {
        if (!watch_) watch_ = loop_.add(fd_, EPOLLIN, [this](std::uint32_t) { accept_all(); });
      });
      return;
    }
    if (c < 0) return;
    ucred cred{};
    socklen_t len = sizeof cred;
    if (::getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
      ::close(c);
      continue;
    }
    auto s = std::make_shared<Session>(loop_, c, cred.uid, cred.pid);
    Session* raw = s.get();
    sessions_[raw] = s;
    // Forgotten after the dispatch that closed it, not under it: close() may run inside one
    // of the session's own handlers.
    s->on_close_ = [this, raw, alive = std::weak_ptr<bool>(alive_)] {
      loop_.post([this, raw, alive] {
        if (!alive.expired()) sessions_.erase(raw);
      });
    };
    // A client that connects and says nothing must not hold an fd forever.
    s->deadline_ = loop_.after(kRequestDeadline, [raw] {
      raw->deadline_ = 0;
      raw->finish(false, "no complete request within 10s");
    });
    s->watch_ = loop_.add(c, EPOLLIN | EPOLLRDHUP, [this, raw](std::uint32_t) { read_request(raw); });
  }
}

void ControlServer::read_request(Session* s) {
  char buf[8192];
  while (true) {
    ssize_t n = ::recv(s->fd_, buf, sizeof buf, 0);
    if (n > 0) {
      s->in_.append(buf, static_cast<size_t>(n));
      if (s->in_.size() > kMaxRequest && s->in_.find('\n') == std::string::npos) {
        loop_.remove(std::exchange(s->watch_, 0));
        loop_.cancel(std::exchange(s->deadline_, 0));
        return s->finish(false, "request too large (over 64 KiB)");
      }
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) break;
    // EOF before a full line: answer what we have, if anything.
    if (s->in_.empty()) return s->close();
    s->in_ += '\n';
    break;
  }
  size_t nl = s->in_.find('\n');
  if (nl == std::string::npos) return;  // wait for the rest of the line
  std::string line = s->in_.substr(0, nl);
  s->in_.clear();
  loop_.cancel(std::exchange(s->deadline_, 0));
  // Stop reading: one request per connection.
  loop_.remove(std::exchange(s->watch_, 0));
  std::shared_ptr<Session> held = sessions_.at(s);
  ControlRequest req;
  std::string why;
  if (!parse_control_request(line, &req, &why)) return held->finish(false, why);
  handler_(held, req);
}

bool parse_control_request(std::string_view line, ControlRequest* out, std::string* err) {
  static const char* const kVerbs[] = {"status", "deploy", "reload", "rollback", "start", "stop", "restart", "fleet-status", "fleet-resume", "upgrade"};
  constexpr size_t kMaxString = 4096;
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object() || !j.contains("verb") || !j["verb"].is_string())
    return *err = "bad request: expected one JSON object with a \"verb\" on one line", false;
  *out = ControlRequest{};
  for (auto [key, field] : {std::pair{"verb", &out->verb}, {"app", &out->app}, {"from", &out->from}, {"to", &out->to},
                            {"rev", &out->rev}, {"ref", &out->ref}, {"version", &out->version}}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    if (!it->is_string()) return *err = std::string("bad request: \"") + key + "\" must be a string", false;
    const auto& v = it->get_ref<const std::string&>();
    if (v.size() > kMaxString) return *err = std::string("bad request: \"") + key + "\" is over 4 KiB", false;
    if (v.find('\0') != std::string::npos) return *err = std::string("bad request: \"") + key + "\" holds a NUL byte", false;
    *field = v;
  }
  if (std::find(std::begin(kVerbs), std::end(kVerbs), out->verb) == std::end(kVerbs))
    return *err = "unknown verb \"" + out->verb.substr(0, 64) + "\"", false;
  if (auto it = j.find("no_fleet"); it != j.end() && !it->is_null()) {
    if (!it->is_boolean()) return *err = "bad request: \"no_fleet\" must be true or false", false;
    out->no_fleet = it->get<bool>();
  }
  if (auto it = j.find("steps"); it != j.end() && !it->is_null()) {
    if (!it->is_number_integer() || it->get<long long>() < 1 || it->get<long long>() > 1000 ||
        (it->is_number_unsigned() && it->get<unsigned long long>() > 1000))
      return *err = "bad request: \"steps\" must be a whole number from 1 to 1000", false;
    out->steps = it->get<int>();
  }
  return true;
}

bool call_daemon(const std::string& path, const nlohmann::json& request,
                 const std::function<void(const nlohmann::json&)>& on_line, std::string* err) {
  sockaddr_un addr;
  if (!make_addr(path, &addr, err)) return false;
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    int e = errno;
    *err = "cannot reach the agent at " + path + ": " + std::strerror(e) +
           (e == EACCES ? " (this account may not use the control socket: ask for root, the agent's user or control_group)"
                        : " (is `agent run` running, with this config?)");
    if (fd >= 0) ::close(fd);
    return false;
  }
  std::string line = request.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  if (::send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    *err = std::string("sending to the agent: ") + std::strerror(errno);
    ::close(fd);
    return false;
  }
  std::string buf;
  char chunk[8192];
  bool got_final = false;
  while (true) {
    ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buf.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      nlohmann::json j = nlohmann::json::parse(buf.substr(0, nl), nullptr, false);
      buf.erase(0, nl + 1);
      if (j.is_discarded()) continue;
      if (j.contains("ok")) got_final = true;
      on_line(j);
    }
  }
  ::close(fd);
  if (!got_final) return *err = "the agent closed the connection without an answer", false;
  return true;
}

}  // namespace agent
