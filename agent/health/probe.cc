#include "agent/health/probe.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cctype>
#include <cstdlib>
#include <cstring>

namespace agent {

namespace {

constexpr size_t kMaxResponse = 8192;  // the status line and the start of the body are all we read

// Enough to judge: the headers and, when the length is known, the whole (short) body. A server
// that keeps the connection open despite "Connection: close" is not waited for.
bool answer_complete(const std::string& r, bool head) {
  size_t end = r.find("\r\n\r\n");
  if (end == std::string::npos) return false;
  if (head) return true;
  size_t body = r.size() - (end + 4);
  if (body >= 120) return true;
  std::string headers = r.substr(0, end);
  for (char& c : headers) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  size_t at = headers.find("\r\ncontent-length:");
  if (at == std::string::npos) return false;
  return body >= std::strtoul(headers.c_str() + at + 17, nullptr, 10);
}

}  // namespace

int http_status(const std::string& r) {
  // "HTTP/1.x NNN"
  if (r.size() < 12 || r.compare(0, 7, "HTTP/1.") != 0 || r[8] != ' ') return 0;
  int code = 0;
  for (size_t i = 9; i < 12; ++i) {
    if (r[i] < '0' || r[i] > '9') return 0;
    code = code * 10 + (r[i] - '0');
  }
  return code;
}

std::string body_start(const std::string& r, size_t max) {
  size_t at = r.find("\r\n\r\n");
  if (at == std::string::npos) return "";
  std::string out;
  for (size_t i = at + 4; i < r.size() && out.size() < max; ++i) {
    unsigned char c = static_cast<unsigned char>(r[i]);
    if (c == '\r' || c == '\n' || c == '\t') c = ' ';
    if (c < ' ' || c == 0x7f) continue;
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out += static_cast<char>(c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

void HealthProbe::start(const ProbeTarget& target, std::function<void(const ProbeResult&)> done) {
  cancel();
  target_ = target;
  done_ = std::move(done);
  sent_ = false;
  response_.clear();
  std::string host = target.host;
  if (host.empty()) host = target.address.kind == base::ListenAddress::Kind::Unix ? "localhost" : target.address.canonical();
  request_ = target.method + " " + target.path + " HTTP/1.1\r\nHost: " + host +
             "\r\nUser-Agent: deploy-agent-health\r\nAccept: */*\r\nConnection: close\r\n\r\n";

  sockaddr_storage ss{};
  socklen_t len = base::sockaddr_of(target.address, &ss, true);
  fd_ = ::socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  // A failure before any fd is watched is reported on the loop, not from inside start();
  // a later start() or cancel(), or the probe's end, makes it moot.
  auto fail_later = [this](std::string why) {
    loop_.post([this, alive = std::weak_ptr<bool>(alive_), gen = gen_, why] {
      if (!alive.expired() && gen == gen_) finish(false, 0, why);
    });
  };
  if (fd_ < 0) return fail_later(std::string("socket: ") + std::strerror(errno));
  timer_ = loop_.after(target.timeout, [this] {
    timer_ = 0;
    finish(false, 0, (sent_ ? "no answer within " : "no connection within ") + base::format_duration(target_.timeout));
  });
  if (::connect(fd_, reinterpret_cast<sockaddr*>(&ss), len) != 0 && errno != EINPROGRESS) {
    // A unix socket whose queue is full says EAGAIN: the app is not taking connections.
    return fail_later(std::string("connect to ") + target.address.canonical() + ": " + std::strerror(errno));
  }
  watch_ = loop_.add(fd_, EPOLLOUT | EPOLLIN | EPOLLRDHUP, [this](std::uint32_t ev) { on_event(ev); });
}

void HealthProbe::on_event(std::uint32_t events) {
  if (fd_ < 0) return;
  if (!sent_) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int soerr = 0;
    socklen_t l = sizeof soerr;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &soerr, &l);
    if (soerr != 0) return finish(false, 0, "connect to " + target_.address.canonical() + ": " + std::strerror(soerr));
    // The request is a few hundred bytes: one send fits any socket buffer.
    ssize_t n = ::send(fd_, request_.data(), request_.size(), MSG_NOSIGNAL);
    if (n != static_cast<ssize_t>(request_.size()))
      return finish(false, 0, std::string("sending the request: ") + (n < 0 ? std::strerror(errno) : "short write"));
    sent_ = true;
    // From now on only reads matter: a writable socket would wake the loop for nothing.
    loop_.remove(std::exchange(watch_, 0));
    watch_ = loop_.add(fd_, EPOLLIN | EPOLLRDHUP, [this](std::uint32_t ev) { on_event(ev); });
    return;
  }
  char buf[4096];
  for (;;) {
    ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n > 0) {
      response_.append(buf, static_cast<size_t>(std::min<size_t>(static_cast<size_t>(n), kMaxResponse - std::min(kMaxResponse, response_.size()))));
      if (response_.size() >= kMaxResponse) break;
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
      // The status and some body are enough; the rest is not waited for.
      if (answer_complete(response_, target_.method == "HEAD")) break;
      return;
    }
    if (n < 0) return finish(false, 0, std::string("reading the answer: ") + std::strerror(errno));
    break;  // EOF
  }
  int status = http_status(response_);
  if (status == 0)
    return finish(false, 0, response_.empty() ? "connection closed without an answer" : "not an HTTP/1.x answer");
  std::string body = body_start(response_);
  finish(status >= 200 && status < 400, status, "HTTP " + std::to_string(status) + (body.empty() ? "" : ": " + body));
}

void HealthProbe::finish(bool ok, int status, const std::string& why) {
  auto done = std::exchange(done_, nullptr);
  cancel();
  if (done) done({ok, status, target_.method + " " + target_.path + ": " + why});
}

void HealthProbe::cancel() {
  ++gen_;
  loop_.remove(std::exchange(watch_, 0));
  loop_.cancel(std::exchange(timer_, 0));
  if (fd_ >= 0) ::close(std::exchange(fd_, -1));
  done_ = nullptr;
}

}  // namespace agent
