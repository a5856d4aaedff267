// `agent import-pm2 FILE`: a PM2 ecosystem file as an agent.toml, on stdout (import_pm2.h).
// What was not carried over is a "# pm2" comment in the file and a count on stderr.
#include <cstdio>
#include <string>

#include "agent/cli/import_pm2.h"
#include "agent/cli/verbs.h"
#include "base/fs.h"

namespace agent {

int cmd_import_pm2(const Args& a) {
  const std::string& file = a.positional.at(0);
  std::string text, err;
  if (!base::read_file(file, &text, &err)) return std::fprintf(stderr, "agent: %s\n", err.c_str()), 1;
  Pm2Import out;
  if (!import_pm2(text, file, &out, &err)) return std::fprintf(stderr, "agent: %s\n", err.c_str()), 1;
  std::fputs(out.toml.c_str(), stdout);
  if (!out.warnings.empty())
    std::fprintf(stderr, "agent: %zu PM2 key%s not carried over: see the \"# pm2\" comments; then agent check -c FILE\n",
                 out.warnings.size(), out.warnings.size() == 1 ? "" : "s");
  return 0;
}

}  // namespace agent
