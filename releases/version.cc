#include "releases/version.h"

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "base/fs.h"

namespace releases {

bool version_from_package_json(const std::string& text, const std::string& where, std::string* version,
                               std::string* err) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    // Turn the byte offset into line:column, which is what an operator can find in an editor.
    // The parser reports where it gave up: the end of the offending token.
    size_t line = 1, col = 1;
    for (size_t i = 0; i + 1 < e.byte && i < text.size(); ++i) {
      if (text[i] == '\n') ++line, col = 1;
      else ++col;
    }
    *err = where + ":" + std::to_string(line) + ":" + std::to_string(col) + ": not valid JSON (the error ends here)";
    return false;
  } catch (const nlohmann::json::exception& e) {  // e.g. a number too large for a double
    *err = where + ": not usable JSON: " + e.what();
    return false;
  }
  if (!j.is_object()) return *err = where + ": not a JSON object", false;
  auto it = j.find("version");
  if (it == j.end()) return *err = where + ": no \"version\" field", false;
  if (!it->is_string()) return *err = where + ": \"version\" is not a string", false;
  *version = it->get<std::string>();
  return check_version(*version, err) || (*err = where + ": " + *err, false);
}

bool version_from_text(const std::string& watch, const std::string& text, const std::string& where,
                       std::string* version, std::string* err) {
  size_t slash = watch.rfind('/');
  std::string base = slash == std::string::npos ? watch : watch.substr(slash + 1);
  if (base == "package.json") return version_from_package_json(text, where, version, err);
  std::string line = text.substr(0, text.find('\n'));
  const char* ws = " \t\r\v\f";
  size_t b = line.find_first_not_of(ws), e = line.find_last_not_of(ws);
  *version = b == std::string::npos ? "" : line.substr(b, e - b + 1);
  return check_version(*version, err) || (*err = where + ": " + *err, false);
}

bool read_version(const std::string& dir, const std::string& watch, std::string* version, std::string* raw,
                  std::string* err) {
  std::string path = dir + "/" + watch;
  if (!base::read_file(path, raw, err)) return false;
  return version_from_text(watch, *raw, path, version, err);
}

bool check_version(const std::string& v, std::string* err) {
  if (v.empty()) return *err = "the version is empty", false;
  if (v.size() > 64) return *err = "the version is " + std::to_string(v.size()) + " bytes long (at most 64)", false;
  if (v.find('/') != std::string::npos) return *err = "the version \"" + v + "\" contains '/'", false;
  if (v.find("..") != std::string::npos) return *err = "the version \"" + v + "\" contains \"..\"", false;
  for (unsigned char c : v)
    if (c < 0x20 || c == 0x7f) return *err = "the version contains a control character", false;
  return true;
}

std::string make_release_id(std::time_t when, const std::string& version) {
  std::tm tm{};
  gmtime_r(&when, &tm);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%SZ", &tm);
  std::string id = std::string(stamp) + "-";
  for (char c : version) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '+' || c == '~' || c == '-';
    id += ok ? c : '_';
  }
  // ".tmp" marks a half-staged release, cleaned at start: a finished one must never look like it.
  if (id.ends_with(".tmp")) id.replace(id.size() - 4, 1, "_");
  return id;
}

bool valid_release_id(const std::string& id) {
  if (id.empty() || id.size() > 128 || id[0] == '.' || id.ends_with(".tmp") || id.find("..") != std::string::npos) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '+' || c == '~' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::string iso_time(std::time_t when) {
  std::tm tm{};
  gmtime_r(&when, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string now_stamp() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::string s = iso_time(std::chrono::system_clock::to_time_t(now));
  char frac[8];
  std::snprintf(frac, sizeof frac, ".%03d", static_cast<int>(ms));
  return s.insert(s.size() - 1, frac);
}

}  // namespace releases
