// The build step: output, exit status, timeout, cancellation, and the environment it gets.
#include <doctest/doctest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "hooks/build.h"
#include "testutil.h"

using namespace agent;
using testutil::TempDir;

namespace {
hooks::BuildRequest request(const TempDir& t, const std::string& command) {
  hooks::BuildRequest req;
  req.command = command;
  req.cwd = t.path;
  req.envp = {"PATH=/usr/bin:/bin", "BUILD_MARK=yes"};
  req.timeout = base::Millis{10'000};
  return req;
}
// The process has exited (a zombie at most, until its parent or init reaps it).
bool gone_within_2s(pid_t pid) {
  for (int i = 0; i < 100; ++i) {
    std::string stat = testutil::read("/proc/" + std::to_string(pid) + "/stat");
    if (stat.empty() || stat.find(") Z") != std::string::npos) return true;
    usleep(20'000);
  }
  return false;
}
}  // namespace

TEST_CASE("a build runs in the release with its environment, and its lines reach the log") {
  TempDir t;
  std::vector<std::string> lines;
  hooks::BuildRequest req = request(t, "echo \"in $PWD mark=$BUILD_MARK\"; echo to-stderr >&2; touch built");
  req.on_line = [&](const std::string& l) { lines.push_back(l); };
  hooks::BuildResult r = hooks::run_build(req);
  CHECK(r.ok);
  REQUIRE(lines.size() == 2);
  CHECK(lines[0] == "in " + t.path + " mark=yes");
  CHECK(lines[1] == "to-stderr");
  CHECK(::access((t / "built").c_str(), F_OK) == 0);
}

TEST_CASE("a failed build says how it ended and keeps the last lines") {
  TempDir t;
  hooks::BuildResult r = hooks::run_build(request(t, "for i in $(seq 1 30); do echo line $i; done; exit 3"));
  CHECK_FALSE(r.ok);
  CHECK(r.message == "exited with status 3");
  REQUIRE(r.tail.size() == 20);
  CHECK(r.tail.back() == "line 30");
  CHECK(r.tail.front() == "line 11");
  r = hooks::run_build(request(t, "kill -9 $$"));
  CHECK_FALSE(r.ok);
  CHECK(r.message.find("SIGKILL") != std::string::npos);
}

TEST_CASE("a build past build_timeout is killed with everything it started") {
  TempDir t;
  hooks::BuildRequest req = request(t, "sleep 60 & echo $! > child.pid; echo started; wait");
  req.timeout = base::Millis{500};
  auto began = std::chrono::steady_clock::now();
  hooks::BuildResult r = hooks::run_build(req);
  auto took = std::chrono::steady_clock::now() - began;
  CHECK_FALSE(r.ok);
  CHECK(r.message == "timed out after 500ms (build_timeout)");
  CHECK(took < std::chrono::seconds(5));
  pid_t child = std::stoi(testutil::read(t / "child.pid"));
  // The background sleep was in the build's session: gone too (a zombie at most, until init reaps it).
  CHECK(gone_within_2s(child));
}

TEST_CASE("a build stops when the agent shuts down") {
  TempDir t;
  hooks::BuildRequest req = request(t, "sleep 60");
  req.cancel = std::make_shared<std::atomic<bool>>(false);
  std::thread stopper([c = req.cancel] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    c->store(true);
  });
  hooks::BuildResult r = hooks::run_build(req);
  stopper.join();
  CHECK_FALSE(r.ok);
  CHECK(r.message == "stopped: the agent is shutting down");
}

TEST_CASE("a missing release directory is named") {
  hooks::BuildRequest req;
  req.command = "true";
  req.cwd = "/nonexistent/release";
  req.envp = {"PATH=/usr/bin:/bin"};
  hooks::BuildResult r = hooks::run_build(req);
  CHECK_FALSE(r.ok);
  CHECK(r.message.find("/nonexistent/release") != std::string::npos);
}

TEST_CASE("the build environment drops what only a worker can use") {
  auto env = hooks::build_environment({"PATH=/bin", "LISTEN_FDS=1", "LISTEN_FDNAMES=x", "READY_FD=4", "NOTIFY_SOCKET=@x",
                                "APP_WORKER=0", "AGENT_LISTEN=x", "APP_RELEASE=r", "NODE_ENV=production"});
  CHECK(env == std::vector<std::string>{"PATH=/bin", "APP_RELEASE=r", "NODE_ENV=production"});
}

TEST_CASE("a build that leaves a child writing ends with the shell, and the child is killed") {
  TempDir t;
  // `yes` keeps the output pipe full after the shell exits: the build must still end.
  hooks::BuildRequest req = request(t, "yes > /dev/stdout & echo $! > yes.pid; sleep 0.2; exit 0");
  req.timeout = base::Millis{5'000};
  size_t lines = 0;
  req.on_line = [&](const std::string&) { ++lines; };
  auto began = std::chrono::steady_clock::now();
  hooks::BuildResult r = hooks::run_build(req);
  CHECK(std::chrono::steady_clock::now() - began < std::chrono::seconds(3));
  CHECK(r.ok);
  CHECK(lines <= 10'001);
  pid_t child = std::stoi(testutil::read(t / "yes.pid"));
  CHECK(gone_within_2s(child));
}
