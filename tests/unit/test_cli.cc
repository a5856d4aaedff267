// The command line's grammar (agent/cli/args.h) and the log reading of `agent logs`
// (agent/cli/log_reader.h): no daemon, no processes; the follower runs on real files.
#include <sys/stat.h>

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "agent/cli/args.h"
#include "agent/cli/log_reader.h"
#include "testutil.h"

using namespace agent;

namespace {

struct Parsed {
  int rc;
  Args a;
  std::string out, err;
};

Parsed parse(std::vector<std::string> argv) {
  Parsed p;
  p.rc = parse_args(argv, &p.a, &p.out, &p.err);
  return p;
}

}  // namespace

TEST_CASE("cli: each verb takes its own flags, in any order, with -c anywhere") {
  auto p = parse({"logs", "web", "-n5", "-f", "--config=/x.toml"});
  REQUIRE(p.rc == -1);
  CHECK(p.a.verb == "logs");
  CHECK(p.a.positional == std::vector<std::string>{"web"});
  CHECK(*p.a.lines == 5);
  CHECK(p.a.follow);
  CHECK(p.a.config == "/x.toml");

  p = parse({"-c", "/y.toml", "logs", "--lines", "7", "--since", "10m", "--stream", "err", "--slot", "2"});
  REQUIRE(p.rc == -1);
  CHECK(p.a.config == "/y.toml");
  CHECK(*p.a.lines == 7);
  CHECK(*p.a.since_s == 600);
  CHECK(*p.a.stream == "err");
  CHECK(*p.a.slot == 2);

  p = parse({"fleet", "resume", "web", "1.2.0"});
  REQUIRE(p.rc == -1);
  CHECK(p.a.verb == "fleet resume");
  CHECK(p.a.positional == std::vector<std::string>{"web", "1.2.0"});

  p = parse({"deploy", "web", "--rev", "HEAD~1", "--no-fleet"});
  REQUIRE(p.rc == -1);
  CHECK(*p.a.rev == "HEAD~1");
  CHECK(p.a.no_fleet);

  p = parse({"rollback", "2", "web"});
  REQUIRE(p.rc == -1);
  CHECK(p.a.positional == std::vector<std::string>{"2", "web"});
}

TEST_CASE("cli: an app named like a verb is an app, not a second verb") {
  auto p = parse({"status", "stop"});
  REQUIRE(p.rc == -1);
  CHECK(p.a.verb == "status");
  CHECK(p.a.positional == std::vector<std::string>{"stop"});
}

TEST_CASE("cli: usage errors exit 2 with a pointed message, before anything runs") {
  struct Case {
    std::vector<std::string> argv;
    std::string says;
  };
  for (const Case& c : std::vector<Case>{
           {{"stauts"}, "unknown command \"stauts\" (did you mean status?)"},
           {{"rolback", "1"}, "did you mean rollback?"},
           {{"frobnicate"}, "unknown command \"frobnicate\" (run, status,"},
           {{"fleet", "statu"}, "unknown fleet command \"statu\" (did you mean status?)"},
           {{"fleet"}, "fleet: say status or resume"},
           {{"status", "--jsn"}, "status: unknown option --jsn (did you mean --json?)"},
           {{"status", "--from", "x"}, "status: unknown option --from (deploy takes it)"},
           {{"status", "--show-secrets"}, "status: unknown option --show-secrets (env takes it)"},
           {{"releases", "--json", "--bogus"}, "releases: unknown option --bogus"},
           {{"logs", "-n", "abc"}, "logs: --lines: \"abc\" is not a whole number"},
           {{"logs", "-n", "-3"}, "logs:"},
           {{"logs", "--slot", "1x"}, "\"1x\" is not a whole number"},
           {{"logs", "--since", "10"}, "\"10\" has no unit"},
           {{"logs", "--stream", "both"}, "--stream: both not in"},
           {{"import-pm2", "pm2.json", "extra"}, "import-pm2: wrong number of arguments (agent import-pm2 FILE [OPTIONS])"},
           {{"post-receive", "web", "x", "y"}, "post-receive: wrong number of arguments"},
           {{"upgrade", "--wait", "soon"}, "upgrade: --wait:"},
           {{"systemd-socket", "web"}, "systemd-socket: unexpected argument"},
           {{"rollback", "2", "--to", "r1"}, "rollback takes N or --to ID, not both"},
           {{"rollback", "0"}, "N must be a whole number from 1 to 1000, not \"0\""},
           {{"rollback", "5000"}, "from 1 to 1000"},
           {{"rollback", "1.5"}, "from 1 to 1000, not \"1.5\""},
           {{"deploy", "--from", "a", "--rev", "b"}, "--from excludes --rev"},
           {{"status", "--json", "--check"}, "--json excludes --check"},
           {{"status", "web", "api"}, "status: wrong number of arguments (agent status [APP] [OPTIONS])"},
           {{"fleet", "resume", "web"}, "agent fleet resume APP VERSION"},
           {{"run", "x"}, "run: unexpected argument \"x\" (run takes none)"},
           {{"check", "--json"}, "check: unknown option --json"},
           {{"env", "--release"}, "env: --release"},
           {{"post-receive"}, "agent post-receive APP"},
       }) {
    std::string joined;
    for (const auto& w : c.argv) joined += w + " ";
    CAPTURE(joined);
    auto p = parse(c.argv);
    CHECK(p.rc == 2);
    CAPTURE(p.err);
    CHECK(p.err.find(c.says) != std::string::npos);
    CHECK(p.err.find("--help)") != std::string::npos);
  }
}

