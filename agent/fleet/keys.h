// What the fleet's keys in etcd hold (the layout is at the top of fleet.h), read and written
// as values: the version of a key path, JSON fields read without throwing, one version's keys
// read from a range, the view the waves are computed from. Shared by the coordinator
// (fleet.cc) and its operator verbs (fleet_status.cc); no etcd calls here.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "agent/fleet/etcd.h"
#include "agent/fleet/waves.h"

namespace agent::fleet {

/// A version as one path segment: '/' and '%' as %2F and %25; and back.
std::string escape(const std::string& s);
std::string unescape(const std::string& s);
std::string now_iso();
/// A value as a JSON object ({} when it is not one).
nlohmann::json parse(const std::string& s);
/// A field of the type wanted, or "" / false: whatever another program wrote there.
std::string text(const nlohmann::json& j, const char* key);
bool flag(const nlohmann::json& j, const char* key);
/// A state/<host> value: {"state":..., "time":..., "reason":...}.
std::string state_value(const std::string& state, const std::string& reason = "");

// What one version's keys say, read in one range.
struct VersionKeys {
  std::optional<KeyValue> halt;
  std::vector<Waiter> want;
  std::map<int, std::pair<std::string, bool>> slots;  // slot number -> (host, done)
  std::vector<std::string> slot;                       // hosts holding a slot (not done)
  int done = 0;                                        // slots of hosts done
  std::map<std::string, nlohmann::json> state;  // host -> {"state":..., "time":..., "reason":...}
  std::int64_t first_revision = 0;    // when the version was first asked for
};

VersionKeys read_version(const std::vector<KeyValue>& kvs, const std::string& vp);
/// A host's state for the version ("" when it has none).
std::string state_of(const VersionKeys& v, const std::string& host);
/// "halted by web-01: bake failed: ..."
std::string halt_text(const KeyValue& halt);
/// The hosts of alive/<host> keys read under `alive_prefix`.
std::set<std::string> hosts_of(const std::vector<KeyValue>& alive, const std::string& alive_prefix);
/// What the waves are computed from: every registered host and every one that took part in
/// this version (done, holding or waiting), alive now or not.
WaveView view_of(const VersionKeys& v, const std::set<std::string>& alive);

}  // namespace agent::fleet
