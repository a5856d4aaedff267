#include "agent/fleet/waves.h"

#include <algorithm>

namespace agent::fleet {

std::vector<int> wave_bounds(const std::vector<FleetWave>& waves, int hosts) {
  std::vector<int> bounds;
  if (hosts <= 0) return bounds;
  std::vector<FleetWave> w = waves.empty() ? std::vector<FleetWave>{{100, true}} : waves;
  int end = 0;
  for (size_t i = 0; end < hosts; i = std::min(i + 1, w.size() - 1)) {
    int size = w[i].percent ? (w[i].count * hosts + 99) / 100 : w[i].count;
    end = std::min(hosts, end + std::max(1, size));
    bounds.push_back(end);
  }
  return bounds;
}

Decision decide(const std::vector<FleetWave>& waves, const WaveView& view) {
  Decision d;
  // Hosts that ask count even when they did not register (yet): a wave never shrinks below them.
  int hosts = std::max(view.hosts, view.done + static_cast<int>(view.holding.size()));
  auto bounds = wave_bounds(waves, std::max(1, hosts));
  d.waves = static_cast<int>(bounds.size());
  // The open wave: the first whose end is past the hosts already done.
  while (d.wave + 1 < d.waves && bounds[static_cast<size_t>(d.wave)] <= view.done) ++d.wave;
  d.capacity = std::max(0, bounds[static_cast<size_t>(d.wave)] - view.done);
  int free = d.capacity - static_cast<int>(view.holding.size());
  std::vector<Waiter> line = view.waiting;
  std::stable_sort(line.begin(), line.end(), [](const Waiter& a, const Waiter& b) { return a.asked < b.asked; });
  for (const auto& w : line) {
    if (free-- <= 0) break;
    d.granted.push_back(w.host);
  }
  return d;
}

std::string waves_text(const std::vector<FleetWave>& waves) {
  std::string s = "[";
  for (size_t i = 0; i < waves.size(); ++i)
    s += (i ? ", " : "") + std::to_string(waves[i].count) + (waves[i].percent ? "%" : "");
  return s + "]";
}

}  // namespace agent::fleet
