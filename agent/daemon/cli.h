// The `agent` command line: parses the verb and its options, runs it, returns the exit code.
// Exit codes: 0 done, 1 refused or failed (a message says why), 2 usage error.
#pragma once

namespace agent {

int run_cli(int argc, char** argv);

}  // namespace agent
