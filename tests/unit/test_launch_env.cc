// LaunchEnv: what a worker's environment is made of (seed 000: the global PATH must get there).
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>

#include "agent/process/launch_env.h"
#include "testutil.h"

using namespace agent;
using testutil::TempDir;

namespace {

struct Fixture {
  TempDir d;
  AppConfig app;
  LaunchContext ctx;
  Fixture() {
    app.name = "web";
    app.command = {"node", "app.js"};
    app.instances = 2;
    std::string err;
    app.listen.push_back(*base::parse_listen("127.0.0.1:8197", &err));
    ctx.release_dir = d / "releases/r1";
    ctx.release_id = "r1";
    ctx.version = "1.0.0";
    REQUIRE(lookup_account(app, &ctx.account, &err));
    base::make_dirs(ctx.release_dir, &err);
  }
  LaunchEnv build() {
    LaunchEnv env;
    std::string err;
    REQUIRE_MESSAGE(LaunchEnv::build(app, ctx, &env, &err), err);
    return env;
  }
};

std::string value(const LaunchEnv& env, const char* name) {
  const EnvVar* v = env.find(name);
  return v ? v->value : "<unset>";
}

std::string origin(const LaunchEnv& env, const char* name) {
  const EnvVar* v = env.find(name);
  return v ? v->origin : "<unset>";
}

}  // namespace

TEST_CASE("seed 000: a tool only on the agent's global PATH is found by the worker") {
  Fixture f;
  testutil::write(f.d / "tools/bin/mytool", "#!/bin/sh\n", 0755);
  f.app.command = {"mytool"};
  f.ctx.agent_environ = {"PATH=" + f.d / "tools/bin" + ":/usr/bin", "HOME=/root"};
  LaunchEnv env = f.build();
  CHECK(value(env, "PATH").find(f.d / "tools/bin") != std::string::npos);
  std::string resolved, err;
  REQUIRE_MESSAGE(resolve_command("mytool", env, f.ctx.release_dir, f.ctx.account, &resolved, &err), err);
  CHECK(resolved == f.d / "tools/bin/mytool");
}

TEST_CASE("only the inherit allow-list passes from the agent's environment") {
  Fixture f;
  f.ctx.agent_environ = {"PATH=/usr/bin", "LANG=C.UTF-8", "AWS_SECRET_ACCESS_KEY=hunter2", "NODE_OPTIONS=--inspect"};
  LaunchEnv env = f.build();
  CHECK(value(env, "LANG") == "C.UTF-8");
  CHECK(origin(env, "LANG") == "inherited");
  CHECK(value(env, "AWS_SECRET_ACCESS_KEY") == "<unset>");
  CHECK(value(env, "NODE_OPTIONS") == "<unset>");
  f.app.inherit.push_back("NODE_OPTIONS");
  CHECK(value(f.build(), "NODE_OPTIONS") == "--inspect");
}

TEST_CASE("[app.env] overrides env_file, which overrides inherited and account") {
  Fixture f;
  f.ctx.agent_environ = {"PATH=/usr/bin", "LANG=C", "TZ=UTC"};
  testutil::write(f.d / "app.env", "# secrets\nexport DB_URL=\"postgres://x\"\nLANG=de_DE.UTF-8\n\nTZ='Asia/Shanghai'\nHOME=/srv/web\n");
  f.app.env_file = f.d / "app.env";
  f.app.env = {{"LANG", "zh_CN.UTF-8"}, {"NODE_ENV", "production"}};
  LaunchEnv env = f.build();
  CHECK(value(env, "LANG") == "zh_CN.UTF-8");
  CHECK(origin(env, "LANG") == "config [app.env]");
  CHECK(value(env, "TZ") == "Asia/Shanghai");
  CHECK(origin(env, "TZ") == "env_file " + f.d / "app.env:5");
  CHECK(value(env, "DB_URL") == "postgres://x");
  CHECK(value(env, "HOME") == "/srv/web");
  CHECK(value(env, "USER") == f.ctx.account.name);
  CHECK(origin(env, "USER") == "account " + f.ctx.account.name);
  CHECK(value(env, "NODE_ENV") == "production");
}

TEST_CASE("env_file errors name the file and line") {
  Fixture f;
  testutil::write(f.d / "bad.env", "A=1\nthis is not an assignment\n");
  f.app.env_file = f.d / "bad.env";
  LaunchEnv env;
  std::string err;
  CHECK_FALSE(LaunchEnv::build(f.app, f.ctx, &env, &err));
  CHECK(err == f.d / "bad.env:2: expected NAME=value");
  f.app.env_file = f.d / "missing.env";
  CHECK_FALSE(LaunchEnv::build(f.app, f.ctx, &env, &err));
  CHECK(err == "env_file: read " + f.d / "missing.env: No such file or directory");
}