TEST_CASE("cli: --help for the agent and for each verb, generated from its flags") {
  auto p = parse({"--help"});
  CHECK(p.rc == 0);
  CHECK(p.out.find("Usage: agent") != std::string::npos);
  CHECK(p.out.find("rollback") != std::string::npos);
  p = parse({"logs", "--help"});
  CHECK(p.rc == 0);
  CHECK(p.out.find("Usage: agent logs [OPTIONS] [APP]") != std::string::npos);
  CHECK(p.out.find("--stream out|err") != std::string::npos);
  CHECK(p.out.find("--json") == std::string::npos);
  p = parse({"fleet", "resume", "--help"});
  CHECK(p.rc == 0);
  CHECK(p.out.find("Usage: agent fleet resume") != std::string::npos);
  p = parse({"--version"});
  CHECK(p.rc == 0);
  CHECK(p.out.starts_with("agent "));
  p = parse({});
  CHECK(p.rc == 2);
  CHECK(p.err.find("Usage: agent") != std::string::npos);
}

TEST_CASE("cli: nearest_word suggests only plausible misspellings") {
  std::vector<std::string> verbs = {"status", "start", "stop", "deploy", "logs"};
  CHECK(nearest_word("stauts", verbs) == "status");
  CHECK(nearest_word("deplyo", verbs) == "deploy");
  CHECK(nearest_word("log", verbs) == "logs");
  CHECK(nearest_word("xyz", verbs) == "");
  CHECK(nearest_word("frobnicate", verbs) == "");
}

TEST_CASE("logs: filters by stream, slot and time; lines without a time take the one before") {
  const std::string out = "2026-12-03T10:00:00.000Z 0/100 out hello";
  const std::string err = "2026-12-03T10:00:01.000Z 1/101 err oops";
  LogFilter f;
  CHECK(line_matches(out, "2026-12-03T10:00:00.000Z", f));
  f.stream = "err";
  CHECK(!line_matches(out, "2026-12-03T10:00:00.000Z", f));
  CHECK(line_matches(err, "2026-12-03T10:00:01.000Z", f));
  CHECK(!line_matches("build npm ci", "2026-12-03T10:00:01.000Z", f));
  f = LogFilter{};
  f.slot = 1;
  CHECK(!line_matches(out, "", f));
  CHECK(line_matches(err, "", f));
  f = LogFilter{};
  f.since = "2026-12-03T10:00:00.500Z";
  CHECK(!line_matches(out, "2026-12-03T10:00:00.000Z", f));
  CHECK(line_matches(err, "2026-12-03T10:00:01.000Z", f));
  CHECK(line_matches("build step", "2026-12-03T10:00:01.000Z", f));
  CHECK(line_time(out) == "2026-12-03T10:00:00.000Z");
  CHECK(line_time("build x").empty());
}

