// ReleaseStore: staging, activation history, rollback targets, pruning and crash recovery.
#include <doctest/doctest.h>
#include <dirent.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <csignal>

#include <cerrno>
#include <cstring>
#include <unistd.h>

#include <algorithm>

#include "releases/store.h"
#include "testutil.h"

using namespace releases;
using testutil::TempDir;

namespace {

void write_app(const std::string& dir, const std::string& version) {
  testutil::write(dir + "/package.json", R"({"name":"app","version":")" + version + R"("})");
  testutil::write(dir + "/server.js", "// " + version + "\n");
}

// Stages `version` from a fresh source tree and returns the release id.
std::string stage_version(ReleaseStore& store, const std::string& src, const std::string& version) {
  write_app(src, version);
  StageRequest req;
  req.from = src;
  req.uid = 1000;
  Release r;
  std::string err;
  REQUIRE_MESSAGE(store.stage(req, &r, &err), err);
  return r.id;
}

std::string deploy(ReleaseStore& store, const std::string& src, const std::string& version) {
  std::string id = stage_version(store, src, version), err;
  REQUIRE_MESSAGE(store.activate(id, "deploy", 1000, &err), err);
  return id;
}

std::vector<JournalEntry> journal_of(const ReleaseStore& store) {
  std::vector<JournalEntry> e;
  std::vector<std::string> w;
  std::string err;
  store.journal().read(&e, &w, &err);
  return e;
}

std::vector<std::string> entries_in(const std::string& dir) {
  std::vector<std::string> names;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') names.emplace_back(e->d_name);
    ::closedir(d);
  }
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("stage: a complete copy under releases/<id>, journaled as staged") {
  TempDir d;
  ReleaseStore store(d / "app");
  write_app(d / "src", "1.2.3");
  StageRequest req;
  req.from = d / "src";
  req.source = "rpm";
  req.uid = 42;
  Release r;
  std::string err;
  REQUIRE_MESSAGE(store.stage(req, &r, &err), err);
  CHECK(r.version == "1.2.3");
  CHECK(r.id.size() == std::string("20261122T101500Z-1.2.3").size());
  CHECK(r.id.ends_with("Z-1.2.3"));
  CHECK(r.tries == 1);
  CHECK(testutil::read(r.dir + "/server.js") == "// 1.2.3\n");
  CHECK(entries_in(store.releases_dir()) == std::vector<std::string>{r.id});  // no .tmp left
  auto j = journal_of(store);
  REQUIRE(j.size() == 1);
  CHECK(j[0].event == Event::Staged);
  CHECK(j[0].release == r.id);
  CHECK(j[0].version == "1.2.3");
  CHECK(j[0].source == "rpm");
  CHECK(j[0].uid == 42);
  CHECK_FALSE(store.current());  // staging never moves current

  Release r2;  // the same version again, in the same second: a distinct id
  REQUIRE(store.stage(req, &r2, &err));
  CHECK(r2.id != r.id);
}

TEST_CASE("stage: bad input is refused and leaves nothing behind") {
  TempDir d;
  ReleaseStore store(d / "app");
  StageRequest req;
  req.max_tries = 2;  // a bad package.json is given one more chance (an installer may be mid-write)
  Release r;
  std::string err;
  req.from = d / "missing";
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK(err == "source directory " + d / "missing does not exist");

  req.from = d / "src";
  testutil::write(d / "src/server.js", "x");
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK(err == "read " + d / "src/package.json: No such file or directory");
  testutil::write(d / "src/package.json", "{\"name\": \"x\"}");
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK(err == d / "src/package.json: no \"version\" field");
  testutil::write(d / "src/package.json", "{\"version\": ");
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK(err.find("not valid JSON") != std::string::npos);
  testutil::write(d / "src/package.json", R"({"version":"../../../etc"})");
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK(err.find("contains '/'") != std::string::npos);

  CHECK(entries_in(store.releases_dir()).empty());
  CHECK(journal_of(store).empty());
}

TEST_CASE("stage: the watched file changing mid-copy makes it stage again") {
  TempDir d;
  ReleaseStore store(d / "app");
  write_app(d / "src", "1.0.0");
  StageRequest req;
  req.from = d / "src";
  int copies = 0;
  // The installer rewrites package.json while the first copy runs.
  req.progress = [&](const std::string& line) {
    if (line.starts_with("staging ") && ++copies == 1) write_app(d / "src", "1.0.1");
  };
  Release r;
  std::string err;
  REQUIRE_MESSAGE(store.stage(req, &r, &err), err);
  CHECK(r.tries == 2);
  CHECK(r.version == "1.0.1");
  CHECK(testutil::read(r.dir + "/server.js") == "// 1.0.1\n");
  CHECK(entries_in(store.releases_dir()) == std::vector<std::string>{r.id});

  // A file that never settles: bounded tries, then a clear refusal and nothing staged.
  int n = 0;
  req.max_tries = 3;
  req.progress = [&](const std::string& line) {
    if (line.starts_with("staging ")) write_app(d / "src", "2.0." + std::to_string(++n));
  };
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK(err.find("kept changing while staging (3 tries)") != std::string::npos);
  CHECK(entries_in(store.releases_dir()).size() == 1);
}

TEST_CASE("stage: a package.json still being written is staged once it is whole") {
  TempDir d;
  ReleaseStore store(d / "app");
  write_app(d / "src", "1.0.0");
  testutil::write(d / "src/package.json", R"({"name":"x","vers)");  // half written
  StageRequest req;
  req.from = d / "src";
  std::vector<std::string> lines;
  req.progress = [&](const std::string& line) {
    lines.push_back(line);
    if (line.find("staging again") != std::string::npos) write_app(d / "src", "1.0.1");  // the installer finishes
  };
  Release r;
  std::string err;
  REQUIRE_MESSAGE(store.stage(req, &r, &err), err);
  CHECK(r.version == "1.0.1");
  CHECK(r.tries == 2);
  CHECK(lines[0].find("not valid JSON") != std::string::npos);
}

TEST_CASE("release ids from outside are checked: no escape from releases/") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::string a = deploy(store, d / "src", "1.0.0"), err;
  std::string b = deploy(store, d / "src", "1.1.0");
  base::make_dirs(d / "evil", &err);
  CHECK_FALSE(store.check_rollback_to("../../evil", &err));
  CHECK_FALSE(store.rollback_to("../../evil", 0, &err));
  CHECK_FALSE(store.activate("../../evil", "x", 0, &err));
  CHECK(store.current() == b);
}

