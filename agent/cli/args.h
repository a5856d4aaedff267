// The command line, parsed (CLI11, in args.cc only): one verb, its own flags, its positional
// arguments. Anything a verb does not take, a bad number or duration, a misspelt verb or flag
// is a usage error (exit 2) found here, before a config is read or the daemon is asked.
#pragma once

#include <optional>
#include <string>
#include <vector>

namespace agent {

struct Args {
  std::string verb;                     // "status", "fleet status", "import-pm2"
  std::string config;                   // -c/--config, default $AGENT_CONFIG or /etc/agent/agent.toml
  std::vector<std::string> positional;  // APP, N, VERSION, FILE: what the verb takes, in order

  bool json = false;          // status, releases, env, fleet status, history
  bool check = false;         // status --check
  bool show_secrets = false;  // env
  bool no_fleet = false;      // deploy
  bool deep = false;          // check --deep
  bool follow = false;        // logs -f
  std::optional<std::string> from, rev;  // deploy
  std::optional<std::string> to;         // rollback --to ID
  std::optional<std::string> release;    // env --release ID
  std::optional<std::string> socket, branch;  // post-receive
  std::optional<std::string> stream;          // logs --stream out|err
  std::optional<long> lines;                  // logs -n/--lines (default 50, all with --since)
  std::optional<long> slot;                   // logs --slot
  std::optional<long> since_s;                // logs, history --since (seconds back from now)
  long wait_s = 300;                          // upgrade --wait: how long a busy agent is waited for
};

/// Parses argv[1..]. Returns -1 when *a holds a verb to run; otherwise the exit code, with the
/// text to print: *out for --help and --version (code 0), *err for a usage error (code 2), which
/// names the verb and the offending word and, for a misspelling, the nearest right one.
int parse_args(const std::vector<std::string>& argv, Args* a, std::string* out, std::string* err);

/// The word of `candidates` nearest to `word` when it is plausibly a misspelling of it (edit
/// distance at most 2, and less than half the word), else "".
std::string nearest_word(const std::string& word, const std::vector<std::string>& candidates);

}  // namespace agent
