// libFuzzer target: the config loader on any bytes. It must return (true, or false with
// errors that each name a line) and never crash, hang or read out of bounds.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "agent/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  agent::Config cfg;
  std::vector<agent::ConfigError> errors;
  bool ok = agent::parse_config(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz.toml", &cfg, &errors);
  if (!ok && errors.empty()) std::abort();  // refused without saying why
  for (const auto& e : errors)
    if (e.message.empty()) std::abort();
  return 0;
}
