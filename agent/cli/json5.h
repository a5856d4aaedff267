// JSON5, as PM2 ecosystem files are written (comments, trailing commas, bare keys, 'strings',
// `module.exports = {...};`), rewritten into plain JSON for nlohmann-json, remembering where
// each byte came from so that a syntax error points into the user's file.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace agent {

/// "file:line:col" of byte `at` of `text` (columns count characters, not UTF-8 bytes).
std::string where(const std::string& text, const std::string& file, size_t at);

/// A character of a bare key or word: letters, digits, '_' and '$'.
bool ident_char(char c);

/// Comments and trailing commas dropped, bare keys quoted, 'strings' made "strings"; (*from)[i]
/// is the offset in `in` of (*json)[i]. False with *err ("file:line:col: unterminated string").
bool json5_to_json(const std::string& in, const std::string& file, std::string* json, std::vector<size_t>* from, std::string* err);

}  // namespace agent
