#include "base/units.h"

#include <csignal>
#include <cstring>
#include <limits>
#include <utility>

namespace base {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Reads a run of digits at text[*pos]; false if there is none or it overflows.
bool read_number(std::string_view text, size_t* pos, std::uint64_t* out) {
  size_t start = *pos;
  std::uint64_t v = 0;
  while (*pos < text.size() && is_digit(text[*pos])) {
    std::uint64_t d = static_cast<std::uint64_t>(text[*pos] - '0');
    if (v > (std::numeric_limits<std::uint64_t>::max() - d) / 10) return false;
    v = v * 10 + d;
    ++*pos;
  }
  *out = v;
  return *pos > start;
}

constexpr std::pair<const char*, int> kSignals[] = {
    {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT},   {"KILL", SIGKILL},
    {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"TERM", SIGTERM},   {"CONT", SIGCONT},
    {"STOP", SIGSTOP}, {"WINCH", SIGWINCH}, {"ALRM", SIGALRM}, {"PWR", SIGPWR},
};

}  // namespace

std::optional<Millis> parse_duration(std::string_view text, std::string* err) {
  if (text.empty()) {
    *err = "empty duration (write e.g. \"10s\", \"500ms\", \"2m\")";
    return std::nullopt;
  }
  constexpr std::uint64_t kMax = std::uint64_t{1} << 52;  // far beyond any sane timeout
  std::uint64_t total = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    std::uint64_t n = 0;
    if (!read_number(text, &pos, &n)) {
      *err = "\"" + std::string(text) + "\" is not a duration (write e.g. \"10s\", \"500ms\", \"2m\", \"1h\")";
      return std::nullopt;
    }
    size_t unit_start = pos;
    while (pos < text.size() && !is_digit(text[pos])) ++pos;
    std::string_view unit = text.substr(unit_start, pos - unit_start);
    std::uint64_t scale = 0;
    if (unit == "ms") scale = 1;
    else if (unit == "s") scale = 1000;
    else if (unit == "m") scale = 60'000;
    else if (unit == "h") scale = 3'600'000;
    else if (unit == "d") scale = 86'400'000;
    if (scale == 0) {
      *err = unit.empty() ? "\"" + std::string(text) + "\" has no unit (use ms, s, m, h or d)"
                          : "\"" + std::string(text) + "\": unknown unit \"" + std::string(unit) +
                                "\" (use ms, s, m, h or d)";
      return std::nullopt;
    }
    if (n > kMax / scale || total + n * scale > kMax) {
      *err = "\"" + std::string(text) + "\" is too long a duration";
      return std::nullopt;
    }
    total += n * scale;
  }
  return Millis(static_cast<Millis::rep>(total));
}

std::optional<std::uint64_t> parse_size(std::string_view text, std::string* err) {
  size_t pos = 0;
  std::uint64_t n = 0;
  if (!read_number(text, &pos, &n)) {
    *err = "\"" + std::string(text) + "\" is not a size (write e.g. \"500M\", \"64K\", \"2G\")";
    return std::nullopt;
  }
  std::string_view unit = text.substr(pos);
  if (!unit.empty() && (unit.back() == 'B' || unit.back() == 'b') && unit.size() <= 2) unit.remove_suffix(1);
  std::uint64_t scale = 0;
  if (unit.empty()) scale = 1;
  else if (unit == "K" || unit == "k") scale = 1ull << 10;
  else if (unit == "M" || unit == "m") scale = 1ull << 20;
  else if (unit == "G" || unit == "g") scale = 1ull << 30;
  else if (unit == "T" || unit == "t") scale = 1ull << 40;
  if (scale == 0) {
    *err = "\"" + std::string(text) + "\": unknown size unit (use K, M or G)";
    return std::nullopt;
  }
  if (n > std::numeric_limits<std::uint64_t>::max() / scale) {
    *err = "\"" + std::string(text) + "\" is too large";
    return std::nullopt;
  }
  return n * scale;
}

std::optional<int> parse_signal(std::string_view text) {
  std::string up;
  for (char c : text) up += static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
  std::string_view name = up;
  if (name.starts_with("SIG")) name.remove_prefix(3);
  for (const auto& [n, sig] : kSignals)
    if (name == n) return sig;
  return std::nullopt;
}

std::string signal_name(int sig) {
  for (const auto& [n, s] : kSignals)
    if (s == sig) return std::string("SIG") + n;
  return "signal " + std::to_string(sig);
}

std::string format_duration(Millis ms) {
  auto v = ms.count();
  if (v % 3'600'000 == 0 && v > 0) return std::to_string(v / 3'600'000) + "h";
  if (v % 60'000 == 0 && v > 0) return std::to_string(v / 60'000) + "m";
  if (v % 1000 == 0) return std::to_string(v / 1000) + "s";
  if (v > 1000 && v % 100 == 0) return std::to_string(v / 1000) + "." + std::to_string((v % 1000) / 100) + "s";
  return std::to_string(v) + "ms";
}

std::string format_size(std::uint64_t bytes) {
  const char* units[] = {"", "K", "M", "G", "T"};
  int u = 0;
  while (u < 4 && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++u;
  }
  return std::to_string(bytes) + units[u];
}

}  // namespace base
