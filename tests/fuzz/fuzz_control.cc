// libFuzzer target: one control-socket request line, as any local client could send it. A
// request it accepts holds only what the daemon expects (a known verb, bounded strings without
// NUL, steps 1..1000); a refusal says why.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "agent/daemon/control.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  agent::ControlRequest req;
  std::string err;
  if (agent::parse_control_request(std::string_view(reinterpret_cast<const char*>(data), size), &req, &err)) {
    if (req.verb.empty() || req.steps < 1 || req.steps > 1000) std::abort();
    for (const auto* s : {&req.app, &req.from, &req.to, &req.rev, &req.ref})
      if (s->size() > 4096 || s->find('\0') != std::string::npos) std::abort();
  } else if (err.empty()) {
    std::abort();
  }
  return 0;
}