TEST_CASE("PATH: release bins first, then prepend, global, append; junk dropped") {
  Fixture f;
  f.app.path_prepend = {"/opt/node20/bin"};
  f.app.path_append = {"/opt/extra/bin", "/usr/bin"};
  f.ctx.agent_environ = {"PATH=/usr/local/bin:/usr/bin/::bin:/usr/local/bin:/bin"};
  LaunchEnv env = f.build();
  std::string rd = f.ctx.release_dir;
  CHECK(value(env, "PATH") == rd + "/node_modules/.bin:" + rd + "/.node/bin:/opt/node20/bin:/usr/local/bin:/usr/bin:/bin:/opt/extra/bin");
  REQUIRE(env.path.size() == 7);
  CHECK(env.path[0].origin == "release");
  CHECK(env.path[2].origin == "path_prepend");
  CHECK(env.path[3].origin == "inherited");
  CHECK(env.path[6].origin == "path_append");
  CHECK(origin(env, "PATH") == "composed");
  REQUIRE(env.dropped.size() == 4);  // "", "bin", the second /usr/local/bin, the appended /usr/bin
  CHECK(env.dropped[0].find("empty entry") != std::string::npos);
  CHECK(env.dropped[1].find("\"bin\" (inherited): relative") == 0);
  CHECK(env.dropped[2].find("already earlier") != std::string::npos);
}

TEST_CASE("PATH: <release>/node_modules/.bin wins over the global PATH") {
  Fixture f;
  testutil::write(f.ctx.release_dir + "/node_modules/.bin/node", "#!/bin/sh\n", 0755);
  testutil::write(f.d / "global/node", "#!/bin/sh\n", 0755);
  f.ctx.agent_environ = {"PATH=" + f.d / "global"};
  LaunchEnv env = f.build();
  std::string resolved, err;
  REQUIRE(resolve_command("node", env, f.ctx.release_dir, f.ctx.account, &resolved, &err));
  CHECK(resolved == f.ctx.release_dir + "/node_modules/.bin/node");
}

