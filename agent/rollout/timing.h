// The rollout's fixed timings: crash backoff, what counts as healthy, the crash-loop count and
// the memory check's period. Pure: the machine and its tests share them.
#pragma once

#include <algorithm>
#include <chrono>
#include <string>

#include "base/event_loop.h"
#include "base/units.h"

namespace agent::timing {

using std::chrono::milliseconds;

constexpr milliseconds kHealthyPeriod{30'000};  // a worker up this long resets its slot's backoff
constexpr milliseconds kMaxBackoff{30'000};
constexpr int kCrashLoop = 5;                    // crashes in a row that raise the alert
constexpr milliseconds kMemoryCheck{2'000};

/// 0 for the first start, then 100ms doubling to 30s for each crash in a row.
inline milliseconds backoff(int crashes) {
  if (crashes <= 0) return milliseconds(0);
  milliseconds d(100);
  for (int i = 1; i < crashes && d < kMaxBackoff; ++i) d *= 2;
  return std::min(d, kMaxBackoff);
}

inline std::string ms_text(base::Clock::duration d) {
  return base::format_duration(std::chrono::duration_cast<milliseconds>(d));
}

}  // namespace agent::timing
