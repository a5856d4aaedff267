// Small text helpers shared by the config reader and the command line.
#pragma once

#include <algorithm>
#include <string_view>
#include <vector>

namespace base {

/// Levenshtein distance: the fewest one-character insertions, deletions and substitutions that
/// turn `a` into `b`. For "did you mean ...?" hints.
inline size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace base
