// What one image of the agent hands the next across execve (`agent upgrade`, upgrade.cc): the
// fds it keeps open and what they are, as JSON in a memfd whose number is in $AGENT_HANDOFF_FD.
// The new image reads it first thing in `agent run`, removes the variable and closes the memfd.
#pragma once

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace agent {

inline constexpr const char* kHandoffEnv = "AGENT_HANDOFF_FD";

struct Handoff {
  int generation = 0;        // how many upgrades this pid went through
  std::string from_version;  // of the image that wrote it
  long uid = -1;             // who asked for the upgrade
  std::string config_text;   // the config the previous image ran: the new one runs the same
  std::chrono::steady_clock::time_point began;  // when it was asked (history: how long it took)
  std::string notify_socket;  // $NOTIFY_SOCKET, captured by the first image
  long long watchdog_usec = 0;
  std::map<std::string, int> sockets;  // canonical address -> listening fd
  std::vector<std::string> activated;  // of those, the ones systemd passed in
  int control_fd = -1, metrics_fd = -1;
  std::map<std::string, nlohmann::json> apps;  // AppSupervisor::handoff() by app
  nlohmann::json alerts;                       // Alerts::hand_off()
};

nlohmann::json handoff_json(const Handoff& h);
/// False with *err when `j` is not a handoff this image understands.
bool handoff_from_json(const nlohmann::json& j, Handoff* out, std::string* err);

/// Writes `h` into a new memfd (not close-on-exec); its fd, or -1 with *err.
int write_handoff(const Handoff& h, std::string* err);
/// In the new image: the handoff named by $AGENT_HANDOFF_FD, if there is one; the variable is
/// removed and the memfd closed. An unreadable one is std::nullopt with *err set.
std::optional<Handoff> take_handoff(std::string* err);

}  // namespace agent
