#include "agent/listen.h"

#include <arpa/inet.h>
#include <sys/un.h>

#include <charconv>

namespace agent {

std::string ListenAddress::canonical() const {
  switch (kind) {
    case Kind::Unix: return "unix:" + path;
    case Kind::Tcp6: return "[" + host + "]:" + std::to_string(port);
    case Kind::Tcp4: break;
  }
  return host + ":" + std::to_string(port);
}

std::optional<ListenAddress> parse_listen(std::string_view text, std::string* err) {
  ListenAddress a;
  a.text = std::string(text);
  std::string_view path = text;
  if (path.starts_with("unix:")) path.remove_prefix(5);
  if (path.starts_with("/")) {
    if (path.size() >= sizeof(sockaddr_un{}.sun_path)) {
      *err = "unix socket path \"" + std::string(path) + "\" is longer than " +
             std::to_string(sizeof(sockaddr_un{}.sun_path) - 1) + " bytes";
      return std::nullopt;
    }
    a.kind = ListenAddress::Kind::Unix;
    a.path = std::string(path);
    return a;
  }
  size_t colon = text.rfind(':');
  if (colon == std::string_view::npos) {
    *err = "listen address \"" + std::string(text) +
           "\" needs a port (write \"0.0.0.0:8080\", \"[::]:8080\" or a unix socket path)";
    return std::nullopt;
  }
  std::string_view host = text.substr(0, colon), port = text.substr(colon + 1);
  unsigned p = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
  if (ec != std::errc() || end != port.data() + port.size() || p == 0 || p > 65535) {
    *err = "listen address \"" + std::string(text) + "\": port \"" + std::string(port) +
           "\" is not a number from 1 to 65535";
    return std::nullopt;
  }
  a.port = static_cast<std::uint16_t>(p);
  if (host.empty()) host = "0.0.0.0";
  bool v6 = host.starts_with("[") && host.ends_with("]");
  if (v6) host = host.substr(1, host.size() - 2);
  std::string h(host);
  unsigned char buf[sizeof(in6_addr)];
  char canon[INET6_ADDRSTRLEN];
  int family = v6 ? AF_INET6 : AF_INET;
  if (inet_pton(family, h.c_str(), buf) != 1) {
    *err = "listen address \"" + std::string(text) + "\": \"" + h + "\" is not a numeric " +
           (v6 ? "IPv6" : "IPv4") + " address" + (v6 ? "" : " (IPv6 goes in brackets: \"[::1]:8080\")");
    return std::nullopt;
  }
  inet_ntop(family, buf, canon, sizeof canon);
  a.kind = v6 ? ListenAddress::Kind::Tcp6 : ListenAddress::Kind::Tcp4;
  a.host = canon;
  return a;
}

bool listen_conflicts(const ListenAddress& a, const ListenAddress& b) {
  using K = ListenAddress::Kind;
  if (a.kind == K::Unix || b.kind == K::Unix) return a.kind == b.kind && a.path == b.path;
  if (a.port != b.port) return false;
  // A wildcard v6 socket also takes IPv4 traffic unless IPV6_V6ONLY; count it as overlapping.
  if (a.is_wildcard() || b.is_wildcard()) return a.kind == b.kind || (a.host == "::" || b.host == "::");
  return a.kind == b.kind && a.host == b.host;
}

}  // namespace agent
