// base::LogFile: worker output written by a thread of its own, rotated with no line lost, and
// never holding its caller (the event loop) when the disk does not take the lines.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include "base/log_file.h"
#include "testutil.h"

using namespace std::chrono_literals;

TEST_CASE("log file: lines in order across rotations, each file within max_size") {
  testutil::TempDir d;
  std::string path = d / "app.log";
  {
    base::LogFile log(path, 4096, 100);
    for (int i = 0; i < 5000; ++i) log.write_line("line " + std::to_string(i));
    REQUIRE(log.flush());
  }
  std::vector<std::string> lines;
  for (int i = 100; i >= 0; --i) {
    std::string p = i == 0 ? path : path + "." + std::to_string(i);
    struct stat st {};
    if (::stat(p.c_str(), &st) != 0) continue;
    CHECK(st.st_size <= 4096);
    std::string text = testutil::read(p);
    for (size_t at = 0, nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1) lines.push_back(text.substr(at, nl - at));
  }
  REQUIRE(lines.size() == 5000);
  for (int i = 0; i < 5000; ++i) REQUIRE(lines[static_cast<size_t>(i)] == "line " + std::to_string(i));
}

TEST_CASE("log file: a log that does not take lines never holds the writer's caller; what was dropped is said") {
  testutil::TempDir d;
  std::string fifo = d / "app.log";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // A reader that reads nothing yet: the pipe fills (64 KiB) and the writer thread blocks in
  // write(2), as on a hung NFS mount.
  int reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(reader >= 0);
  std::string seen;
  std::thread drain;
  {
    base::LogFile log(fifo, 1ull << 40, 1);
    std::string line(1000, 'x');
    auto began = std::chrono::steady_clock::now();
    for (int i = 0; i < 10000; ++i) log.write_line(line);  // 10 MB: more than the queue holds
    auto took = std::chrono::steady_clock::now() - began;
    CHECK(took < 2s);  // queued or dropped, never waited for
    CHECK_FALSE(log.flush(50ms));  // the writer is stuck
    // Unstick it: read everything, until the writer says what it dropped.
    ::fcntl(reader, F_SETFL, 0);
    char buf[1 << 16];
    while (seen.find("lines dropped") == std::string::npos) {
      ssize_t n = ::read(reader, buf, sizeof buf);
      REQUIRE(n > 0);
      seen.append(buf, static_cast<size_t>(n));
      if (seen.size() > (1u << 20)) seen.erase(0, seen.size() - (1u << 16));  // keep the tail
    }
    drain = std::thread([reader] {
      char sink[1 << 16];
      while (::read(reader, sink, sizeof sink) > 0) {
      }
    });
    CHECK(log.flush(5s));
  }
  drain.join();  // EOF once the LogFile closed its end
  CHECK(seen.find(" lines dropped: " + fifo + " could not be written as fast as they came)") != std::string::npos);
  ::close(reader);
}
