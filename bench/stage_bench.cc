// Times the agent's own staging on a tree, the way a deploy runs it: releases::ReleaseStore::stage
// (copy, check, link, syncfs, rename, journal), from a directory and from a git commit.
//   stage_bench DIR STATE ROUNDS [GIT_REPO REV]   -> prints "copy <median ms>" and "git <median ms>"
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "base/fs.h"
#include "releases/store.h"

namespace {
double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double time_stage(releases::ReleaseStore& store, const releases::StageRequest& req) {
  releases::Release r;
  std::string err;
  auto t0 = std::chrono::steady_clock::now();
  if (!store.stage(req, &r, &err)) {
    std::fprintf(stderr, "stage failed: %s\n", err.c_str());
    std::exit(1);
  }
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  base::remove_tree(r.dir, &err);
  return ms;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc != 4 && argc != 6) {
    std::fprintf(stderr, "usage: stage_bench DIR STATE ROUNDS [GIT_REPO REV]\n");
    return 2;
  }
  releases::ReleaseStore store(argv[2]);
  int rounds = std::atoi(argv[3]);
  releases::StageRequest copy;
  copy.from = argv[1];
  std::vector<double> copies, exports;
  for (int i = 0; i < rounds; ++i) copies.push_back(time_stage(store, copy));
  std::printf("copy %.1f\n", median(copies));
  if (argc == 6) {
    releases::StageRequest git;
    git.git_repo = argv[4];
    git.revision = argv[5];
    for (int i = 0; i < rounds; ++i) exports.push_back(time_stage(store, git));
    std::printf("git %.1f\n", median(exports));
  }
  return 0;
}
