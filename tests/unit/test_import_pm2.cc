#include <doctest/doctest.h>

#include <csignal>
#include <string>
#include <vector>

#include "agent/config/config.h"
#include "agent/cli/import_pm2.h"

using namespace agent;

namespace {

// Seed 004's pm2.json, verbatim: two apps on one host, 14 and 10 workers, ports 8197 and 8198.
const char* kSeed004 = R"({
    "apps": [{
        "exec_interpreter": "node",
        "name": "nuomi",
        "exec_mode": "cluster_mode",
        "instances": "14",
        "max_memory_restart": "500M",
        "merge_logs": false,
        "script": "app.js",
        "ignoreWatch": ["pm2", "log", "node_modules"],
        "env": {
            "NODE_ENV": "production",
            "PM2_GRACEFUL_TIMEOUT": 1000,
            "PORT": 8197,
            "DEBUG": true
        },
        "env_dev": {
            "NODE_ENV": "development",
            "DEBUG": true
        },
        "env_test": {
            "NODE_ENV": "qa"
        }
    }, {
        "exec_interpreter": "node",
        "name": "h5",
        "exec_mode": "cluster_mode",
        "instances": "10",
        "max_memory_restart": "500M",
        "merge_logs": false,
        "script": "app.js",
        "ignoreWatch": ["pm2", "log", "node_modules"],
        "env": {
            "NODE_ENV": "production",
            "PM2_GRACEFUL_TIMEOUT": 1000,
            "PORT": 8198,
            "DEBUG": true
        },
        "env_dev": {
            "NODE_ENV": "development",
            "DEBUG": true
        },
        "env_test": {
            "NODE_ENV": "qa"
        }
    }]
}

)";

// Converts and requires success.
Pm2Import convert(const std::string& text) {
  Pm2Import out;
  std::string err;
  bool ok = import_pm2(text, "pm2.json", &out, &err);
  INFO(err);
  REQUIRE(ok);
  return out;
}

// The error of a conversion that must fail.
std::string failure(const std::string& text) {
  Pm2Import out;
  std::string err;
  CHECK_FALSE(import_pm2(text, "pm2.json", &out, &err));
  CHECK(out.toml.empty());
  return err;
}

// The agent's own loader accepts the text: what `agent check` runs.
Config load(const std::string& toml) {
  Config cfg;
  std::vector<ConfigError> errors;
  bool ok = parse_config(toml, "agent.toml", &cfg, &errors);
  std::string all;
  for (const auto& e : errors) all += e.format() + "\n";
  INFO(toml);
  INFO(all);
  REQUIRE(ok);
  return cfg;
}

bool has(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

using KV = std::vector<std::pair<std::string, std::string>>;

}  // namespace

TEST_CASE("seed 004: two Node apps with their ports, workers and memory limits") {
  Pm2Import out = convert(kSeed004);
  const std::string& t = out.toml;
  CHECK(t.starts_with("# agent.toml generated from pm2.json by `agent import-pm2`."));

  Config cfg = load(t);
  REQUIRE(cfg.apps.size() == 2);
  const AppConfig& nuomi = cfg.apps[0];
  CHECK(nuomi.name == "nuomi");
  CHECK(nuomi.command == std::vector<std::string>{"node", "app.js"});
  CHECK(nuomi.instances == 14);
  REQUIRE(nuomi.listen.size() == 1);
  CHECK(nuomi.listen[0].canonical() == "0.0.0.0:8197");
  CHECK(nuomi.shim == "node");
  CHECK(nuomi.ready == ReadyMode::Fd);
  CHECK(nuomi.max_memory == 500ull << 20);
  CHECK(nuomi.drain_signal == SIGINT);  // what PM2 stops workers with
  CHECK(nuomi.source.empty());  // PM2 has no cwd here: left for the operator, said so
  CHECK(nuomi.env == KV{{"DEBUG", "true"}, {"NODE_ENV", "production"}, {"PM2_GRACEFUL_TIMEOUT", "1000"}, {"PORT", "8197"}});
  const AppConfig& h5 = cfg.apps[1];
  CHECK(h5.name == "h5");
  CHECK(h5.instances == 10);
  CHECK(h5.listen[0].canonical() == "0.0.0.0:8198");
  CHECK(h5.max_memory == 500ull << 20);
  CHECK(h5.env == KV{{"DEBUG", "true"}, {"NODE_ENV", "production"}, {"PM2_GRACEFUL_TIMEOUT", "1000"}, {"PORT", "8198"}});

  // Every PM2 key left behind has its comment, in the app it belongs to.
  size_t second = t.find("name = \"h5\"");
  REQUIRE(second != std::string::npos);
  for (const std::string& app : {t.substr(0, second), t.substr(second)}) {
    CHECK(has(app, "# pm2 \"exec_mode\" = \"cluster_mode\": not needed"));
    CHECK(has(app, "# pm2 \"merge_logs\" = false: the agent writes"));
    CHECK(has(app, "# pm2 \"ignoreWatch\" = [\"pm2\",\"log\",\"node_modules\"]: the agent does not restart on file"));
    CHECK(has(app, "# pm2 \"env_dev\": PM2 environment 'dev' (pm2 start --env dev): the agent has one environment"));
    CHECK(has(app, "#     NODE_ENV = \"development\""));
    CHECK(has(app, "# pm2 \"env_test\": PM2 environment 'test'"));
    CHECK(has(app, "#     NODE_ENV = \"qa\""));
    CHECK(has(app, "# source = \"/opt/"));
  }
  CHECK(out.warnings.size() == 10);  // exec_mode, merge_logs, ignoreWatch, env_dev, env_test, twice
  CHECK(has(out.warnings[0], "app nuomi: pm2 \"exec_mode\""));
}

