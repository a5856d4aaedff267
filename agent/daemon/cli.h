// The `agent` command line: parses the verb and its options, runs it, returns the exit code.
// Exit codes: 0 done, 1 refused or failed (a message says why), 2 usage error.
#pragma once

#include <string>
#include <vector>

namespace agent {

int run_cli(int argc, char** argv);

/// `agent fleet ...` (cli_fleet.cc): `args` after "fleet", the control socket to ask.
int run_fleet_cli(const std::string& socket, const std::vector<std::string>& args, bool as_json);
extern const char* const kFleetHelp;

}  // namespace agent
