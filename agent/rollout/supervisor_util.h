// Constants and small helpers shared by supervisor.cc (operations, the rolling swap) and
// workers.cc (one worker's life). Internal to AppSupervisor; not a public interface.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>

#include "base/event_loop.h"
#include "base/units.h"
#include "releases/version.h"

namespace agent::supervisor_util {

using std::chrono::milliseconds;

constexpr milliseconds kHealthyPeriod{30'000};  // a worker up this long resets its slot's backoff
constexpr milliseconds kMaxBackoff{30'000};
constexpr int kCrashLoop = 5;                    // crashes in a row that raise the alert
constexpr milliseconds kMemoryCheck{2'000};

inline milliseconds backoff(int crashes) {
  if (crashes <= 0) return milliseconds(0);
  milliseconds d(100);
  for (int i = 1; i < crashes && d < kMaxBackoff; ++i) d *= 2;
  return std::min(d, kMaxBackoff);
}

inline std::string ms_text(base::Clock::duration d) {
  return base::format_duration(std::chrono::duration_cast<milliseconds>(d));
}

inline std::uint64_t rss_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/statm");
  std::uint64_t size = 0, resident = 0;
  if (!(in >> size >> resident)) return 0;
  return resident * static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
}

inline std::string now_stamp() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<milliseconds>(now.time_since_epoch()).count() % 1000;
  std::string s = releases::iso_time(std::chrono::system_clock::to_time_t(now));
  char frac[8];
  std::snprintf(frac, sizeof frac, ".%03d", static_cast<int>(ms));
  return s.insert(s.size() - 1, frac);
}

}  // namespace agent::supervisor_util
