#include <doctest/doctest.h>

#include <csignal>

#include "base/listen.h"
#include "base/units.h"



TEST_CASE("durations: units, sums and refusals") {
  std::string err;
  CHECK(base::parse_duration("250ms", &err)->count() == 250);
  CHECK(base::parse_duration("30s", &err)->count() == 30'000);
  CHECK(base::parse_duration("2m", &err)->count() == 120'000);
  CHECK(base::parse_duration("1h", &err)->count() == 3'600'000);
  CHECK(base::parse_duration("1m30s", &err)->count() == 90'000);
  CHECK_FALSE(base::parse_duration("10", &err));
  CHECK(err.find("no unit") != std::string::npos);
  CHECK_FALSE(base::parse_duration("10sec", &err));
  CHECK(err.find("unknown unit \"sec\"") != std::string::npos);
  CHECK_FALSE(base::parse_duration("", &err));
  CHECK_FALSE(base::parse_duration("-5s", &err));
  CHECK_FALSE(base::parse_duration("1.5s", &err));
  CHECK_FALSE(base::parse_duration("99999999999999999999s", &err));
  CHECK(base::format_duration(base::Millis{1500}) == "1.5s");
  CHECK(base::format_duration(base::Millis{60'000}) == "1m");
  CHECK(base::format_duration(base::Millis{1050}) == "1050ms");
}

TEST_CASE("sizes: K, M, G are powers of 1024") {
  std::string err;
  CHECK(*base::parse_size("500M", &err) == 500ull << 20);
  CHECK(*base::parse_size("64K", &err) == 64ull << 10);
  CHECK(*base::parse_size("2G", &err) == 2ull << 30);
  CHECK(*base::parse_size("2GB", &err) == 2ull << 30);
  CHECK(*base::parse_size("4096", &err) == 4096);
  CHECK_FALSE(base::parse_size("500X", &err));
  CHECK(err.find("unknown size unit") != std::string::npos);
  CHECK_FALSE(base::parse_size("M", &err));
  CHECK(base::format_size(500ull << 20) == "500M");
}

TEST_CASE("signals by name, with or without SIG") {
  CHECK(*base::parse_signal("SIGTERM") == SIGTERM);
  CHECK(*base::parse_signal("term") == SIGTERM);
  CHECK(*base::parse_signal("SIGQUIT") == SIGQUIT);
  CHECK_FALSE(base::parse_signal("SIGBOGUS"));
  CHECK(base::signal_name(SIGINT) == "SIGINT");
}

TEST_CASE("listen addresses: IPv4, IPv6, unix, and overlaps") {
  std::string err;
  auto a = base::parse_listen("0.0.0.0:8197", &err);
  REQUIRE(a);
  CHECK(a->kind == base::ListenAddress::Kind::Tcp4);
  CHECK(a->port == 8197);
  auto b = base::parse_listen("[::1]:8197", &err);
  REQUIRE(b);
  CHECK(b->kind == base::ListenAddress::Kind::Tcp6);
  CHECK(b->canonical() == "[::1]:8197");
  auto c = base::parse_listen(":8197", &err);
  REQUIRE(c);
  CHECK(c->host == "0.0.0.0");
  auto u = base::parse_listen("/run/app.sock", &err);
  REQUIRE(u);
  CHECK(u->kind == base::ListenAddress::Kind::Unix);
  CHECK(base::parse_listen("unix:/run/app.sock", &err)->path == "/run/app.sock");

  CHECK_FALSE(base::parse_listen("unix:run/a.sock", &err));
  CHECK(err == "unix socket path \"run/a.sock\" must be absolute");
  CHECK_FALSE(base::parse_listen("localhost:80", &err));
  CHECK(err.find("not a numeric IPv4 address") != std::string::npos);
  CHECK_FALSE(base::parse_listen("127.0.0.1:70000", &err));
  CHECK_FALSE(base::parse_listen("127.0.0.1", &err));
  CHECK_FALSE(base::parse_listen("/" + std::string(200, 'x'), &err));

  auto lo = *base::parse_listen("127.0.0.1:8197", &err);
  CHECK(base::listen_conflicts(*a, lo));                             // wildcard covers loopback
  CHECK_FALSE(base::listen_conflicts(lo, *base::parse_listen("127.0.0.1:8198", &err)));
  CHECK_FALSE(base::listen_conflicts(lo, *base::parse_listen("127.0.0.2:8197", &err)));
  CHECK(base::listen_conflicts(*u, *base::parse_listen("unix:/run/app.sock", &err)));
  CHECK_FALSE(base::listen_conflicts(*a, *base::parse_listen("[::]:8197", &err)));  // dual stack
  CHECK(base::listen_conflicts(*b, *base::parse_listen("[::]:8197", &err)));
}
