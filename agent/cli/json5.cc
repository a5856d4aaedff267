// JSON5 -> JSON (json5.h).
#include "agent/cli/json5.h"

#include <algorithm>
#include <cctype>

namespace agent {
namespace {

constexpr size_t npos = std::string::npos;

// Past white space and comments. An unterminated /* comment stops at its start.
size_t skip_blank(const std::string& s, size_t i) {
  while (i < s.size()) {
    if (std::isspace(static_cast<unsigned char>(s[i]))) i++;
    else if (s.compare(i, 2, "//") == 0) i = std::min(s.find('\n', i), s.size());
    else if (s.compare(i, 2, "/*") == 0 && s.find("*/", i + 2) != npos) i = s.find("*/", i + 2) + 2;
    else break;
  }
  return i;
}

// The first character at or after i that is not blank or in a comment; 0 at the end.
char next_char(const std::string& s, size_t i) { return skip_blank(s, i) < s.size() ? s[skip_blank(s, i)] : 0; }

}  // namespace

// "file:line:col" of byte `at` of `text` (columns count characters, not UTF-8 bytes).
std::string where(const std::string& text, const std::string& file, size_t at) {
  int line = 1, col = 1;
  for (size_t i = 0; i < at && i < text.size(); ++i) {
    if (text[i] == '\n') line++, col = 1;
    else if ((text[i] & 0xC0) != 0x80) col++;
  }
  return file + ":" + std::to_string(line) + ":" + std::to_string(col);
}

bool ident_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$'; }

bool json5_to_json(const std::string& in, const std::string& file, std::string* json, std::vector<size_t>* from,
                   std::string* err) {
  auto put = [&](char c, size_t at) { *json += c, from->push_back(at); };
  size_t i = skip_blank(in, in.starts_with("\xEF\xBB\xBF") ? 3 : 0);
  if (in.compare(i, 14, "module.exports") == 0 && next_char(in, i + 14) == '=') i = skip_blank(in, i + 14) + 1;
  while (i < in.size()) {
    char c = in[i];
    if (in.compare(i, 2, "//") == 0 || in.compare(i, 2, "/*") == 0) {
      if (skip_blank(in, i) == i) return *err = where(in, file, i) + ": unterminated /* comment", false;
      i = skip_blank(in, i);
    } else if (c == '"' || c == '\'') {
      size_t start = i;
      put('"', i++);
      while (i < in.size() && in[i] != c && in[i] != '\n') {
        bool escape = in[i] == '\\' && i + 1 < in.size();
        if (escape ? in[i + 1] != '\'' : in[i] == '"') put('\\', i);  // JSON has no \', and " in a 'string' needs one
        i += escape;
        put(in[i], i), i++;
      }
      if (i >= in.size() || in[i] != c) return *err = where(in, file, start) + ": unterminated string", false;
      put('"', i++);
    } else if (c == ',' && (next_char(in, i + 1) == '}' || next_char(in, i + 1) == ']')) {
      i++;  // a trailing comma
    } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_' || c == '$') {
      size_t end = i;
      while (end < in.size() && ident_char(in[end])) end++;
      bool key = next_char(in, end) == ':';
      if (key) put('"', i);
      for (; i < end; i++) put(in[i], i);
      if (key) put('"', end - 1);
    } else if (c == ';' && skip_blank(in, i + 1) == in.size()) {
      i++;  // the end of `module.exports = {...};`
    } else {
      put(c, i++);
    }
  }
  return true;
}


}  // namespace agent