TEST_CASE("JSON5: comments, trailing commas, bare keys, single quotes, module.exports") {
  Pm2Import out = convert(R"(// ecosystem.config.js
module.exports = {
  /* the API */
  apps: [{
    name: 'api',            // quoted 'like this'
    script: './server.js',
    args: ['--port', "it's"],
    $cwd_note: 'a "quoted" word and \'escaped\' ones',
    env: { NODE_ENV: 'production', PORT: '3000', },
  },],
};
)");
  Config cfg = load(out.toml);
  REQUIRE(cfg.apps.size() == 1);
  CHECK(cfg.apps[0].name == "api");
  CHECK(cfg.apps[0].command == std::vector<std::string>{"node", "./server.js", "--port", "it's"});
  CHECK(cfg.apps[0].env == KV{{"NODE_ENV", "production"}, {"PORT", "3000"}});
  CHECK(cfg.apps[0].listen[0].canonical() == "0.0.0.0:3000");
  CHECK(has(out.toml, R"(# pm2 "$cwd_note" = "a \"quoted\" word and 'escaped' ones": not carried over (unknown to the agent))"));
}

TEST_CASE("PM2's three shapes: {apps: [...]}, a bare array, one app") {
  SUBCASE("a bare array") {
    Config cfg = load(convert(R"([{"name": "a", "script": "a.js"}, {"name": "b", "script": "b.js"}])").toml);
    REQUIRE(cfg.apps.size() == 2);
    CHECK(cfg.apps[1].name == "b");
  }
  SUBCASE("one app object") {
    Config cfg = load(convert(R"({"name": "solo", "script": "index.js", "instances": 2})").toml);
    REQUIRE(cfg.apps.size() == 1);
    CHECK(cfg.apps[0].instances == 2);
  }
  SUBCASE("apps holding one object, and top-level keys other than apps") {
    Pm2Import out = convert(R"({"apps": {"script": "worker.js"}, "deploy": {"production": {"host": "x"}}})");
    Config cfg = load(out.toml);
    CHECK(cfg.apps[0].name == "worker");  // no name: the script's, as PM2 does
    CHECK(has(out.toml, "# no \"name\" in pm2: the script's, as PM2 does"));
    CHECK(has(out.toml, "# pm2 \"deploy\" = {\"production\":{\"host\":\"x\"}}: the agent deploys on each host"));
  }
}

TEST_CASE("bad input: one line, with line:col for a syntax error") {
  CHECK(failure("{\n  \"apps\": [{\n    \"name\" \"x\"\n  }]\n}") == "pm2.json:3:12: unexpected string literal; expected ':'");
  CHECK(failure("{\n  apps: [\n    { name: 'x', script: 'a.js' }\n  ]\n  /* never closed") ==
        "pm2.json:5:3: unterminated /* comment");
  CHECK(failure("{\"apps\": [{\"name\": 'x}]}") == "pm2.json:1:20: unterminated string");
  CHECK(failure("{\"apps\": [{\"name\": \"x\", \"script\": \"a.js\"}]") == "pm2.json:1:43: unexpected end of input; expected '}'");
  CHECK(failure("{\"apps\": [{\"name\": \"x\", script: 'a.js'} {}]}") == "pm2.json:1:41: unexpected '{'; expected ']'");
  CHECK(failure("") == "pm2.json:1:1: unexpected end of input; expected '[', '{', or a literal");
  CHECK(failure("{}") == "pm2.json: no apps (PM2 takes {\"apps\": [...]}, an array of apps, or one app with \"script\")");
  CHECK(failure("[]").starts_with("pm2.json: no apps"));
  CHECK(failure("{\"apps\": []}").starts_with("pm2.json: no apps"));
  CHECK(failure("{\"apps\": \"app.js\"}").starts_with("pm2.json: no apps"));
  CHECK(failure("[{\"name\": \"a\", \"script\": \"a.js\"}, {\"name\": \"b\"}]") == "pm2.json: app 2 (\"b\"): no \"script\"");
  CHECK(failure("[{}]") == "pm2.json: app 1: no \"script\"");
  CHECK(failure("[\"app.js\"]") == "pm2.json: app 1 is not an object");
  CHECK(failure("[{\"script\": \"a.js\"}, {\"name\": \"a\", \"script\": \"b.js\"}]") ==
        "pm2.json: app 2: a second app named \"a\"");
}

TEST_CASE("units: sizes, milliseconds, instances") {
  Pm2Import out = convert(R"([
    {"name": "a", "script": "a.js", "max_memory_restart": 1073741824, "kill_timeout": 1600, "listen_timeout": 8000},
    {"name": "b", "script": "b.js", "max_memory_restart": "200k", "kill_timeout": "30000", "instances": "max",
     "kill_signal": "SIGTERM"},
    {"name": "c", "script": "c.js", "max_memory_restart": 1000, "instances": -1, "kill_signal": "SIGKILL"},
    {"name": "d", "script": "d.js", "max_memory_restart": "5MB", "instances": 0}
  ])");
  Config cfg = load(out.toml);
  CHECK(cfg.apps[0].max_memory == 1ull << 30);
  CHECK(has(out.toml, "max_memory = \"1G\""));
  CHECK(cfg.apps[0].kill_timeout == base::Millis(1600));
  CHECK(cfg.apps[0].drain_timeout == base::Millis(1600));  // lowered with it: never past kill_timeout
  CHECK(cfg.apps[0].ready_timeout == base::Millis(8000));
  CHECK(cfg.apps[1].max_memory == 200ull << 10);
  CHECK(cfg.apps[1].kill_timeout == base::Millis(30000));
  CHECK(cfg.apps[1].drain_timeout == base::Millis(10000));
  CHECK(cfg.apps[1].instances == 1);
  CHECK(cfg.apps[1].drain_signal == SIGTERM);
  CHECK(cfg.apps[2].drain_signal == SIGTERM);  // SIGKILL drains nothing: the agent's default stays, with a comment
  CHECK(has(out.toml, "# pm2 \"kill_signal\" = \"SIGKILL\": not a signal the agent drains with"));
  CHECK(has(out.toml, "# pm2 \"instances\" = \"max\": the agent runs a fixed number of workers"));
  CHECK(cfg.apps[2].max_memory == 1024);  // 1000 bytes: the agent wants a unit, rounded up to 1K
  CHECK(has(out.toml, "# pm2 \"instances\" = -1: the agent"));
  CHECK(cfg.apps[3].max_memory == 0);
  CHECK(has(out.toml, "# pm2 \"max_memory_restart\" = \"5MB\": not a size"));
  CHECK(has(out.toml, "# pm2 \"instances\" = 0: the agent"));
}