TEST_CASE("current in the middle of the history: what was above it is gone") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::string a = deploy(store, d / "src", "1.0.0");
  std::string b = deploy(store, d / "src", "1.1.0");
  std::string c = deploy(store, d / "src", "1.2.0");
  std::string err, target;
  REQUIRE(base::replace_symlink("releases/" + b, store.current_link(), &err));  // switched; the journal line lost
  REQUIRE(store.rollback_target(1, &target, &err));
  CHECK(target == a);  // not c
}

TEST_CASE("if the journal cannot record a switch, current is switched back") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::string a = deploy(store, d / "src", "1.0.0");
  std::string b = stage_version(store, d / "src", "1.1.0"), err;
  // A journal that can be read but not grown (root ignores permissions; a file size limit it
  // does not): the switch must be undone.
  struct stat st {};
  REQUIRE(::stat(store.journal().path().c_str(), &st) == 0);
  rlimit old {};
  ::getrlimit(RLIMIT_FSIZE, &old);
  auto old_handler = ::signal(SIGXFSZ, SIG_IGN);
  rlimit tight = old;
  tight.rlim_cur = static_cast<rlim_t>(st.st_size);
  REQUIRE(::setrlimit(RLIMIT_FSIZE, &tight) == 0);
  bool ok = store.activate(b, "deploy", 0, &err);
  ::setrlimit(RLIMIT_FSIZE, &old);
  ::signal(SIGXFSZ, old_handler);
  CHECK_FALSE(ok);
  CHECK_MESSAGE(err.find("current left as it was") != std::string::npos, err);
  CHECK(store.current() == a);
}

