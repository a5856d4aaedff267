// The git trigger's pieces: the bare repository, the hook, exporting commits (hostile ones too),
// staging a commit as a release, and a refused deploy in the journal.
#include <doctest/doctest.h>
#include <git2.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "hooks/git_hook.h"
#include "releases/git.h"
#include "releases/store.h"
#include "testutil.h"

using namespace releases;
using testutil::TempDir;

namespace {

int sh(const std::string& cmd) {
  int rc = std::system(("set -e; " + cmd + " >/dev/null 2>&1").c_str());
  return WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
}

// A bare repository with one commit on main made from `work` by the real git; returns the sha.
std::string commit_tree(const TempDir& t, const std::string& bare, const std::string& work, const std::string& msg) {
  std::string g = "git -C " + work + " -c user.email=t@t -c user.name=t ";
  REQUIRE(sh("git init -q -b main " + work + " && " + g + "add -A && " + g + "commit -qm '" + msg + "' && " + g +
             "push -q " + bare + " HEAD:main") == 0);
  std::string sha, err;
  REQUIRE(std::system(("git -C " + work + " rev-parse HEAD > " + t / "sha").c_str()) == 0);
  sha = testutil::read(t / "sha");
  return sha.substr(0, 40);
}

std::string make_bare(const TempDir& t) {
  bool created = false;
  std::string err, bare = t / "app.git";
  REQUIRE_MESSAGE(git_ensure_bare(bare, "main", &created, &err), err);
  CHECK(created);
  return bare;
}

// Writes a tree object with the given raw entries ("mode name" -> oid) straight into the object
// database, bypassing every check git and libgit2 make: what a hostile pusher could send.
git_oid raw_tree(git_repository* repo, const std::vector<std::pair<std::string, git_oid>>& entries) {
  std::string body;
  for (const auto& [mode_name, oid] : entries) {
    body += mode_name;
    body.push_back('\0');
    body.append(reinterpret_cast<const char*>(oid.id), GIT_OID_RAWSZ);
  }
  git_odb* odb = nullptr;
  REQUIRE(git_repository_odb(&odb, repo) == 0);
  git_oid out;
  REQUIRE(git_odb_write(&out, odb, body.data(), body.size(), GIT_OBJECT_TREE) == 0);
  git_odb_free(odb);
  return out;
}

// A commit of `tree` in `bare`; returns its sha.
std::string raw_commit(git_repository* repo, const git_oid& tree_oid) {
  git_tree* tree = nullptr;
  REQUIRE(git_tree_lookup(&tree, repo, &tree_oid) == 0);
  git_signature* sig = nullptr;
  REQUIRE(git_signature_now(&sig, "t", "t@t") == 0);
  git_oid c;
  REQUIRE(git_commit_create_v(&c, repo, nullptr, sig, sig, nullptr, "hostile", tree, 0) == 0);
  git_signature_free(sig);
  git_tree_free(tree);
  char hex[GIT_OID_HEXSZ + 1];
  git_oid_tostr(hex, sizeof hex, &c);
  return hex;
}

git_oid blob(git_repository* repo, const std::string& content) {
  git_oid oid;
  REQUIRE(git_blob_create_from_buffer(&oid, repo, content.data(), content.size()) == 0);
  return oid;
}

}  // namespace

TEST_CASE("git_ensure_bare creates a bare repository whose HEAD is the branch, and reopens it") {
  TempDir t;
  std::string bare = make_bare(t);
  CHECK(testutil::read(bare + "/HEAD") == "ref: refs/heads/main\n");
  bool created = true;
  std::string err;
  REQUIRE(git_ensure_bare(bare, "main", &created, &err));
  CHECK_FALSE(created);
  // Something else at the path is never written over.
  testutil::write(t / "notrepo/file", "x");
  CHECK_FALSE(git_ensure_bare(t / "notrepo", "main", &created, &err));
  CHECK(err.find("not a bare git repository") != std::string::npos);
  CHECK(testutil::read(t / "notrepo/file") == "x");
}

