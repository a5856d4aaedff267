// Small helpers shared by the unit tests: a temporary directory that cleans up after itself,
// and file writing in one line.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "base/fs.h"

namespace testutil {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/agent-test-XXXXXX";
    path = ::mkdtemp(tmpl);
  }
  ~TempDir() {
    std::string err;
    base::remove_tree(path, &err);
  }
  std::string operator/(const std::string& rel) const { return path + "/" + rel; }
};

inline void write(const std::string& path, const std::string& text, mode_t mode = 0644) {
  std::string err;
  size_t slash = path.rfind('/');
  base::make_dirs(path.substr(0, slash), &err);
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
  ::chmod(path.c_str(), mode);
}

inline std::string read(const std::string& path) {
  std::string out, err;
  base::read_file(path, &out, &err);
  return out;
}

}  // namespace testutil