TEST_CASE("command: interpreter, node_args, args; non-Node apps and apps without PORT get ready = delay") {
  Pm2Import out = convert(R"([
    {"name": "web", "script": "/srv/web/bin/www", "cwd": "/srv/web", "node_args": "--max-old-space-size=512",
     "args": "--title 'my web' -v", "env": {"PORT": 8080}},
    {"name": "job", "script": "job.py", "args": ["-q"]},
    {"name": "npm", "script": "npm", "args": "start", "env": {"PORT": "8081"}},
    {"name": "bg", "script": "worker.js", "interpreter": "/usr/local/bin/node"},
    {"name": "same-port", "script": "s.js", "env": {"PORT": 8080}}
  ])");
  Config cfg = load(out.toml);
  CHECK(cfg.apps[0].source == "/srv/web");
  CHECK(cfg.apps[0].command == std::vector<std::string>{"node", "--max-old-space-size=512", "bin/www", "--title", "my web", "-v"});
  CHECK(cfg.apps[0].shim == "node");
  CHECK(cfg.apps[1].command == std::vector<std::string>{"python3", "job.py", "-q"});
  CHECK(cfg.apps[1].ready == ReadyMode::Delay);
  CHECK(cfg.apps[2].command == std::vector<std::string>{"npm", "start"});
  CHECK(cfg.apps[2].ready == ReadyMode::Delay);
  CHECK(cfg.apps[2].listen.empty());
  CHECK(cfg.apps[3].command == std::vector<std::string>{"/usr/local/bin/node", "worker.js"});
  CHECK(cfg.apps[3].ready == ReadyMode::Delay);
  CHECK(cfg.apps[4].listen.empty());  // 8080 is web's: binding it twice would fail `agent check`
  CHECK(has(out.toml, "# no PORT in env (or another app has it)"));
}

