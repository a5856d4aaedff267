// The `agent` command line: parses the verb and its flags (args.h), runs it, returns the exit
// code. Exit codes: 0 done, 1 refused or failed (a message says why), 2 usage error.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace agent {

int run_cli(int argc, char** argv);

/// Rows as left-aligned columns, two spaces apart, trailing spaces trimmed.
void print_table(const std::vector<std::vector<std::string>>& rows);

/// `agent status --check`, as Nagios-style checks want it: 0 every app has `instances` ready
/// workers, 1 degraded (some, not all), 2 down (an app stopped or with none ready). One line
/// per app in *report ("OK web: 2 of 2 workers ready"). `status` is the daemon's status JSON.
int status_check(const nlohmann::json& status, std::string* report);

}  // namespace agent
