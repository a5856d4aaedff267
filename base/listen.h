// A `listen` address from the config: "host:port", "[v6]:port", ":port", or a unix socket path.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace base {

struct ListenAddress {
  enum class Kind { Tcp4, Tcp6, Unix };
  Kind kind = Kind::Tcp4;
  std::string host;      // numeric address, "" for Unix
  std::uint16_t port = 0;
  std::string path;      // Unix only
  std::string text;      // as written in the config

  bool is_wildcard() const { return host == "0.0.0.0" || host == "::"; }
  /// "0.0.0.0:8197", "[::1]:8197", "unix:/run/app.sock": one canonical spelling.
  std::string canonical() const;
};

/// Parses one address. Host names are refused (the agent binds before any resolver is
/// trusted): write a numeric address. ":8197" means all IPv4 addresses.
std::optional<ListenAddress> parse_listen(std::string_view text, std::string* err);

/// True when binding both at once would fail or steal traffic: the same unix path, or the
/// same port and family where the hosts are equal or one of them is a wildcard. IPv6 is
/// bound IPV6_V6ONLY: list "0.0.0.0:80" and "[::]:80" both for dual stack.
bool listen_conflicts(const ListenAddress& a, const ListenAddress& b);

}  // namespace base

namespace base {

/// Binds and listens on `a` (SO_REUSEADDR, never SO_REUSEPORT: one shared accept queue that
/// every worker inherits). The fd is close-on-exec in the agent; a worker gets it by dup2.
/// A stale unix socket file is replaced. Returns -1 with *err on failure.
int bind_listen(const ListenAddress& a, std::string* err);

/// The socket address of `a` in *ss, its length returned. With `to_connect`, a wildcard host
/// becomes the loopback address of its family: where a client on this host reaches it.
unsigned sockaddr_of(const ListenAddress& a, ::sockaddr_storage* ss, bool to_connect);

/// The canonical address a listening socket is bound to, or "" if it is none we serve.
std::string canonical_address_of(int fd);

}  // namespace base