TEST_CASE("stage: linked_dirs point into shared/, replacing what the package shipped") {
  TempDir d;
  ReleaseStore store(d / "app");
  write_app(d / "src", "1.0.0");
  testutil::write(d / "src/logs/old.log", "shipped by mistake");
  StageRequest req;
  req.from = d / "src";
  req.linked_dirs = {"logs", "var/uploads"};
  Release r;
  std::string err;
  REQUIRE_MESSAGE(store.stage(req, &r, &err), err);
  char buf[256] = {};
  REQUIRE(::readlink((r.dir + "/logs").c_str(), buf, sizeof buf - 1) > 0);
  CHECK(std::string(buf) == store.shared_dir() + "/logs");
  CHECK(base::is_directory(store.shared_dir() + "/var/uploads"));
  CHECK(base::is_directory(r.dir + "/var/uploads"));  // through the link
  CHECK(testutil::read(d / "src/logs/old.log") == "shipped by mistake");  // the source is never touched

  // A parent that is a symlink in the tree could aim the link outside the release: refused.
  REQUIRE(::symlink("/tmp", (d / "src/var2").c_str()) == 0);
  req.linked_dirs = {"var2/uploads"};
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK(err.find("is not a directory in the release") != std::string::npos);
  CHECK(entries_in(store.releases_dir()).size() == 1);
}

TEST_CASE("activate: current switches by rename and the journal says activated") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::string a = deploy(store, d / "src", "1.0.0");
  CHECK(store.current() == a);
  char buf[256] = {};
  REQUIRE(::readlink(store.current_link().c_str(), buf, sizeof buf - 1) > 0);
  CHECK(std::string(buf) == "releases/" + a);  // relative: the state dir can move
  std::string b = deploy(store, d / "src", "1.0.1");
  CHECK(store.current() == b);
  auto j = journal_of(store);
  REQUIRE(j.size() == 4);
  CHECK(j[3].event == Event::Activated);
  CHECK(j[3].version == "1.0.1");
  CHECK(j[3].uid == 1000);
  std::string err;
  CHECK_FALSE(store.activate("nope", "x", 0, &err));
  CHECK(store.current() == b);
}

TEST_CASE("rollback 1 twice goes back two releases, not back and forth") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::string a = deploy(store, d / "src", "1.0.0");
  std::string b = deploy(store, d / "src", "1.1.0");
  std::string c = deploy(store, d / "src", "1.2.0");
  std::string target, err;
  REQUIRE(store.rollback_target(1, &target, &err));
  CHECK(target == b);
  REQUIRE(store.rollback_target(2, &target, &err));
  CHECK(target == a);
  CHECK_FALSE(store.rollback_target(3, &target, &err));
  CHECK(err.find("only 2 earlier releases") != std::string::npos);

  REQUIRE(store.rollback_to(b, 7, &err));
  CHECK(store.current() == b);
  REQUIRE(store.rollback_target(1, &target, &err));
  CHECK(target == a);  // not c: c was rolled back
  REQUIRE(store.rollback_to(a, 7, &err));
  CHECK(store.current() == a);
  CHECK_FALSE(store.rollback_target(1, &target, &err));
  CHECK(err.find("only 0 earlier releases") != std::string::npos);

  // A new deploy after rolling back: rollback 1 returns to where we rolled back to.
  std::string e = deploy(store, d / "src", "2.0.0");
  REQUIRE(store.rollback_target(1, &target, &err));
  CHECK(target == a);

  auto j = journal_of(store);
  int rolled_back = 0;
  for (const auto& x : j) {
    if (x.event != Event::RolledBack) continue;
    ++rolled_back;
    CHECK(x.uid == 7);
  }
  CHECK(rolled_back == 2);
  std::vector<ReleaseInfo> list;
  std::vector<std::string> warnings;
  REQUIRE(store.list(&list, &warnings, &err));
  REQUIRE(list.size() == 4);
  CHECK(list[0].id == e);  // newest first
  CHECK(list[0].current);
  CHECK(list[0].state == ReleaseState::Active);
  CHECK(list[1].id == c);
  CHECK(list[1].state == ReleaseState::RolledBack);
  CHECK(list[1].reason == "rolled back to " + b);
  CHECK(list[3].id == a);
  CHECK(list[3].state == ReleaseState::Previous);
  CHECK(list[3].version == "1.0.0");
}

TEST_CASE("rollback skips failed releases; --to refuses failed, current and missing ones") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::string a = deploy(store, d / "src", "1.0.0");
  std::string b = deploy(store, d / "src", "1.1.0");
  std::string err, target;
  REQUIRE(store.record_failed(b, "crash loop after going live", 0, &err));  // went bad later
  std::string c = deploy(store, d / "src", "1.2.0");
  std::string f = stage_version(store, d / "src", "1.3.0");
  REQUIRE(store.record_failed(f, "worker exited before ready", 0, &err));
  REQUIRE(store.rollback_target(1, &target, &err));
  CHECK(target == a);

  CHECK_FALSE(store.check_rollback_to(f, &err));
  CHECK(err == "release " + f + " failed (worker exited before ready); deploy it again instead");
  CHECK_FALSE(store.check_rollback_to(c, &err));
  CHECK(err == c + " is already current");
  CHECK_FALSE(store.check_rollback_to("20990101T000000Z-9", &err));
  CHECK(err.find("no release") == 0);
  CHECK(store.check_rollback_to(a, &err));
  REQUIRE(store.rollback_to(a, 0, &err));
  CHECK(store.current() == a);
}

