// The control protocol: the request parser (what any local client may send) and a session's
// bounded output.
#include <doctest/doctest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <memory>

#include "agent/daemon/control.h"

using agent::ControlRequest;
using agent::parse_control_request;

namespace {
std::string refusal(std::string_view line) {
  ControlRequest r;
  std::string err;
  CHECK_FALSE(parse_control_request(line, &r, &err));
  return err;
}
}  // namespace

TEST_CASE("control: a request the CLI sends is read field by field") {
  ControlRequest r;
  std::string err;
  REQUIRE(parse_control_request(R"({"verb":"rollback","app":"web","steps":3,"to":"20261122T101500Z-1.2.3","extra":1})", &r, &err));
  CHECK(r.verb == "rollback");
  CHECK(r.app == "web");
  CHECK(r.steps == 3);
  CHECK(r.to == "20261122T101500Z-1.2.3");
  REQUIRE(parse_control_request(R"({"verb":"deploy","rev":"abc","ref":"refs/heads/main","app":null})", &r, &err));
  CHECK(r.rev == "abc");
  CHECK(r.ref == "refs/heads/main");
  CHECK(r.app.empty());
  CHECK(r.steps == 1);
}

TEST_CASE("control: anything else is refused with its reason") {
  CHECK(refusal("not json").starts_with("bad request: expected one JSON object"));
  CHECK(refusal("[1,2]").starts_with("bad request: expected one JSON object"));
  CHECK(refusal(R"({"verb":7})").starts_with("bad request: expected one JSON object"));
  CHECK(refusal(R"({"verb":"format-disk"})") == "unknown verb \"format-disk\"");
  CHECK(refusal(R"({"verb":"deploy","app":["web"]})") == "bad request: \"app\" must be a string");
  CHECK(refusal(R"({"verb":"deploy","from":"/opt/a\u0000b"})") == "bad request: \"from\" holds a NUL byte");
  CHECK(refusal(R"({"verb":"deploy","app":")" + std::string(5000, 'a') + "\"}") == "bad request: \"app\" is over 4 KiB");
  for (const char* steps : {"0", "-1", "1001", "1.5", "\"2\"", "18446744073709551615", "9223372036854775807"})
    CHECK(refusal(std::string(R"({"verb":"rollback","steps":)") + steps + "}") ==
          "bad request: \"steps\" must be a whole number from 1 to 1000");
}

TEST_CASE("control: a client that does not read loses progress lines, never the outcome") {
  int sv[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) == 0);
  base::EventLoop loop;
  auto session = std::make_shared<agent::Session>(loop, sv[0], 0, 0);
  // Far more than the pending cap, with nobody reading: the agent's side must not grow with it.
  const std::string line(200, 'x');
  for (int i = 0; i < 20000; ++i) session->progress(line);
  session->finish(true, "live");
  std::string got;
  char buf[65536];
  while (!session->closed()) {  // the client reads at last: what was kept is written out, then closed
    loop.run_once(std::chrono::milliseconds(100));
    ssize_t n;
    while ((n = ::read(sv[1], buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  }
  ssize_t n;
  while ((n = ::read(sv[1], buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
  ::close(sv[1]);
  CHECK(got.size() < 20000 * line.size() / 4);
  CHECK(got.find("progress lines dropped: the client read too slowly") != std::string::npos);
  size_t last = got.rfind('\n', got.size() - 2);
  CHECK(got.substr(last + 1) == "{\"message\":\"live\",\"ok\":true}\n");
}
