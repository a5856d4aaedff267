// The waves of a fleet rollout, as Ansible's `serial`: [1, "25%", "100%"] lets one host roll
// a version, then 25% of the registered hosts at a time, then the rest; the last entry
// repeats; a percentage rounds up. A wave opens when every host of the waves before it is
// done. Slots go to waiting hosts in the order they asked (their etcd revisions), never by
// clock. Pure: the coordinator (fleet.h) feeds it what it read from etcd.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "agent/config/config.h"

namespace agent::fleet {

/// Where each wave ends, counted in hosts (cumulative), for `hosts` registered hosts: [1, 3, 4]
/// for [1, "50%", "100%"] and 4 hosts. The last bound is `hosts`.
std::vector<int> wave_bounds(const std::vector<FleetWave>& waves, int hosts);

struct Waiter {
  std::string host;
  std::int64_t asked = 0;  // the create_revision of its request
};

struct WaveView {
  int hosts = 0;                     // registered (alive) hosts
  int done = 0;                      // hosts done with this version
  std::vector<std::string> holding;  // hosts holding a slot (rolling or baking)
  std::vector<Waiter> waiting;       // hosts asking, not holding
};

struct Decision {
  int wave = 0;      // the open wave, from 0
  int waves = 0;     // how many waves there are for this many hosts
  int capacity = 0;  // hosts that may hold a slot at once now (done ones excluded)
  std::vector<std::string> granted;  // waiting hosts that may take a slot now, in order of asking
};

Decision decide(const std::vector<FleetWave>& waves, const WaveView& view);

/// "[1, 25%, 100%]", as the config spells it.
std::string waves_text(const std::vector<FleetWave>& waves);

}  // namespace agent::fleet
