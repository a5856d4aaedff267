// base::LogFile: worker output written by a thread of its own, rotated with no line lost, and
// never holding its caller (the event loop) when the disk does not take the lines.
#include <doctest/doctest.h>

#include <fcntl.h>
#include <poll.h>
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
    // First the writer gets stuck: lines until what was queued cannot be written.
    int sent = 0;
    while (log.flush(50ms) && sent < 10000) {
      for (int i = 0; i < 100; ++i) log.write_line(line);
      sent += 100;
    }
    REQUIRE(sent < 10000);
    // Then more than the queue holds: queued or dropped, never waited for.
    auto began = std::chrono::steady_clock::now();
    for (size_t i = 0; i < base::LogFile::kMaxQueued / line.size() + 100; ++i) log.write_line(line);
    CHECK(std::chrono::steady_clock::now() - began < 2s);
    // Unstick it: read until the writer has said, whole, what it dropped.
    char buf[1 << 16];
    auto deadline = std::chrono::steady_clock::now() + 20s;
    for (;;) {
      size_t at = seen.find(" lines dropped: ");
      if (at != std::string::npos && seen.find(")\n", at) != std::string::npos) break;
      REQUIRE(std::chrono::steady_clock::now() < deadline);
      pollfd p{reader, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      ssize_t n = ::read(reader, buf, sizeof buf);
      if (n <= 0) continue;
      seen.append(buf, static_cast<size_t>(n));
      if (seen.size() > (1u << 20) && seen.find(" lines dropped: ") == std::string::npos) seen.erase(0, seen.size() - (1u << 16));
    }
    drain = std::thread([reader] {
      char sink[1 << 16];
      for (;;) {
        pollfd p{reader, POLLIN, 0};
        if (::poll(&p, 1, 10000) <= 0) return;
        if (::read(reader, sink, sizeof sink) <= 0) return;  // EOF once the LogFile closed its end
      }
    });
    CHECK(log.flush(5s));
  }
  drain.join();
  CHECK(seen.find(" lines dropped: " + fifo + " could not be written as fast as they came)\n") != std::string::npos);
  ::close(reader);
}
