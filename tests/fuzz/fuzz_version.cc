// libFuzzer target: the version read from a package.json or a marker file, on any bytes. A
// version it accepts must pass check_version and make a valid release id.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "releases/version.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  for (const char* watch : {"package.json", "VERSION"}) {
    std::string version, err;
    if (releases::version_from_text(watch, text, watch, &version, &err)) {
      std::string why;
      if (!releases::check_version(version, &why)) std::abort();
      if (!releases::valid_release_id(releases::make_release_id(1764000000, version))) std::abort();
    } else if (err.empty()) {
      std::abort();  // refused without saying why
    }
  }
  return 0;
}
