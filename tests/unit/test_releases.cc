// Version extraction, tree copying and the journal: the pieces the release store is made of.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fs.h"
#include "releases/history.h"
#include "releases/journal.h"
#include "releases/version.h"
#include "testutil.h"

using namespace releases;
using testutil::TempDir;

TEST_CASE("version: from package.json, or the first line of a marker") {
  TempDir d;
  std::string v, raw, err;
  testutil::write(d / "package.json", R"({"name":"x","version":"1.2.3"})");
  REQUIRE(read_version(d.path, "package.json", &v, &raw, &err));
  CHECK(v == "1.2.3");
  CHECK(raw == R"({"name":"x","version":"1.2.3"})");
  testutil::write(d / "VERSION", "  2.0.1-rc1 \nchangelog...\n");
  REQUIRE(read_version(d.path, "VERSION", &v, &raw, &err));
  CHECK(v == "2.0.1-rc1");
  testutil::write(d / "sub/package.json", R"({"version":"3.0.0"})");
  REQUIRE(read_version(d.path, "sub/package.json", &v, &raw, &err));
  CHECK(v == "3.0.0");
}

TEST_CASE("version: bad package.json and markers are refused with where and why") {
  TempDir d;
  std::string v, raw, err;
  CHECK_FALSE(read_version(d.path, "package.json", &v, &raw, &err));
  CHECK(err == "read " + d / "package.json: No such file or directory");
  testutil::write(d / "package.json", "{\n  \"name\": \"x\",\n  \"version\": 1.2.3\n}\n");
  CHECK_FALSE(read_version(d.path, "package.json", &v, &raw, &err));
  CHECK(err == d / "package.json:3:17: not valid JSON (the error ends here)");
  testutil::write(d / "package.json", R"({"name":"x"})");
  CHECK_FALSE(read_version(d.path, "package.json", &v, &raw, &err));
  CHECK(err == d / "package.json: no \"version\" field");
  testutil::write(d / "package.json", R"({"version":7})");
  CHECK_FALSE(read_version(d.path, "package.json", &v, &raw, &err));
  CHECK(err.find("\"version\" is not a string") != std::string::npos);
  testutil::write(d / "package.json", R"([1,2])");
  CHECK_FALSE(read_version(d.path, "package.json", &v, &raw, &err));
  testutil::write(d / "package.json", R"({"version":"1.0.0","x":1e400})");  // out of range for a double
  CHECK_FALSE(read_version(d.path, "package.json", &v, &raw, &err));
  CHECK(err.find("not usable JSON") != std::string::npos);
  testutil::write(d / "VERSION", "\n");
  CHECK_FALSE(read_version(d.path, "VERSION", &v, &raw, &err));
  CHECK(err == d / "VERSION: the version is empty");
}

TEST_CASE("version: hostile versions never become paths") {
  std::string err;
  CHECK_FALSE(check_version("../../etc", &err));
  CHECK(err.find("'/'") != std::string::npos);
  CHECK_FALSE(check_version("1..2", &err));
  CHECK(err.find("\"..\"") != std::string::npos);
  CHECK_FALSE(check_version("1.0\n2", &err));
  CHECK(err.find("control character") != std::string::npos);
  CHECK_FALSE(check_version(std::string(65, '1'), &err));
  CHECK(err.find("65 bytes") != std::string::npos);
  CHECK(check_version(std::string(64, '1'), &err));
  CHECK(check_version("1.2.3-beta.1+build.5", &err));
}

TEST_CASE("release id: UTC time then the sanitized version, sortable") {
  std::time_t t = 1795342500;  // 2026-11-22T10:15:00Z
  CHECK(make_release_id(t, "1.2.3") == "20261122T101500Z-1.2.3");
  CHECK(make_release_id(t, "1.2.3 beta*") == "20261122T101500Z-1.2.3_beta_");
  CHECK(make_release_id(t, "1.0") < make_release_id(t + 1, "0.9"));
  CHECK(make_release_id(t, "1.0.tmp") == "20261122T101500Z-1.0_tmp");  // never mistaken for a half-staged one
  CHECK(valid_release_id("20261122T101500Z-1.2.3"));
  for (const char* bad : {"", "../../evil", "..", ".hidden", "x/y", "20261122T101500Z-1.0.tmp", "a b"})
    CHECK_MESSAGE(!valid_release_id(bad), bad);
  CHECK(iso_time(t) == "2026-11-22T10:15:00Z");
}

