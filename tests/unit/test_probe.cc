// HealthProbe (agent/health/probe.h) against real sockets on loopback and a unix socket: a
// small server on the same event loop answers as each test needs.
#include <doctest/doctest.h>

#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "agent/health/probe.h"
#include "testutil.h"

using namespace agent;
using namespace std::chrono_literals;

namespace {

// Accepts on `address` and answers each request with `reply` ("" = read it and never answer).
struct Server {
  base::EventLoop& loop;
  base::ListenAddress address;
  std::string reply, last_request;
  int fd = -1;
  std::vector<int> clients;
  base::EventLoop::Id watch = 0;

  Server(base::EventLoop& l, const std::string& listen, std::string r) : loop(l), reply(std::move(r)) {
    std::string err;
    bool any_port = listen.ends_with(":0");  // parse_listen refuses port 0: bind one the kernel picks
    auto parsed = base::parse_listen(any_port ? listen.substr(0, listen.size() - 1) + "1" : listen, &err);
    REQUIRE_MESSAGE(parsed, err);
    address = *parsed;
    if (any_port) address.port = 0;
    fd = base::bind_listen(address, &err);
    REQUIRE_MESSAGE(fd >= 0, err);
    if (any_port) {
      sockaddr_storage ss{};
      socklen_t len = sizeof ss;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
      address.port = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                                     : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    }
    watch = loop.add(fd, EPOLLIN, [this](std::uint32_t) {
      int c = ::accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) return;
      clients.push_back(c);
      loop.add(c, EPOLLIN, [this, c](std::uint32_t) {
        char buf[2048];
        ssize_t n = ::read(c, buf, sizeof buf);
        if (n <= 0) return;
        last_request.append(buf, static_cast<size_t>(n));
        if (reply.empty() || last_request.find("\r\n\r\n") == std::string::npos) return;
        [[maybe_unused]] auto w = ::write(c, reply.data(), reply.size());
        ::shutdown(c, SHUT_WR);
      });
    });
  }
  ~Server() {
    loop.remove(watch);
    for (int c : clients) ::close(c);
    ::close(fd);
  }
};

ProbeResult probe(base::EventLoop& loop, const base::ListenAddress& a, base::Millis timeout = 2s, std::string method = "GET") {
  HealthProbe p(loop);
  std::optional<ProbeResult> got;
  p.start({a, method, "/healthz", "", timeout}, [&](const ProbeResult& r) { got = r; });
  CHECK(p.busy());
  for (int i = 0; i < 500 && !got; ++i) loop.run_once(20ms);
  REQUIRE(got);
  CHECK_FALSE(p.busy());
  return *got;
}

}  // namespace

TEST_CASE("probe: 2xx and 3xx are healthy; the request names the path and host") {
  base::EventLoop loop;
  Server s(loop, "127.0.0.1:0", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
  auto r = probe(loop, s.address);
  CHECK(r.ok);
  CHECK(r.status == 200);
  CHECK(r.detail == "GET /healthz: HTTP 200: ok");
  CHECK(s.last_request.find("GET /healthz HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(s.address.port) + "\r\n") == 0);
  CHECK(s.last_request.find("Connection: close\r\n") != std::string::npos);

  Server redirect(loop, "127.0.0.1:0", "HTTP/1.1 302 Found\r\nLocation: /login\r\nContent-Length: 0\r\n\r\n");
  CHECK(probe(loop, redirect.address).ok);
}

TEST_CASE("probe: a 5xx fails with its status and the start of its body") {
  base::EventLoop loop;
  Server s(loop, "127.0.0.1:0", "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 24\r\n\r\ndatabase down\nretry later");
  auto r = probe(loop, s.address);
  CHECK_FALSE(r.ok);
  CHECK(r.status == 500);
  CHECK(r.detail == "GET /healthz: HTTP 500: database down retry later");
}

TEST_CASE("probe: accepted and never answered fails at the timeout; refused fails at once") {
  base::EventLoop loop;
  Server silent(loop, "127.0.0.1:0", "");
  auto r = probe(loop, silent.address, 300ms);
  CHECK_FALSE(r.ok);
  CHECK(r.detail == "GET /healthz: no answer within 300ms");

  base::ListenAddress closed = silent.address;
  closed.port = 1;  // nothing listens on port 1 here
  r = probe(loop, closed);
  CHECK_FALSE(r.ok);
  CHECK(r.detail.find("connect to 127.0.0.1:1: Connection refused") != std::string::npos);
}

TEST_CASE("probe: a unix socket and IPv6 loopback; a wildcard address is probed on loopback") {
  base::EventLoop loop;
  testutil::TempDir d;
  Server un(loop, d / "app.sock", "HTTP/1.1 204 No Content\r\n\r\n");
  auto r = probe(loop, un.address);
  CHECK(r.ok);
  CHECK(un.last_request.find("Host: localhost\r\n") != std::string::npos);

  Server wild(loop, "0.0.0.0:0", "HTTP/1.0 200 OK\r\n\r\nfine");
  CHECK(probe(loop, wild.address).ok);

  int v6 = ::socket(AF_INET6, SOCK_STREAM, 0);
  sockaddr_in6 lo{};
  lo.sin6_family = AF_INET6;
  lo.sin6_addr = in6addr_loopback;
  bool have_v6 = v6 >= 0 && ::bind(v6, reinterpret_cast<sockaddr*>(&lo), sizeof lo) == 0;
  if (v6 >= 0) ::close(v6);
  if (have_v6) {
    Server six(loop, "[::1]:0", "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    CHECK(probe(loop, six.address).ok);
  }
}

TEST_CASE("probe: what is not HTTP, or a connection closed without an answer, fails") {
  base::EventLoop loop;
  Server garbage(loop, "127.0.0.1:0", "SSH-2.0-OpenSSH\r\n\r\n");
  CHECK(probe(loop, garbage.address).detail == "GET /healthz: not an HTTP/1.x answer");
  CHECK(http_status("HTTP/1.1 503 Busy\r\n") == 503);
  CHECK(http_status("HTTP/1.1 5x3 Busy\r\n") == 0);
  CHECK(body_start("HTTP/1.1 200 OK\r\n\r\n  a\r\n\tb  ") == "a b");
}