TEST_CASE("a commit is exported with its modes and symlinks, and staged as version+short id") {
  TempDir t;
  std::string bare = make_bare(t), work = t / "work";
  testutil::write(work + "/package.json", R"({"name":"a","version":"2.1.0"})");
  testutil::write(work + "/bin/run", "#!/bin/sh\n", 0755);
  testutil::write(work + "/lib/a.js", "a\n");
  REQUIRE(::symlink("lib/a.js", (work + "/link").c_str()) == 0);
  std::string sha = commit_tree(t, bare, work, "first");

  GitCommit c;
  std::string err;
  REQUIRE_MESSAGE(git_resolve(bare, "main", &c, &err), err);
  CHECK(c.oid == sha);
  CHECK(c.short_id == sha.substr(0, 7));
  CHECK(c.summary == "first");

  ReleaseStore store(t / "state");
  StageRequest req;
  req.git_repo = bare;
  req.revision = "main";
  req.source = "git";
  Release r;
  REQUIRE_MESSAGE(store.stage(req, &r, &err), err);
  CHECK(r.version == "2.1.0+" + sha.substr(0, 7));
  CHECK(r.id.ends_with("-2.1.0+" + sha.substr(0, 7)));
  struct stat st {};
  REQUIRE(::stat((r.dir + "/bin/run").c_str(), &st) == 0);
  CHECK((st.st_mode & 0111) != 0);
  REQUIRE(::stat((r.dir + "/lib/a.js").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0644);
  char target[64] = {};
  REQUIRE(::readlink((r.dir + "/link").c_str(), target, sizeof target - 1) > 0);
  CHECK(std::string(target) == "lib/a.js");
  CHECK(r.stats.files == 3);
  // The journal keeps the full commit id, whatever name was asked for.
  std::vector<JournalEntry> entries;
  std::vector<std::string> warnings;
  REQUIRE(store.journal().read(&entries, &warnings, &err));
  REQUIRE(entries.size() == 1);
  CHECK(entries[0].revision == sha);
  CHECK(entries[0].source == "git");
}

TEST_CASE("a commit without package.json is refused with a clear message and nothing staged") {
  TempDir t;
  std::string bare = make_bare(t), work = t / "work";
  testutil::write(work + "/README", "no package here\n");
  std::string sha = commit_tree(t, bare, work, "no package");
  ReleaseStore store(t / "state");
  StageRequest req;
  req.git_repo = bare;
  req.revision = sha;
  req.source = "git";
  Release r;
  std::string err;
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK(err == "commit " + sha.substr(0, 7) + " has no package.json at the top of its tree: nothing to deploy");
  std::vector<ReleaseInfo> list;
  std::vector<std::string> warnings;
  REQUIRE(store.list(&list, &warnings, &err));
  CHECK(list.empty());

  // The supervisor journals the refusal; `agent releases` shows it with its reason.
  req.revision = sha;
  REQUIRE(store.record_refused(req, "commit has no package.json", &err));
  REQUIRE(store.list(&list, &warnings, &err));
  REQUIRE(list.size() == 1);
  CHECK(list[0].id.empty());
  CHECK(list[0].state == ReleaseState::Refused);
  CHECK(list[0].revision == sha);
  CHECK(list[0].reason == "commit has no package.json");
  // Newest first, also within one second.
  REQUIRE(store.record_refused(req, "second refusal", &err));
  REQUIRE(store.list(&list, &warnings, &err));
  REQUIRE(list.size() == 2);
  CHECK(list[0].reason == "second refusal");
  CHECK(list[1].reason == "commit has no package.json");
  // An unknown revision is an error naming it.
  req.revision = "no-such-branch";
  CHECK_FALSE(store.stage(req, &r, &err));
  CHECK(err.find("no-such-branch") != std::string::npos);
}

TEST_CASE("hostile trees cannot write outside the release directory") {
  TempDir t;
  std::string bare = make_bare(t);
  git_libgit2_init();
  git_repository* repo = nullptr;
  REQUIRE(git_repository_open_bare(&repo, bare.c_str()) == 0);
  git_oid pkg = blob(repo, R"({"version":"6.6.6"})");
  git_oid evil = blob(repo, "pwned\n");
  git_oid outside_link = blob(repo, t / "outside");
  git_oid sub = raw_tree(repo, {{"100644 x", evil}});

  struct Case {
    const char* what;
    std::vector<std::pair<std::string, git_oid>> entries;
    const char* expect;
  };
  std::vector<Case> cases = {
      {"an entry named ..", {{"40000 ..", sub}, {"100644 package.json", pkg}}, "not a safe file name"},
      {"an entry named .git", {{"40000 .git", sub}, {"100644 package.json", pkg}}, "not a safe file name"},
      {"an entry named .GIT", {{"40000 .GIT", sub}, {"100644 package.json", pkg}}, "not a safe file name"},
      // A symlink to a directory outside, then a directory of the same name to write through it.
      {"a symlink and a tree with one name", {{"120000 a", outside_link}, {"40000 a", sub}, {"100644 package.json", pkg}},
       "mkdir"},
      // Two files of one name: the second must not replace (or follow) the first.
      {"a name twice", {{"120000 b", outside_link}, {"100644 b", evil}, {"100644 package.json", pkg}}, "create"},
  };
  ::mkdir((t / "outside").c_str(), 0755);
  for (const auto& c : cases) {
    CAPTURE(c.what);
    std::string sha = raw_commit(repo, raw_tree(repo, c.entries));
    base::CopyStats stats;
    std::string err, to = t / "export";
    CHECK_FALSE(git_export(bare, sha, to, &stats, &err));
    CHECK(err.find(c.expect) != std::string::npos);
    CHECK(::access((t / "outside/x").c_str(), F_OK) != 0);
    CHECK(::access((t / "x").c_str(), F_OK) != 0);
    CHECK(::access((t / "outside/b").c_str(), F_OK) != 0);
    base::remove_tree(to, &err);
    // Through the store, a failed export leaves nothing behind.
    ReleaseStore store(t / "state");
    StageRequest req;
    req.git_repo = bare;
    req.revision = sha;
    Release r;
    CHECK_FALSE(store.stage(req, &r, &err));
    std::vector<ReleaseInfo> list;
    std::vector<std::string> warnings;
    REQUIRE(store.list(&list, &warnings, &err));
    CHECK(list.empty());
    CHECK(::access((t / "state/releases").c_str(), F_OK) == 0);
  }
  // A symlink pointing outside is kept as a link (never followed while exporting).
  std::string sha = raw_commit(repo, raw_tree(repo, {{"120000 out", outside_link}, {"100644 package.json", pkg}}));
  base::CopyStats stats;
  std::string err;
  REQUIRE_MESSAGE(git_export(bare, sha, t / "ok", &stats, &err), err);
  struct stat st {};
  REQUIRE(::lstat((t / "ok/out").c_str(), &st) == 0);
  CHECK(S_ISLNK(st.st_mode));
  CHECK(stats.symlinks == 1);
  git_repository_free(repo);
}

TEST_CASE("git_safe_entry_name") {
  for (const char* bad : {"", ".", "..", ".git", ".Git", "a/b", "/"}) CHECK_FALSE(git_safe_entry_name(bad));
  for (const char* good : {"a", ".gitignore", "..a", "a..", ".github", "node_modules"}) CHECK(git_safe_entry_name(good));
}

TEST_CASE("the post-receive hook is installed, kept current, and a foreign hook is left alone") {
  TempDir t;
  hooks::GitHookPlan plan{t / "app.git", "main", "it's", "/usr/bin/agent", t / "agent.sock"};
  std::vector<std::string> notes;
  std::string err;
  REQUIRE_MESSAGE(hooks::ensure_git_hook(plan, &notes, &err), err);
  std::string hook = plan.repo + "/hooks/post-receive";
  std::string text = testutil::read(hook);
  CHECK(text.starts_with("#!/bin/sh\n# deploy-agent managed hook"));
  // Every value is quoted for the shell, a quote inside one too.
  CHECK(text.find("exec '/usr/bin/agent' post-receive --socket '" + t / "agent.sock" + "' --branch 'main' 'it'\\''s'") !=
        std::string::npos);
  struct stat st {};
  REQUIRE(::stat(hook.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0755);
  CHECK(notes.size() == 2);  // created the repository, installed the hook

  // Unchanged: nothing to do. A new socket path: rewritten.
  notes.clear();
  REQUIRE(hooks::ensure_git_hook(plan, &notes, &err));
  CHECK(notes.empty());
  plan.control_socket = "/run/other.sock";
  REQUIRE(hooks::ensure_git_hook(plan, &notes, &err));
  CHECK(testutil::read(hook).find("'/run/other.sock'") != std::string::npos);

  // The operator's own hook is never overwritten.
  testutil::write(hook, "#!/bin/sh\necho mine\n", 0755);
  notes.clear();
  REQUIRE(hooks::ensure_git_hook(plan, &notes, &err));
  CHECK(testutil::read(hook) == "#!/bin/sh\necho mine\n");
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("left alone") != std::string::npos);

  // And the hook runs: a real shell executes what was written, with the values intact.
  plan.agent_exe = t / "fake-agent";
  testutil::write(plan.agent_exe, "#!/bin/sh\nprintf '%s|' \"$@\" > \"$(dirname \"$0\")/args\"\n", 0755);
  ::unlink(hook.c_str());
  REQUIRE(hooks::ensure_git_hook(plan, &notes, &err));
  REQUIRE(sh("echo | " + hook) == 0);
  CHECK(testutil::read(t / "args") == "post-receive|--socket|/run/other.sock|--branch|main|it's|");
}

TEST_CASE("the hook is written safely into a repository the pusher owns") {
  TempDir t;
  hooks::GitHookPlan plan{t / "app.git", "main", "web", "/usr/bin/agent", "/run/@APP@.sock"};
  std::vector<std::string> notes;
  std::string err;
  REQUIRE_MESSAGE(hooks::ensure_git_hook(plan, &notes, &err), err);
  // A value holding a placeholder is not substituted again.
  CHECK(testutil::read(plan.repo + "/hooks/post-receive").find("--socket '/run/@APP@.sock'") != std::string::npos);

  // A planted temp-file symlink: the victim is neither written nor chmodded.
  testutil::write(t / "victim", "secret", 0600);
  REQUIRE(::symlink((t / "victim").c_str(), (plan.repo + "/hooks/.post-receive.agent-tmp").c_str()) == 0);
  plan.control_socket = "/run/agent.sock";
  REQUIRE_MESSAGE(hooks::ensure_git_hook(plan, &notes, &err), err);
  CHECK(testutil::read(t / "victim") == "secret");
  struct stat st {};
  REQUIRE(::stat((t / "victim").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(testutil::read(plan.repo + "/hooks/post-receive").find("'/run/agent.sock'") != std::string::npos);

  // A hook that is a symlink is not followed (nor overwritten); a hooks/ that is a symlink is refused.
  std::string hook = plan.repo + "/hooks/post-receive";
  ::unlink(hook.c_str());
  REQUIRE(::symlink((t / "victim").c_str(), hook.c_str()) == 0);
  notes.clear();
  REQUIRE(hooks::ensure_git_hook(plan, &notes, &err));
  CHECK(testutil::read(t / "victim") == "secret");
  REQUIRE(notes.size() == 1);
  CHECK(notes[0].find("left alone") != std::string::npos);
  std::string dir_err;
  base::remove_tree(plan.repo + "/hooks", &dir_err);
  ::mkdir((t / "elsewhere").c_str(), 0755);
  REQUIRE(::symlink((t / "elsewhere").c_str(), (plan.repo + "/hooks").c_str()) == 0);
  CHECK_FALSE(hooks::ensure_git_hook(plan, &notes, &err));
  CHECK(err.find("a symlink is not followed") != std::string::npos);
  CHECK(::access((t / "elsewhere/post-receive").c_str(), F_OK) != 0);
}

TEST_CASE("a tree nested deeper than the limit is refused, not exported") {
  TempDir t;
  std::string bare = make_bare(t);
  git_libgit2_init();
  git_repository* repo = nullptr;
  REQUIRE(git_repository_open_bare(&repo, bare.c_str()) == 0);
  git_oid leaf = raw_tree(repo, {{"100644 f", blob(repo, "x")}});
  for (int i = 0; i < base::kMaxTreeDepth + 5; ++i) leaf = raw_tree(repo, {{"40000 d", leaf}});
  std::string sha = raw_commit(repo, raw_tree(repo, {{"40000 d", leaf}, {"100644 package.json", blob(repo, R"({"version":"1"})")}}));
  git_repository_free(repo);
  base::CopyStats stats;
  std::string err;
  CHECK_FALSE(git_export(bare, sha, t / "out", &stats, &err));
  CHECK(err.find("nests deeper than 256 directories") != std::string::npos);
  CHECK(base::remove_tree(t / "out", &err));  // and what was written can be removed
}

TEST_CASE("base::changed_since sees writes, creations and deletions anywhere in a tree") {
  TempDir t;
  testutil::write(t / "src/a/b/c.js", "1");
  testutil::write(t / "src/d.js", "1");
  usleep(20'000);  // past the coarse clock's tick
  timespec since = base::change_clock();
  usleep(20'000);
  std::string changed, err;
  REQUIRE(base::changed_since(t / "src", since, &changed, &err));
  CHECK(changed.empty());
  testutil::write(t / "src/a/b/c.js", "2");
  REQUIRE(base::changed_since(t / "src", since, &changed, &err));
  CHECK(changed == t / "src/a/b/c.js");

  since = base::change_clock();
  usleep(20'000);
  ::unlink((t / "src/d.js").c_str());  // a deletion moves the directory's ctime
  REQUIRE(base::changed_since(t / "src", since, &changed, &err));
  CHECK(changed == t / "src");
}
