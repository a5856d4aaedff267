// `agent import-pm2 FILE`: a PM2 ecosystem file turned into the text of an agent.toml.
//
// PM2 accepts {"apps": [...]}, a bare array of apps, or one app object, in JSON or JSON5
// (comments, trailing commas, unquoted keys, single-quoted strings). What maps onto an agent key
// is written as that key; every other PM2 key becomes a "# pm2 ..." comment in its app saying
// why it was not carried over, or what to do instead. Pure: no files, no environment, no host
// lookups; the result is meant for `agent check`.
#pragma once

#include <string>
#include <vector>

namespace agent {

struct Pm2Import {
  std::string toml;                   // the agent.toml text
  std::vector<std::string> warnings;  // one line per PM2 key not carried over: "app nuomi: pm2 \"watch\": ..."
};

/// Converts `text`, read from `file_name` (used in messages and the header only). Returns false
/// with *err set to one line on bad input: "pm2.json:12:5: unexpected ...; expected ':'" for a
/// syntax error, "pm2.json: ..." for a file that parses but holds no usable app. Never throws.
bool import_pm2(const std::string& text, const std::string& file_name, Pm2Import* out, std::string* err);

}  // namespace agent