TEST_CASE("env: values become strings, escaped; what the agent sets or refuses is a comment") {
  Pm2Import out = convert(R"({"apps": [{"name": "e", "script": "e.js", "autorestart": false, "foo": {"x": 1}, "cwd": 5,
    "env": {"QUOTE": "say \"hi\" \\ bye", "LINES": "a\nb\tc\u0001", "UTF": "糯米", "RATIO": 0.5, "N": null,
            "PATH": "/opt/bin", "LISTEN_FDS": 3, "bad-name": "x", "JSON": {"a": [1, 2]}}}]})");
  Config cfg = load(out.toml);
  CHECK(cfg.apps[0].env == KV{{"JSON", "{\"a\":[1,2]}"}, {"LINES", "a\nb\tc\x01"}, {"QUOTE", "say \"hi\" \\ bye"},
                              {"RATIO", "0.5"}, {"UTF", "糯米"}});
  CHECK(has(out.toml, "# pm2 \"env.PATH\" = \"/opt/bin\": the agent builds PATH"));
  CHECK(has(out.toml, "# pm2 \"env.LISTEN_FDS\" = 3: set by the agent"));
  CHECK(has(out.toml, "# pm2 \"env.bad-name\" = \"x\": not a variable name"));
  CHECK(has(out.toml, "# pm2 \"env.N\" = null: no value"));
  CHECK(has(out.toml, "# pm2 \"autorestart\" = false: the agent always restarts a crashed worker"));
  CHECK(has(out.toml, "# pm2 \"foo\" = {\"x\":1}: not carried over (unknown to the agent)"));
  CHECK(has(out.toml, "# pm2 \"cwd\" = 5: not a string"));
}

TEST_CASE("a name the agent cannot use as a directory is made one; user and group carry over") {
  Pm2Import out = convert(R"({"name": "my app/v2", "script": "a.js", "user": "root", "uid": 0, "gid": "root"})");
  Config cfg = load(out.toml);
  CHECK(cfg.apps[0].name == "my-app-v2");
  CHECK(cfg.apps[0].user == "root");
  CHECK(has(out.toml, "# pm2 \"uid\" = 0: user is set already"));
  CHECK(cfg.apps[0].group == "root");
}

TEST_CASE("a file nested thousands deep is refused with its place, not a crash") {
  CHECK(failure(std::string(50000, '[') + std::string(50000, ']')) == "pm2.json:1:65: nested deeper than 64 levels: not a PM2 ecosystem file");
  std::string deep_env = R"({"apps":[{"name":"x","script":"a","env":{"A":)" + std::string(100000, '[') + std::string(100000, ']') + "}}]}";
  CHECK(failure(deep_env).find("nested deeper than 64 levels") != std::string::npos);
}
