// What version a tree holds, and the release id it gets.
#pragma once

#include <ctime>
#include <string>

namespace releases {

/// Reads the version of the tree at `dir` from `dir/watch`: the "version" field when the file
/// is named package.json, else the first line of the file (a marker such as VERSION), trimmed.
/// `*raw` receives the file's bytes, so a caller can later tell whether it changed.
bool read_version(const std::string& dir, const std::string& watch, std::string* version, std::string* raw,
                  std::string* err);

/// The same from the watched file's text already read (`where` names it in messages).
bool version_from_text(const std::string& watch, const std::string& text, const std::string& where,
                       std::string* version, std::string* err);
/// The version from package.json text (`where` names the file in messages).
bool version_from_package_json(const std::string& text, const std::string& where, std::string* version,
                               std::string* err);

/// Refuses a version that could escape or garble a directory name: empty, over 64 bytes,
/// containing '/', "..", or control characters.
bool check_version(const std::string& version, std::string* err);

/// "20261122T101500Z-1.2.3": UTC time of staging, then the version with any character outside
/// [A-Za-z0-9._+~-] replaced by '_' (and a ".tmp" ending defused). Ids sort by time as plain
/// strings.
std::string make_release_id(std::time_t when, const std::string& version);

/// True for a name that can only be a release directory inside releases/: no '/', no "..",
/// no leading '.', no ".tmp" ending, only the characters make_release_id produces.
bool valid_release_id(const std::string& id);

/// "2026-11-22T10:15:00Z".
std::string iso_time(std::time_t when);

/// Now, with milliseconds, as the app logs and history.jsonl stamp it: "2026-12-03T21:00:00.123Z".
std::string now_stamp();

}  // namespace releases