TEST_CASE("PATH: never from env_file; without an inherited one (or an empty one), a default") {
  Fixture f;
  f.ctx.worker = 0;
  f.ctx.agent_environ = {"PATH=/from/agent"};
  testutil::write(f.d / "app.env", "PATH=/from/env_file\nLISTEN_PID=1\nNOTIFY_SOCKET=@x\nOK=1\n");
  f.app.env_file = f.d / "app.env";
  LaunchEnv env = f.build();
  CHECK(value(env, "PATH").ends_with(":/from/agent"));
  CHECK(value(env, "PATH").find("/from/env_file") == std::string::npos);
  CHECK(value(env, "LISTEN_PID") == "<unset>");   // set in the child only; never from a file
  CHECK(value(env, "NOTIFY_SOCKET") == "<unset>");  // ready = "fd" here
  CHECK(value(env, "OK") == "1");
  REQUIRE(env.dropped.size() == 3);
  CHECK(env.dropped[0].find("variable PATH (env_file " + f.d / "app.env:1)") == 0);
  CHECK(env.dropped[1].find("variable LISTEN_PID") == 0);

  f.app.env_file.clear();
  f.app.inherit.push_back("READY_FD");
  f.ctx.agent_environ = {"PATH=", "READY_FD=9"};  // empty PATH: the seed-000 trap
  env = f.build();
  CHECK(value(env, "PATH").ends_with(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
  CHECK(value(env, "READY_FD") == "4");
  f.ctx.agent_environ.clear();  // e.g. started with env -i
  env = f.build();
  CHECK(value(env, "PATH").ends_with(":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
  CHECK(env.path.back().origin.find("default") == 0);
}

TEST_CASE("resolve_command: the account must be able to reach the release and the program") {
  Fixture f;
  Account nobody;
  nobody.name = "nobody";
  nobody.uid = 65534;
  nobody.gid = 65534;
  testutil::write(f.ctx.release_dir + "/bin/server", "#!/bin/sh\n", 0755);
  ::chmod(f.d.path.c_str(), 0755);
  ::chmod(f.ctx.release_dir.c_str(), 0700);  // copied from a 0700 source
  ::chown(f.ctx.release_dir.c_str(), 0, 0);
  LaunchEnv env = f.build();
  std::string resolved, err;
  if (::geteuid() == 0) {
    CHECK_FALSE(resolve_command("./bin/server", env, f.ctx.release_dir, nobody, &resolved, &err));
    CHECK(err == "release " + f.ctx.release_dir + ": directory " + f.ctx.release_dir + " cannot be entered by nobody");
  }
  ::chmod(f.ctx.release_dir.c_str(), 0755);
  CHECK(resolve_command("./bin/server", env, f.ctx.release_dir, nobody, &resolved, &err));
}

TEST_CASE("the agent's own variables: sockets, readiness, release") {
  Fixture f;
  f.ctx.worker = 1;
  LaunchEnv env = f.build();
  CHECK(value(env, "LISTEN_FDS") == "1");
  CHECK(value(env, "LISTEN_FDNAMES") == "web");
  CHECK(value(env, "LISTEN_PID") == "<unset>");  // set in the child, after fork
  CHECK(value(env, "READY_FD") == "4");          // right after the listen sockets at 3..
  CHECK(value(env, "APP_NAME") == "web");
  CHECK(value(env, "APP_RELEASE") == "r1");
  CHECK(value(env, "APP_VERSION") == "1.0.0");
  CHECK(value(env, "APP_RELEASE_DIR") == f.ctx.release_dir);
  CHECK(value(env, "APP_WORKER") == "1");
  CHECK(value(env, "NOTIFY_SOCKET") == "<unset>");

  f.app.ready = ReadyMode::Notify;
  f.ctx.notify_socket = "/run/agent/web.notify";
  env = f.build();
  CHECK(value(env, "NOTIFY_SOCKET") == "/run/agent/web.notify");
  CHECK(value(env, "READY_FD") == "<unset>");
  auto envp = env.envp();
  CHECK(std::find(envp.begin(), envp.end(), "APP_NAME=web") != envp.end());
}

TEST_CASE("resolve_command: clear refusals") {
  Fixture f;
  f.ctx.agent_environ = {"PATH=" + f.d / "empty"};
  LaunchEnv env = f.build();
  std::string resolved, err;
  CHECK_FALSE(resolve_command("no-such-tool-xyz", env, f.ctx.release_dir, f.ctx.account, &resolved, &err));
  CHECK(err.find("command \"no-such-tool-xyz\" is not on the launch PATH (" + f.ctx.release_dir + "/node_modules/.bin:") == 0);
  CHECK(err.find(f.d / "empty)") != std::string::npos);

  testutil::write(f.ctx.release_dir + "/bin/server", "#!/bin/sh\n", 0755);
  REQUIRE(resolve_command("./bin/server", env, f.ctx.release_dir, f.ctx.account, &resolved, &err));
  CHECK(resolved == f.ctx.release_dir + "/./bin/server");
  testutil::write(f.ctx.release_dir + "/bin/data", "x", 0644);
  CHECK_FALSE(resolve_command("bin/data", env, f.ctx.release_dir, f.ctx.account, &resolved, &err));
  CHECK(err.find("is not executable by") != std::string::npos);
  CHECK_FALSE(resolve_command("/nonexistent/bin/x", env, f.ctx.release_dir, f.ctx.account, &resolved, &err));
  CHECK(err == "command \"/nonexistent/bin/x\": /nonexistent/bin/x does not exist");
}

TEST_CASE("executability is judged for the worker's account, not the agent's") {
  Fixture f;
  ::chmod(f.d.path.c_str(), 0755);
  testutil::write(f.d / "bin/owner-only", "#!/bin/sh\n", 0700);
  ::chown((f.d / "bin/owner-only").c_str(), 0, 0);
  Account nobody;
  nobody.name = "nobody";
  nobody.uid = 65534;
  nobody.gid = 65534;
  f.ctx.agent_environ = {"PATH=" + f.d / "bin"};
  LaunchEnv env = f.build();
  std::string resolved, err;
  CHECK_FALSE(resolve_command("owner-only", env, f.ctx.release_dir, nobody, &resolved, &err));
  CHECK(err.find("is not executable by nobody") != std::string::npos);
  if (::geteuid() == 0) CHECK(resolve_command("owner-only", env, f.ctx.release_dir, f.ctx.account, &resolved, &err));
}

TEST_CASE("shim = node: NODE_OPTIONS keeps what was there, PORT and the drain signal are set") {
  Fixture f;
  f.app.shim = "node";
  f.app.inherit.push_back("NODE_OPTIONS");
  f.ctx.agent_environ = {"PATH=/usr/bin", "NODE_OPTIONS=--max-old-space-size=512"};
  f.ctx.node_shim = "/opt/agent/share/deploy-agent/shims/node/shim.js";
  LaunchEnv env = f.build();
  CHECK(value(env, "NODE_OPTIONS") == "--max-old-space-size=512 --require \"/opt/agent/share/deploy-agent/shims/node/shim.js\"");
  CHECK(value(env, "PORT") == "8197");
  CHECK(value(env, "AGENT_DRAIN_SIGNAL") == "SIGTERM");
  CHECK(value(env, "AGENT_LISTEN") == "127.0.0.1:8197");

  f.app.env = {{"PORT", "9000"}};  // the operator's word wins for PORT
  CHECK(value(f.build(), "PORT") == "9000");

  f.ctx.node_shim.clear();
  LaunchEnv broken;
  std::string err;
  CHECK_FALSE(LaunchEnv::build(f.app, f.ctx, &broken, &err));
  CHECK(err.find("shim = \"node\": the agent's Node shim is not installed (looked in ") == 0);
}
