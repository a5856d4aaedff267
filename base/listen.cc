#include "base/listen.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <charconv>

namespace base {

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
  if (path.starts_with("unix:")) {
    path.remove_prefix(5);
    if (!path.starts_with("/")) {
      *err = "unix socket path \"" + std::string(path) + "\" must be absolute";
      return std::nullopt;
    }
  }
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
  // IPv6 sockets are bound IPV6_V6ONLY, so "[::]:80" and "0.0.0.0:80" coexist (dual stack).
  if (a.kind != b.kind) return false;
  return a.host == b.host || a.is_wildcard() || b.is_wildcard();
}

}  // namespace base

#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace base {

unsigned sockaddr_of(const ListenAddress& a, sockaddr_storage* ss, bool to_connect) {
  *ss = sockaddr_storage{};
  if (a.kind == ListenAddress::Kind::Unix) {
    auto* un = reinterpret_cast<sockaddr_un*>(ss);
    un->sun_family = AF_UNIX;
    std::memcpy(un->sun_path, a.path.c_str(), a.path.size() + 1);  // parse_listen bounded it
    return sizeof(sockaddr_un);
  }
  if (a.kind == ListenAddress::Kind::Tcp6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(ss);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(a.port);
    inet_pton(AF_INET6, to_connect && a.is_wildcard() ? "::1" : a.host.c_str(), &in6->sin6_addr);
    return sizeof(sockaddr_in6);
  }
  auto* in = reinterpret_cast<sockaddr_in*>(ss);
  in->sin_family = AF_INET;
  in->sin_port = htons(a.port);
  inet_pton(AF_INET, to_connect && a.is_wildcard() ? "127.0.0.1" : a.host.c_str(), &in->sin_addr);
  return sizeof(sockaddr_in);
}

int bind_listen(const ListenAddress& a, std::string* err) {
  sockaddr_storage ss{};
  socklen_t len = sockaddr_of(a, &ss, false);
  int family = ss.ss_family;
  if (a.kind == ListenAddress::Kind::Unix) {
    struct stat st {};
    if (::lstat(a.path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode)) return *err = "listen on " + a.text + ": the path exists and is not a socket", -1;
      // Replace a stale socket file, never one that something still listens on.
      int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      bool live = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&ss), len) == 0;
      if (probe >= 0) ::close(probe);
      if (live) return *err = "listen on " + a.text + ": another process is listening there", -1;
      ::unlink(a.path.c_str());
    }
  }
  int fd = ::socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return *err = "socket for " + a.text + ": " + std::strerror(errno), -1;
  int one = 1;
  if (family != AF_UNIX) ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, SOMAXCONN) != 0) {
    *err = "listen on " + a.text + ": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string canonical_address_of(int fd) {
  int listening = 0, type = 0;
  socklen_t optlen = sizeof listening, tlen = sizeof type;
  if (::getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &optlen) != 0 || !listening) return "";
  if (::getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 || type != SOCK_STREAM) return "";
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (::getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return "";
  char host[INET6_ADDRSTRLEN] = {};
  if (ss.ss_family == AF_INET) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
    return std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
  }
  if (ss.ss_family == AF_INET6) {
    // The agent binds IPv6 only (IPV6_V6ONLY) and lists IPv4 apart: a dual-stack socket from
    // systemd (BindIPv6Only=default) would also take IPv4 and collide with "0.0.0.0:port".
    int v6only = 1;
    socklen_t l = sizeof v6only;
    if (::getsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, &l) == 0 && !v6only) return "dual-stack";
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
    return "[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  if (ss.ss_family == AF_UNIX) {
    auto* a = reinterpret_cast<sockaddr_un*>(&ss);
    if (len <= offsetof(sockaddr_un, sun_path) || a->sun_path[0] == '\0') return "";
    return "unix:" + std::string(a->sun_path);
  }
  return "";
}

}  // namespace base
