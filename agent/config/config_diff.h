// What a config reload changed, by key, for history.jsonl and the log: "app.web.instances",
// "app.web.env.API_URL", "alerts.smtp_host", "app.api (added)".
#pragma once

#include <string>
#include <vector>

namespace agent {

/// The keys whose values differ between two valid agent.toml texts, in order. Apps ([[app]]) are
/// matched by name, not position; an app added or removed is one entry.
std::vector<std::string> changed_keys(const std::string& old_text, const std::string& new_text);

}  // namespace agent