TEST_CASE("prune keeps keep_releases, the current one, rollback targets and releases in use") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) ids.push_back(deploy(store, d / "src", "1.0." + std::to_string(i)));
  std::string failed = stage_version(store, d / "src", "1.0.9"), err;
  REQUIRE(store.record_failed(failed, "boom", 0, &err));
  std::string staged = stage_version(store, d / "src", "1.1.0");  // about to be rolled out
  std::vector<std::string> removed;
  REQUIRE(store.prune(3, {staged}, &removed, &err));
  // Kept: current (ids[3]), the next two rollback targets (ids[2], ids[1]), and the one in use.
  auto left = entries_in(store.releases_dir());
  CHECK(left == std::vector<std::string>{ids[1], ids[2], ids[3], staged});
  CHECK(std::find(removed.begin(), removed.end(), failed) != removed.end());
  CHECK(std::find(removed.begin(), removed.end(), ids[0]) != removed.end());
  CHECK(store.current() == ids[3]);
  std::string target;
  REQUIRE(store.rollback_target(2, &target, &err));
  CHECK(target == ids[1]);
}

TEST_CASE("recover: what a crash left half-done is cleaned, and current is journaled") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::string a = deploy(store, d / "src", "1.0.0");
  std::string b = stage_version(store, d / "src", "1.1.0");
  // A crash mid-stage, mid-switch, and between the switch and its journal line.
  testutil::write(store.releases_dir() + "/20261122T000000Z-9.9.9.tmp/half.js", "par");
  REQUIRE(::symlink("releases/x", (store.current_link() + ".tmp").c_str()) == 0);
  std::string err;
  REQUIRE(base::replace_symlink("releases/" + b, store.current_link(), &err));

  std::vector<std::string> notes;
  REQUIRE_MESSAGE(store.recover(&notes, &err), err);
  CHECK(entries_in(store.releases_dir()) == std::vector<std::string>{a, b});
  CHECK(::access((store.current_link() + ".tmp").c_str(), F_OK) != 0);
  auto j = journal_of(store);
  CHECK(j.back().event == Event::Activated);
  CHECK(j.back().release == b);
  CHECK(j.back().version == "1.1.0");
  CHECK(j.back().reason.find("recovered") == 0);
  CHECK(notes.size() == 2);
  std::string target;
  REQUIRE(store.rollback_target(1, &target, &err));
  CHECK(target == a);

  notes.clear();
  REQUIRE(store.recover(&notes, &err));  // nothing more to do
  CHECK(notes.empty());
}

// Mounting a small tmpfs needs root: skipped (and reported as skipped, not passed) otherwise.
TEST_CASE("stage on a full disk: refused, no .tmp left, current and journal untouched" * doctest::skip(::geteuid() != 0)) {
  TempDir d;
  std::string err;
  REQUIRE(base::make_dirs(d / "state", &err));
  REQUIRE_MESSAGE(::mount("tmpfs", (d / "state").c_str(), "tmpfs", 0, "size=1m") == 0, "mount tmpfs: ", std::strerror(errno));
  struct Unmount { std::string p; ~Unmount() { ::umount2(p.c_str(), MNT_DETACH); } } unmount{d / "state"};

  ReleaseStore store(d / "state/app");
  std::string a = deploy(store, d / "src", "1.0.0");
  std::string journal_before = testutil::read(store.journal().path());
  testutil::write(d / "src/big.bin", std::string(3 << 20, 'x'));  // 3 MiB into 1 MiB
  write_app(d / "src", "1.1.0");
  StageRequest req;
  req.from = d / "src";
  Release r;
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK_MESSAGE(err.find("No space left on device") != std::string::npos, err);
  CHECK(err.find("staging failed: ") == 0);
  CHECK(entries_in(store.releases_dir()) == std::vector<std::string>{a});
  CHECK(store.current() == a);
  CHECK(testutil::read(store.journal().path()) == journal_before);

  ::unlink((d / "src/big.bin").c_str());  // space back: staging works again
  REQUIRE_MESSAGE(store.stage(req, &r, &err), err);
}

