// Durations, sizes and signal names as they are written in agent.toml.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace base {

using Millis = std::chrono::milliseconds;

/// "250ms", "30s", "2m", "1h", "1d", or a sum such as "1m30s". Whole numbers only.
/// Returns nullopt and sets *err to a reason when the text is not a duration.
std::optional<Millis> parse_duration(std::string_view text, std::string* err);

/// "500M", "64K", "2G" (powers of 1024), or a plain byte count. A trailing "B" is allowed.
std::optional<std::uint64_t> parse_size(std::string_view text, std::string* err);

/// "SIGTERM" or "TERM" (any case) -> signal number; nullopt if unknown.
std::optional<int> parse_signal(std::string_view text);

/// Signal number -> "SIGTERM"; "signal N" for one without a name.
std::string signal_name(int sig);

/// 1500ms -> "1.5s", 60000 -> "1m", 250 -> "250ms": short, for messages.
std::string format_duration(Millis ms);

/// 524288000 -> "500M": short, for messages.
std::string format_size(std::uint64_t bytes);

}  // namespace base
