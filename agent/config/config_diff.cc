// changed_keys (config_diff.h).
#include "agent/config/config_diff.h"

#include <map>
#include <sstream>
#include <toml++/toml.h>

namespace agent {
namespace {

using Flat = std::map<std::string, std::string>;  // dotted key -> the value as TOML text

void flatten(const toml::node& node, const std::string& key, Flat* out);

void flatten_table(const toml::table& t, const std::string& prefix, Flat* out) {
  for (const auto& [k, v] : t) flatten(v, prefix.empty() ? std::string(k.str()) : prefix + "." + std::string(k.str()), out);
}

void flatten(const toml::node& node, const std::string& key, Flat* out) {
  if (const toml::table* t = node.as_table()) return flatten_table(*t, key, out);
  if (const toml::array* a = node.as_array(); a && key == "app" && a->is_array_of_tables()) {
    for (const auto& item : *a) {
      const toml::table& app = *item.as_table();
      std::string name = app["name"].value_or(std::string("?"));
      (*out)[key + "." + name] = "";  // the app itself: present or not
      flatten_table(app, key + "." + name, out);
    }
    return;
  }
  std::ostringstream text;
  if (const toml::array* a = node.as_array()) text << *a;
  else node.visit([&](const auto& v) { text << v; });
  (*out)[key] = text.str();
}

Flat flat(const std::string& text) {
  Flat out;
  try {
    flatten_table(toml::parse(text), "", &out);
  } catch (const toml::parse_error&) {
  }
  return out;
}

}  // namespace

std::vector<std::string> changed_keys(const std::string& old_text, const std::string& new_text) {
  Flat a = flat(old_text), b = flat(new_text);
  std::vector<std::string> out;
  auto is_app = [](const std::string& k) { return k.starts_with("app.") && k.find('.', 4) == std::string::npos; };
  auto under_listed = [&](const std::string& k) {  // a key of an app already named as added or removed
    for (const auto& o : out)
      if (o.ends_with(")") && k.starts_with(o.substr(0, o.find(' ')) + ".")) return true;
    return false;
  };
  for (const auto& [k, v] : a) {
    auto it = b.find(k);
    if (it == b.end()) {
      if (!under_listed(k)) out.push_back(is_app(k) ? k + " (removed)" : k);
    } else if (it->second != v) {
      out.push_back(k);
    }
  }
  for (const auto& [k, v] : b)
    if (!a.count(k) && !under_listed(k)) out.push_back(is_app(k) ? k + " (added)" : k);
  return out;
}

}  // namespace agent
