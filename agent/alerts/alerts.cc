#include "agent/alerts/alerts.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <utility>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include "agent/alerts/delivery.h"
#include "base/log_file.h"
#include "releases/version.h"

namespace agent {

Alerts::Alerts(std::string journal_path) : path_(std::move(journal_path)) {}
Alerts::~Alerts() = default;

void Alerts::configure(const AlertSettings& settings) {
  // A running notifier is reconfigured, never torn down here: its destructor may wait on a
  // delivery in flight, and this runs on the event loop. With no channel left it idles.
  if (delivery_) return delivery_->configure(settings);
  if (!Delivery::enabled(settings)) return;
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0) std::strcpy(host, "localhost");
  delivery_ = std::make_unique<Delivery>(settings, host, std::exchange(carried_, nullptr));
}

nlohmann::json Alerts::hand_off() {
  nlohmann::json counts = nlohmann::json::array();
  for (const auto& [key, n] : counts_) counts.push_back({key.first, key.second, n});
  return {{"counts", counts}, {"delivery", delivery_ ? delivery_->hand_off(std::chrono::seconds(5)) : nlohmann::json()}};
}

void Alerts::take_back(const nlohmann::json& state, const AlertSettings& settings) {
  delivery_.reset();  // its thread has ended
  carried_ = state.value("delivery", nlohmann::json());
  configure(settings);
}

void Alerts::take_over(const nlohmann::json& state) {
  try {
    for (const auto& c : state.at("counts")) counts_[{c.at(0).get<std::string>(), c.at(1).get<std::string>()}] = c.at(2).get<std::uint64_t>();
    carried_ = state.at("delivery");
  } catch (const std::exception& e) {
    spdlog::error("the alert counts of the previous image of the agent are lost: {}", e.what());
  }
}

void Alerts::raise(const Alert& a) {
  spdlog::warn("ALERT {} [{}]: {}{}", a.app, a.kind, a.summary, a.detail.empty() ? "" : " — " + a.detail);
  counts_[{a.app, a.kind}]++;
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  nlohmann::json j = {{"time", releases::iso_time(std::chrono::system_clock::to_time_t(now))},
                      {"time_ms", ms},   {"app", a.app},         {"kind", a.kind}, {"summary", a.summary},
                      {"detail", a.detail}, {"pid", a.pid},      {"release", a.release}};
  std::string line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
  int fd = ::open(path_.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
  if (fd < 0 || ::write(fd, line.data(), line.size()) != static_cast<ssize_t>(line.size()))
    spdlog::error("cannot record alert in {}: {}", path_, std::strerror(errno));
  struct stat st {};
  bool full = fd >= 0 && ::fstat(fd, &st) == 0 && static_cast<std::uint64_t>(st.st_size) >= kMaxBytes;
  if (fd >= 0) ::close(fd);
  if (full) base::rotate_numbered(path_, kKeepFiles);  // alerts.jsonl.1 .. .3: bounded
  if (delivery_) delivery_->submit(a, now);
}

}  // namespace agent