TEST_CASE("compact_journal: past 1000 entries, drops those about releases gone; rollback unchanged") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::string err, note;
  REQUIRE(store.init(&err));
  for (int i = 0; i < 1200; ++i) {
    JournalEntry e;
    e.event = i % 100 == 0 ? Event::Refused : Event::Activated;
    e.release = e.event == Event::Refused ? "" : "20260101T000000Z-0.0." + std::to_string(i);
    REQUIRE(store.journal().append(e, &err));
  }
  std::string a = deploy(store, d / "src", "1.0.0");
  std::string b = deploy(store, d / "src", "1.0.1");
  REQUIRE(store.compact_journal(&note, &err));
  CHECK(note.find("entries about releases no longer on disk dropped") != std::string::npos);
  std::vector<JournalEntry> entries;
  std::vector<std::string> warnings;
  REQUIRE(store.journal().read(&entries, &warnings, &err));
  CHECK(entries.size() < 50);
  std::string target;
  REQUIRE(store.rollback_target(1, &target, &err));
  CHECK(target == a);
  // A small journal is left as it is.
  REQUIRE(store.compact_journal(&note, &err));
  CHECK(note.empty());
}

TEST_CASE("bake: baked is a note; a failed bake puts current back, is bad, and rollback never lands on it") {
  TempDir d;
  ReleaseStore store(d / "app");
  std::string a = deploy(store, d / "src", "1.0.0");
  std::string b = deploy(store, d / "src", "1.1.0");
  std::string err;
  REQUIRE(store.record_baked(b, "baked 1m: 30 probes ok", 0, &err));
  std::string c = deploy(store, d / "src", "1.2.0");
  REQUIRE(store.record_bake_failed(c, b, "bake failed: GET /healthz: HTTP 500", 0, &err));
  CHECK(store.current() == b);

  std::vector<ReleaseInfo> list;
  std::vector<std::string> warnings;
  REQUIRE(store.list(&list, &warnings, &err));
  REQUIRE(list.size() == 3);
  CHECK(list[0].id == c);
  CHECK(list[0].state == ReleaseState::Bad);
  CHECK(std::string(state_name(list[0].state)) == "bad");
  CHECK(list[0].reason == "bake failed: GET /healthz: HTTP 500");
  CHECK(list[1].state == ReleaseState::Active);  // baked leaves its state as it was

  std::string target;
  REQUIRE(store.rollback_target(1, &target, &err));
  CHECK(target == a);  // not c: a bad release is out of the history
  CHECK_FALSE(store.check_rollback_to(c, &err));
  CHECK(err == "release " + c + " failed its bake (bake failed: GET /healthz: HTTP 500); deploy it again instead");
  CHECK(store.check_rollback_to(a, &err));

  // The same content staged again (a trigger) is recognised; a different one is not.
  Release again;
  StageRequest req;
  req.from = d / "src";
  REQUIRE(store.stage(req, &again, &err));
  auto bad = store.same_as_bad(again, "package.json");
  REQUIRE(bad);
  CHECK(bad->first == c);
  REQUIRE(store.discard(again.id, &err));
  CHECK_FALSE(base::is_directory(store.release_dir(again.id)));
  std::string other = stage_version(store, d / "src", "1.3.0");
  Release fresh;
  fresh.id = other;
  CHECK_FALSE(store.same_as_bad(fresh, "package.json"));

  // The same content deployed by hand afterwards and live clears it; a git release is judged by
  // its commit only.
  std::string hand = stage_version(store, d / "src", "1.2.0");
  REQUIRE(store.activate(hand, "deploy", 0, &err));
  Release same;
  same.id = stage_version(store, d / "src", "1.2.0");
  CHECK_FALSE(store.same_as_bad(same, "package.json"));
  Release commit;
  commit.id = other;
  commit.revision = "0123456789abcdef0123456789abcdef01234567";
  CHECK_FALSE(store.same_as_bad(commit, "package.json"));

  // A first deploy that fails its bake has nothing to go back to: it stays current, marked bad.
  TempDir d2;
  ReleaseStore first(d2 / "app");
  std::string only = deploy(first, d2 / "src", "0.1.0");
  REQUIRE(first.record_bake_failed(only, "", "bake failed: worker 0 exited", 0, &err));
  CHECK(first.current() == only);
}
