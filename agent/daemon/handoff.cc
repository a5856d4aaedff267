#include "agent/daemon/handoff.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace agent {

using nlohmann::json;

json handoff_json(const Handoff& h) {
  return {{"generation", h.generation},
          {"from_version", h.from_version},
          {"uid", h.uid},
          {"config_text", h.config_text},
          {"began", static_cast<long long>(h.began.time_since_epoch().count())},
          {"notify_socket", h.notify_socket},
          {"watchdog_usec", h.watchdog_usec},
          {"sockets", h.sockets},
          {"activated", h.activated},
          {"control_fd", h.control_fd},
          {"metrics_fd", h.metrics_fd},
          {"apps", h.apps},
          {"alerts", h.alerts}};
}

bool handoff_from_json(const json& j, Handoff* out, std::string* err) {
  try {
    out->generation = j.at("generation").get<int>();
    out->from_version = j.at("from_version").get<std::string>();
    out->uid = j.at("uid").get<long>();
    out->config_text = j.at("config_text").get<std::string>();
    out->began = std::chrono::steady_clock::time_point(std::chrono::steady_clock::duration(j.at("began").get<long long>()));
    out->notify_socket = j.at("notify_socket").get<std::string>();
    out->watchdog_usec = j.at("watchdog_usec").get<long long>();
    out->sockets = j.at("sockets").get<std::map<std::string, int>>();
    out->activated = j.at("activated").get<std::vector<std::string>>();
    out->control_fd = j.at("control_fd").get<int>();
    out->metrics_fd = j.at("metrics_fd").get<int>();
    out->apps = j.at("apps").get<std::map<std::string, json>>();
    out->alerts = j.at("alerts");
  } catch (const std::exception& e) {
    return *err = std::string("the previous image's handoff is unreadable: ") + e.what(), false;
  }
  return true;
}

int write_handoff(const Handoff& h, std::string* err) {
  std::string text = handoff_json(h).dump(-1, ' ', false, json::error_handler_t::replace);
  int fd = ::memfd_create("agent-handoff", 0);
  if (fd < 0) return *err = std::string("memfd_create: ") + std::strerror(errno), -1;
  for (size_t off = 0; off < text.size();) {
    ssize_t n = ::write(fd, text.data() + off, text.size() - off);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      *err = std::string("writing the handoff: ") + std::strerror(errno);
      ::close(fd);
      return -1;
    }
    off += static_cast<size_t>(n);
  }
  return fd;
}

std::optional<Handoff> take_handoff(std::string* err) {
  const char* v = std::getenv(kHandoffEnv);
  if (!v) return std::nullopt;
  char* end = nullptr;
  long fd = std::strtol(v, &end, 10);
  ::unsetenv(kHandoffEnv);
  if (!*v || *end || fd < 3) return *err = std::string(kHandoffEnv) + " is not an fd", std::nullopt;
  std::string text;
  char buf[65536];
  ssize_t n;
  ::lseek(static_cast<int>(fd), 0, SEEK_SET);
  while ((n = ::read(static_cast<int>(fd), buf, sizeof buf)) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(static_cast<int>(fd));
  json j = json::parse(text, nullptr, false);
  Handoff h;
  if (j.is_discarded()) return *err = "the previous image's handoff is not JSON", std::nullopt;
  if (!handoff_from_json(j, &h, err)) return std::nullopt;
  return h;
}

}  // namespace agent