TEST_CASE("logs: -n reaches back into the rotated files, oldest first") {
  testutil::TempDir dir;
  std::string log = dir / "web/app.log";
  auto line = [](int i) {
    char t[64];
    std::snprintf(t, sizeof t, "2026-12-03T10:00:%02d.000Z %d/10%d %s line %d", i, i % 2, i % 2, i % 3 ? "out" : "err", i);
    return std::string(t);
  };
  // app.log.2 holds 0-3, app.log.1 holds 4-7, app.log 8-9.
  testutil::write(log + ".2", line(0) + "\n" + line(1) + "\n" + line(2) + "\n" + line(3) + "\n");
  testutil::write(log + ".1", line(4) + "\n" + line(5) + "\n" + line(6) + "\n" + line(7) + "\n");
  testutil::write(log, line(8) + "\n" + line(9) + "\n");
  LogPosition end;
  auto got = tail_logs(log, 5, {}, &end);
  REQUIRE(got.size() == 5);
  CHECK(got.front().text == line(5));
  CHECK(got.back().text == line(9));
  CHECK(end.offset == (line(8) + "\n" + line(9) + "\n").size());
  struct stat st {};
  REQUIRE(::stat(log.c_str(), &st) == 0);
  CHECK(end.ino == st.st_ino);
  // -n 0 (as `logs -f -n 0`): nothing printed, and following begins at the end, not at byte 0.
  LogPosition none;
  CHECK(tail_logs(log, 0, {}, &none).empty());
  CHECK(none.offset == end.offset);
  CHECK(none.ino == end.ino);
  CHECK(tail_logs(log, 100, {}).size() == 10);

  LogFilter f;
  f.stream = "err";  // lines 0, 3, 6, 9
  got = tail_logs(log, 3, f);
  REQUIRE(got.size() == 3);
  CHECK(got[0].text == line(3));
  CHECK(got[2].text == line(9));

  f = LogFilter{};
  f.since = "2026-12-03T10:00:06.000Z";
  got = tail_logs(log, 100, f);
  REQUIRE(got.size() == 4);
  CHECK(got[0].text == line(6));
}

TEST_CASE("logs: apps merged by time, prefixed with their names") {
  std::map<std::string, std::vector<LogLine>> per_app = {
      {"api", {{"2026-12-03T10:00:01.000Z", "a1"}, {"2026-12-03T10:00:03.000Z", "a3"}}},
      {"web", {{"2026-12-03T10:00:02.000Z", "w2"}, {"2026-12-03T10:00:02.000Z", "w2b"}}},
  };
  auto got = merge_logs(per_app, 3, true);
  REQUIRE(got.size() == 3);
  CHECK(got[0] == "web | w2");
  CHECK(got[1] == "web | w2b");
  CHECK(got[2] == "api | a3");
  CHECK(merge_logs(per_app, 10, false).front() == "a1");
}

TEST_CASE("logs: following reads across a rotation without losing or repeating a line") {
  testutil::TempDir dir;
  std::string log = dir / "web/app.log";
  testutil::write(log, "old 0\n");
  std::vector<std::string> seen;
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::string err;
  std::thread follower([&] {
    follow_logs({{"web", log}}, {{"web", LogPosition{0, 6}}}, [&](const std::string&, std::string_view line) {
      std::lock_guard lock(mu);
      seen.emplace_back(line);
    }, [&] { return stop.load(); }, &err);
  });
  auto count = [&] {
    std::lock_guard lock(mu);
    return seen.size();
  };
  auto wait_for = [&](size_t n) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (count() < n && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return count() >= n;
  };
  {
    FILE* f = std::fopen(log.c_str(), "a");
    std::fputs("line 1\nline 2\nhalf", f);
    std::fclose(f);
  }
  CHECK(wait_for(2));
  {
    // The writer finishes the line, renames the file away and starts a new one (base/log_file).
    FILE* f = std::fopen(log.c_str(), "a");
    std::fputs(" line 3\n", f);
    std::fclose(f);
    std::rename(log.c_str(), (log + ".1").c_str());
    testutil::write(log, "line 4\n");
  }
  CHECK(wait_for(4));
  {
    FILE* f = std::fopen(log.c_str(), "a");
    std::fputs("line 5\n", f);
    std::fclose(f);
  }
  CHECK(wait_for(5));
  stop = true;
  follower.join();
  std::lock_guard lock(mu);
  CHECK(seen == std::vector<std::string>{"line 1", "line 2", "half line 3", "line 4", "line 5"});
}

TEST_CASE("logs: a rotation between the tail and the follow loses and repeats nothing") {
  testutil::TempDir dir;
  std::string log = dir / "web/app.log";
  testutil::write(log, "line 1\nline 2\n");
  LogPosition at;
  auto tail = tail_logs(log, 10, {}, &at);
  REQUIRE(tail.size() == 2);
  // Before following begins: more lines, a rotation, and a new app.log already longer than
  // where the tail stopped.
  {
    FILE* f = std::fopen(log.c_str(), "a");
    std::fputs("line 3\n", f);
    std::fclose(f);
  }
  std::rename(log.c_str(), (log + ".1").c_str());
  testutil::write(log, "line 4 is a long one, longer than the old file was\n");
  std::vector<std::string> seen;
  std::string err;
  int rounds = 0;
  follow_logs({{"web", log}}, {{"web", at}}, [&](const std::string&, std::string_view line) { seen.emplace_back(line); },
              [&] { return rounds++ > 0; }, &err);
  CHECK(seen == std::vector<std::string>{"line 3", "line 4 is a long one, longer than the old file was"});
}