TEST_CASE("base::copy_tree: files with modes and times, symlinks as links, empty dirs") {
  TempDir d;
  testutil::write(d / "src/app.js", "console.log(1)\n", 0644);
  testutil::write(d / "src/bin/run", "#!/bin/sh\n", 0755);
  testutil::write(d / "src/secret", "s", 0600);
  std::string err;
  REQUIRE(base::make_dirs(d / "src/empty", &err));
  REQUIRE(base::make_dirs(d / "src/ro", &err));
  testutil::write(d / "src/ro/file", "x");
  ::chmod((d / "src/ro").c_str(), 0555);
  REQUIRE(::symlink("app.js", (d / "src/link").c_str()) == 0);
  REQUIRE(::symlink("/etc/passwd", (d / "src/abs").c_str()) == 0);
  REQUIRE(::symlink("missing", (d / "src/dangling").c_str()) == 0);
  timespec old[2] = {{1'000'000'000, 0}, {1'000'000'000, 0}};
  REQUIRE(::utimensat(AT_FDCWD, (d / "src/app.js").c_str(), old, 0) == 0);

  base::CopyStats stats;
  REQUIRE_MESSAGE(base::copy_tree(d / "src", d / "dst", &stats, &err), err);
  CHECK(stats.files == 4);
  CHECK(stats.symlinks == 3);
  CHECK(stats.dirs == 3);
  CHECK(testutil::read(d / "dst/app.js") == "console.log(1)\n");
  struct stat st {};
  REQUIRE(::stat((d / "dst/bin/run").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0755);
  REQUIRE(::stat((d / "dst/secret").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::stat((d / "dst/ro").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0555);
  REQUIRE(::stat((d / "dst/app.js").c_str(), &st) == 0);
  CHECK(st.st_mtim.tv_sec == 1'000'000'000);
  CHECK(base::is_directory(d / "dst/empty"));
  char buf[64] = {};
  REQUIRE(::readlink((d / "dst/abs").c_str(), buf, sizeof buf - 1) > 0);
  CHECK(std::string(buf) == "/etc/passwd");  // kept as a link, not followed or copied
  REQUIRE(::lstat((d / "dst/dangling").c_str(), &st) == 0);
  CHECK(S_ISLNK(st.st_mode));

  CHECK_FALSE(base::copy_tree(d / "src", d / "dst", &stats, &err));  // the target must not exist
  CHECK(err.find("mkdir " + d / "dst: File exists") == 0);
  // A file swapped for a fifo mid-copy must not hang the copy.
  ::unlink((d / "src/app.js").c_str());
  REQUIRE(::mkfifo((d / "src/app.js").c_str(), 0644) == 0);
  CHECK(base::copy_tree(d / "src", d / "dst3", &stats, &err));  // at stat time already a fifo: skipped
  CHECK(stats.skipped == 1);
  CHECK_FALSE(base::copy_tree(d / "nope", d / "dst2", &stats, &err));
  CHECK(err == "open " + d / "nope: No such file or directory");
}

TEST_CASE("base::remove_tree: removes read-only trees, never follows links") {
  TempDir d;
  testutil::write(d / "outside/keep", "precious");
  testutil::write(d / "t/a/b/c", "x");
  ::chmod((d / "t/a/b").c_str(), 0555);
  REQUIRE(::symlink((d / "outside").c_str(), (d / "t/link").c_str()) == 0);
  std::string err;
  REQUIRE_MESSAGE(base::remove_tree(d / "t", &err), err);
  CHECK_FALSE(base::is_directory(d / "t"));
  CHECK(testutil::read(d / "outside/keep") == "precious");
  CHECK(base::remove_tree(d / "t", &err));  // already gone: fine
}

TEST_CASE("base::replace_symlink: switches atomically and leaves no temp link") {
  TempDir d;
  std::string err;
  REQUIRE(base::make_dirs(d / "releases/a", &err));
  REQUIRE(base::make_dirs(d / "releases/b", &err));
  REQUIRE(base::replace_symlink("releases/a", d / "current", &err));
  REQUIRE(base::replace_symlink("releases/b", d / "current", &err));
  char buf[64] = {};
  REQUIRE(::readlink((d / "current").c_str(), buf, sizeof buf - 1) > 0);
  CHECK(std::string(buf) == "releases/b");
  CHECK(::access((d / "current.tmp").c_str(), F_OK) != 0);
}

TEST_CASE("journal: append and read back; a torn line is skipped, not fatal") {
  TempDir d;
  Journal j(d / "journal.jsonl");
  std::vector<JournalEntry> entries;
  std::vector<std::string> warnings;
  std::string err;
  REQUIRE(j.read(&entries, &warnings, &err));  // missing: empty
  CHECK(entries.empty());

  JournalEntry e;
  e.event = Event::Staged;
  e.release = "r1";
  e.version = "1.0.0";
  e.source = "rpm";
  e.uid = 0;
  REQUIRE(j.append(e, &err));
  // A crash mid-write leaves a line without its newline.
  std::string text = testutil::read(d / "journal.jsonl") + R"({"time":"x","event":"activ)";
  testutil::write(d / "journal.jsonl", text);
  e.event = Event::Activated;
  e.reason = "deploy";
  REQUIRE(j.append(e, &err));

  REQUIRE(j.read(&entries, &warnings, &err));
  REQUIRE(entries.size() == 2);
  CHECK(entries[0].event == Event::Staged);
  CHECK(entries[0].version == "1.0.0");
  CHECK(entries[0].source == "rpm");
  CHECK(entries[0].uid == 0);
  CHECK(entries[0].time.size() == 20);
  CHECK(entries[1].event == Event::Activated);
  CHECK(entries[1].reason == "deploy");
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("journal.jsonl:2: not a JSON object") != std::string::npos);
}

TEST_CASE("history.jsonl: written by its own thread, read back with rotated files, oldest first, from --since") {
  testutil::TempDir dir;
  std::string path = dir / "history.jsonl";
  {
    releases::HistoryLog log(path);
    releases::HistoryEntry e;
    e.app = "web";
    e.op = "deploy";
    e.detail = "live: R1";
    e.uid = 0;
    e.source = "cli";
    e.seconds = 1.23456;
    e.release = "R1";
    e.time = "2026-12-03T10:00:00.000Z";
    log.add(e);
    e.op = "crash";
    e.ok = false;
    e.uid = -1;
    e.seconds = -1;
    e.time = "2026-12-03T11:00:00.000Z";
    log.add(e);
  }  // the destructor writes what is queued
  // An older, rotated file and a line that is not an entry.
  testutil::write(path + ".1", R"({"time":"2026-12-02T09:00:00.000Z","app":"","op":"config_reload","ok":true,"detail":"changed: app.web.instances","uid":0,"source":"signal"})"
                               "\nnot json\n");
  std::vector<std::string> warnings;
  auto all = releases::read_history(path, "", &warnings);
  REQUIRE(all.size() == 3);
  CHECK(all[0].op == "config_reload");
  CHECK(all[1].op == "deploy");
  CHECK(all[1].seconds == doctest::Approx(1.235));
  CHECK(all[1].release == "R1");
  CHECK(all[2].op == "crash");
  CHECK_FALSE(all[2].ok);
  CHECK(all[2].seconds == -1);
  REQUIRE(warnings.size() == 1);
  CHECK(warnings[0].find("history.jsonl.1:2: not a history entry") != std::string::npos);
  auto recent = releases::read_history(path, "2026-12-03T10:30:00.000Z", nullptr);
  REQUIRE(recent.size() == 1);
  CHECK(recent[0].op == "crash");
  CHECK_FALSE(releases::parse_history_line(R"({"time": 5, "op": "x"})"));
  CHECK_FALSE(releases::parse_history_line(R"({"time": "t", "op": "x", "uid": "root"})"));
}

TEST_CASE("history.jsonl: a damaged line is not shown as something it is not") {
  using releases::parse_history_line;
  CHECK_FALSE(parse_history_line(R"({"time":"2026-12-03T10:00:00.000Z","op":"deploy","uid":4294967296})"));  // not root
  CHECK_FALSE(parse_history_line(R"({"time":"2026-12-03T10:00:00.000Z","op":"deploy","uid":-7})"));
  auto e = parse_history_line(R"({"time":"2026-12-03T10:00:00.000Z","op":"deploy","uid":0,"seconds":1e300})");
  REQUIRE(e);
  CHECK(e->seconds == -1);  // no duration, not an overflowed one
  e = parse_history_line(R"({"time":"2026-12-03T10:00:00.000Z","op":"deploy","uid":1000,"seconds":2.5})");
  REQUIRE(e);
  CHECK(e->uid == 1000);
  CHECK(e->seconds == 2.5);
}
