#include <doctest/doctest.h>

#include <csignal>

#include "agent/config/config.h"
#include "agent/config/config_diff.h"
#include "testutil.h"

using namespace agent;

namespace {

// The DESIGN.md example, with an account that exists on every host.
const char* kDesignExample = R"([agent]
state_dir = "/var/lib/agent"
log_dir = "/var/log/agent"
control_socket = "/run/agent/agent.sock"

[alerts]
email_to = ["ops@example.com"]
email_from = "agent@example.com"
smtp_url = "smtp://127.0.0.1:25"
webhook_url = ""

[[app]]
name = "nuomi"
source = "/opt/nuomi"
watch = "package.json"
git = "/srv/git/nuomi.git"
branch = "main"
command = ["node", "app.js"]
instances = 14
listen = ["0.0.0.0:8197"]
shim = "node"
ready = "fd"
ready_timeout = "30s"
max_surge = 1
drain_signal = "SIGTERM"
drain_timeout = "10s"
kill_timeout = "60s"
max_memory = "500M"
keep_releases = 5
build = "npm ci --omit=dev"
user = "root"
[app.env]
NODE_ENV = "production"
)";

std::vector<ConfigError> errors_of(const std::string& text, Config* cfg = nullptr) {
  Config local;
  std::vector<ConfigError> errors;
  parse_config(text, "t.toml", cfg ? cfg : &local, &errors);
  return errors;
}

// One error, at this line and column, whose message contains `part`.
void expect_one(const std::string& text, int line, int col, const std::string& part) {
  auto errors = errors_of(text);
  REQUIRE_MESSAGE(errors.size() == 1, "errors: ", errors.size(), errors.empty() ? "" : " first: " + errors[0].format());
  CHECK(errors[0].line == line);
  CHECK(errors[0].column == col);
  CHECK_MESSAGE(errors[0].message.find(part) != std::string::npos, errors[0].format());
  CHECK(errors[0].format().starts_with("t.toml:" + std::to_string(line) + ":" + std::to_string(col) + ": "));
}

const std::string kApp = "[[app]]\nname = \"a\"\ncommand = [\"node\", \"app.js\"]\n";

}  // namespace

TEST_CASE("config: the DESIGN.md example is valid and read as written") {
  Config cfg;
  auto errors = errors_of(kDesignExample, &cfg);
  REQUIRE_MESSAGE(errors.empty(), errors[0].format());
  REQUIRE(cfg.apps.size() == 1);
  const AppConfig& a = cfg.apps[0];
  CHECK(a.name == "nuomi");
  CHECK(a.instances == 14);
  CHECK(a.listen[0].port == 8197);
  CHECK(a.shim == "node");
  CHECK(a.ready == ReadyMode::Fd);
  CHECK(a.drain_signal == SIGTERM);
  CHECK(a.drain_timeout.count() == 10'000);
  CHECK(a.kill_timeout->count() == 60'000);
  CHECK(a.max_memory == 500ull << 20);
  CHECK(a.env.size() == 1);
  CHECK(a.env[0] == std::pair<std::string, std::string>{"NODE_ENV", "production"});
  CHECK(cfg.alerts.email_to == std::vector<std::string>{"ops@example.com"});
  CHECK(a.app_dir(cfg.agent) == "/var/lib/agent/nuomi");
}

TEST_CASE("config: defaults for what is left out") {
  Config cfg;
  REQUIRE(errors_of(kApp, &cfg).empty());
  const AppConfig& a = cfg.apps[0];
  CHECK(a.instances == 1);
  CHECK(a.watch == "package.json");
  CHECK(a.inherit == std::vector<std::string>{"PATH", "LANG", "TZ"});
  CHECK(a.keep_releases == 5);
  CHECK(a.drain_signal == SIGTERM);
  CHECK(cfg.agent.state_dir == "/var/lib/agent");
  CHECK(a.settle.count() == 2000);
  CHECK_FALSE(a.poll_interval.has_value());
  REQUIRE(errors_of(kApp + "settle = \"500ms\"\npoll_interval = \"5s\"\n", &cfg).empty());
  CHECK(cfg.apps[0].settle.count() == 500);
  CHECK(cfg.apps[0].poll_interval->count() == 5000);
  expect_one(kApp + "settle = \"soon\"\n", 4, 10, "settle: \"soon\" is not a duration");
}

TEST_CASE("config: kill_timeout = \"never\" waits forever") {
  Config cfg;
  REQUIRE(errors_of(kApp + "kill_timeout = \"never\"\n", &cfg).empty());
  CHECK_FALSE(cfg.apps[0].kill_timeout.has_value());
}

TEST_CASE("config: an unknown key is an error at the key, with a hint") {
  expect_one(kApp + "drain_timout = \"5s\"\n", 4, 1, "unknown key \"drain_timout\" in [[app]] \"a\" (did you mean \"drain_timeout\"?)");
  expect_one("[agent]\nstate_dri = \"/x\"\n" + kApp, 2, 1, "unknown key \"state_dri\" in [agent]");
  expect_one("bogus = 1\n" + kApp, 1, 1, "unknown key \"bogus\"");
  // PM2's names (seed 004's pm2.json) get what to write instead.
  expect_one(kApp + "max_memory_restart = \"500M\"\n", 4, 1, "(PM2's max_memory_restart is max_memory here");
  expect_one(kApp + "script = \"app.js\"\n", 4, 1, "one command here: command = [");
  expect_one(kApp + "exec_mode = \"cluster_mode\"\n", 4, 1, "not needed: every app runs `instances` workers");
  expect_one(kApp + "[app.env_production]\nNODE_ENV = \"production\"\n", 4, 6, "one environment per app: put it in [app.env]");
}

TEST_CASE("config: a wrong type names what was expected and found") {
  expect_one(kApp + "instances = \"14\"\n", 4, 13, "instances: expected an integer, found a string");
  expect_one(kApp + "listen = \"0.0.0.0:80\"\n", 4, 10, "listen: expected an array of strings");
  expect_one("[[app]]\nname = \"a\"\ncommand = \"node app.js\"\n", 3, 11, "command: expected an array of strings, found a string");
  expect_one("app = 3\n", 1, 7, "write [[app]]");
}

TEST_CASE("config: bad durations and sizes, precisely") {
  expect_one(kApp + "ready_timeout = \"30\"\n", 4, 17, "ready_timeout: \"30\" has no unit");
  expect_one(kApp + "drain_timeout = \"ten\"\n", 4, 17, "drain_timeout: \"ten\" is not a duration");
  expect_one(kApp + "max_memory = \"500Q\"\n", 4, 14, "max_memory: \"500Q\": unknown size unit");
  expect_one(kApp + "max_memory = \"200\"\n", 4, 14, "max_memory = \"200\": 200 what? use K, M or G (\"200M\"");
  expect_one("[agent]\nlog_max_size = \"1000000\"\n" + kApp, 2, 16, "log_max_size = \"1000000\": 1000000 what?");
  Config cfg;
  REQUIRE(errors_of(kApp + "max_memory = \"0\"\n", &cfg).empty());  // no limit
  CHECK(cfg.apps[0].max_memory == 0);
  expect_one(kApp + "kill_timeout = \"0s\"\n", 4, 16, "must be longer than 0");
  expect_one(kApp + "drain_timeout = \"10s\"\nkill_timeout = \"5s\"\n", 5, 16, "shorter than drain_timeout");
  expect_one(kApp + "drain_timeout = \"2m\"\n", 4, 17, "longer than kill_timeout (default 1m)");
}

TEST_CASE("config: missing required keys point at the app's table") {
  expect_one("[[app]]\nname = \"a\"\n", 1, 1, "missing required key \"command\" in [[app]] \"a\"");
  expect_one("[[app]]\ncommand = [\"x\"]\n", 1, 1, "missing required key \"name\"");
  expect_one("[agent]\n", 1, 1, "no [[app]] defined");
}

TEST_CASE("config: duplicate app names") {
  expect_one(kApp + kApp, 5, 8, "duplicate app name \"a\" (first defined on line 2)");
}

TEST_CASE("config: two apps on one listen address") {
  std::string two = "[[app]]\nname = \"a\"\ncommand = [\"x\"]\nlisten = [\"0.0.0.0:8197\"]\n"
                    "[[app]]\nname = \"b\"\ncommand = [\"x\"]\nlisten = [\"127.0.0.1:8198\", \"127.0.0.1:8197\"]\n";
  expect_one(two, 8, 29, "listen \"127.0.0.1:8197\" of app \"b\" overlaps \"0.0.0.0:8197\" of app \"a\" (line 4)");
  expect_one(kApp + "listen = [\"/run/a.sock\", \"unix:/run/a.sock\"]\n", 4, 26, "overlaps");
  expect_one(kApp + "listen = [\"example.com:80\"]\n", 4, 11, "not a numeric IPv4 address");
}

TEST_CASE("config: relative paths where absolute ones are needed") {
  expect_one("[agent]\nstate_dir = \"state\"\n" + kApp, 2, 13, "state_dir: \"state\" must be an absolute path");
  expect_one(kApp + "source = \"opt/nuomi\"\n", 4, 10, "source: \"opt/nuomi\" must be an absolute path");
  expect_one(kApp + "env_file = \".env\"\n", 4, 12, "must be an absolute path");
  expect_one(kApp + "path_prepend = [\"bin\"]\n", 4, 16, "must be an absolute directory");
  expect_one(kApp + "watch = \"../package.json\"\n", 4, 9, "must be a path inside source");
  expect_one(kApp + "linked_dirs = [\"/var/log\"]\n", 4, 15, "relative path inside the release");
}

TEST_CASE("config: instances and other numbers out of range") {
  expect_one(kApp + "instances = 0\n", 4, 13, "instances: 0 is out of range (1 to 1024)");
  expect_one(kApp + "instances = -3\n", 4, 13, "out of range");
  expect_one(kApp + "keep_releases = 0\n", 4, 17, "out of range");
  Config cfg;
  REQUIRE(errors_of(kApp + "instances = 2\nmax_surge = 9\n", &cfg).empty());
  CHECK(cfg.apps[0].max_surge == 2);  // surge beyond the instance count means "all at once"
}

TEST_CASE("config: enumerations, names and env") {
  expect_one(kApp + "ready = \"socket\"\n", 4, 9, "not one of fd, notify, delay");
  expect_one(kApp + "drain_signal = \"SIGBOGUS\"\n", 4, 16, "unknown signal");
  expect_one(kApp + "shim = \"python\"\n", 4, 8, "unknown shim");
  expect_one(kApp + "shim = \"node\"\nready = \"notify\"\n", 5, 9, "shim = \"node\" reports readiness on $READY_FD");
  expect_one("[[app]]\nname = \"../x\"\ncommand = [\"x\"]\n", 2, 8, "not a valid app name");
  expect_one(kApp + "user = \"no-such-user-here\"\n", 4, 8, "does not exist on this host");
  expect_one(kApp + "[app.env]\nLISTEN_FDS = \"3\"\n", 5, 1, "LISTEN_FDS is set by the agent");
  expect_one(kApp + "[app.env]\nX = [1]\n", 5, 5, "expected a string, number or boolean");
  expect_one(kApp + "[app.env]\nPATH = \"/opt/bin\"\n", 5, 1, "PATH is composed by the agent");
  Config cfg;
  REQUIRE(errors_of(kApp + "[app.env]\nPORT = 8197\nDEBUG = true\nRATIO = 0.5\n", &cfg).empty());
  using KV = std::pair<std::string, std::string>;
  CHECK(cfg.apps[0].env == std::vector<KV>{{"DEBUG", "true"}, {"PORT", "8197"}, {"RATIO", "0.5"}});
}

TEST_CASE("config: a TOML syntax error is reported with its place") {
  auto errors = errors_of("[[app]]\nname = \"a\ncommand = [\"x\"]\n");
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].line == 2);
}

TEST_CASE("config: every error is reported, not just the first") {
  auto errors = errors_of("[agent]\nstate_dir = \"rel\"\n[[app]]\nname = \"a\"\ncommand = [\"x\"]\ninstances = 0\nbogus = 1\n");
  CHECK(errors.size() == 3);
}

TEST_CASE("config: load_config reads the file and refuses one anyone may write") {
  testutil::TempDir dir;
  testutil::write(dir / "agent.toml", kApp, 0644);
  Config cfg;
  std::vector<ConfigError> errors;
  CHECK(load_config(dir / "agent.toml", &cfg, &errors));
  CHECK(load_config(dir / "agent.toml", &cfg, &errors));  // a second load replaces, not appends
  CHECK(cfg.apps.size() == 1);
  ::chmod((dir / "agent.toml").c_str(), 0666);
  errors.clear();
  CHECK_FALSE(load_config(dir / "agent.toml", &cfg, &errors));
  REQUIRE(errors.size() == 1);
  CHECK(errors[0].message.find("writable by every user (mode 0666)") != std::string::npos);
  errors.clear();
  CHECK_FALSE(load_config(dir / "missing.toml", &cfg, &errors));
  CHECK(errors[0].format() == dir / "missing.toml:1:1: cannot read: No such file or directory");
  errors.clear();
  CHECK_FALSE(load_config(dir.path, &cfg, &errors));
  CHECK(errors[0].message == "not a regular file");
}

TEST_CASE("[alerts]: delivery keys, and what is refused") {
  Config cfg;
  const std::string ok = "[alerts]\nemail_to = [\"ops@example.com\"]\nemail_from = \"agent@example.com\"\n"
                         "smtp_url = \"smtps://mail.example.com:465\"\nsmtp_user = \"alerts\"\n"
                         "smtp_password_file = \"/etc/agent/smtp-password\"\nmin_interval = \"1m\"\nretry_for = \"30s\"\n"
                         "tls_ca_file = \"/etc/ssl/private-ca.pem\"\n";
  REQUIRE(errors_of(ok + kApp, &cfg).empty());
  CHECK(cfg.alerts.min_interval.count() == 60'000);
  CHECK(cfg.alerts.retry_for.count() == 30'000);
  CHECK(cfg.alerts.tls_ca_file == "/etc/ssl/private-ca.pem");
  Config defaults;
  REQUIRE(errors_of(kApp, &defaults).empty());
  CHECK(defaults.alerts.min_interval.count() == 300'000);
  CHECK(defaults.alerts.retry_for.count() == 600'000);

  expect_one("[alerts]\nsmtp_url = \"smtp://bob:hunter2@mail:25\"\n" + kApp, 2, 12,
             "credentials do not belong in the URL: use smtp_user and smtp_password_file");
  expect_one("[alerts]\nemail_to = [\"ops@example.com\"]\n" + kApp, 2, 12, "email alerts need smtp_url and email_from too");
  expect_one("[alerts]\nsmtp_user = \"alerts\"\n" + kApp, 2, 13, "smtp_user needs smtp_password_file");
  // The password itself is no key at all.
  expect_one("[alerts]\nsmtp_password = \"x\"\n" + kApp, 2, 1, "smtp_password");
}

TEST_CASE("config: more than 64 listen addresses are refused, never cut") {
  std::string many = "listen = [";
  for (int i = 0; i < 65; ++i) many += std::string(i ? ", " : "") + "\"127.0.0.1:" + std::to_string(10000 + i) + "\"";
  expect_one(kApp + many + "]\n", 4, 10, "listen: at most 64 addresses per app (this has 65)");
}

TEST_CASE("config: health probe and bake") {
  const std::string web = kApp + "listen = [\"127.0.0.1:8197\"]\n";
  Config cfg;
  REQUIRE(errors_of(web + "health = \"GET /healthz\"\nhealth_host = \"www.example.com\"\nhealth_interval = \"1s\"\n"
                          "health_failures = 2\nbake = \"30s\"\n", &cfg).empty());
  const AppConfig& a = cfg.apps[0];
  CHECK(a.health_method == "GET");
  CHECK(a.health_path == "/healthz");
  CHECK(a.health_host == "www.example.com");
  CHECK(a.health_interval.count() == 1000);
  CHECK(a.health_timeout.count() == 2000);  // the default
  CHECK(a.health_failures == 2);
  CHECK(a.bake.count() == 30000);

  expect_one(web + "health = \"FETCH /x\"\n", 5, 10, "health: \"FETCH /x\": the probe is \"GET /path\" or \"HEAD /path\"");
  expect_one(web + "health = \"GET healthz\"\n", 5, 10, "the path must start with /");
  expect_one(web + "health_failures = 0\n", 5, 19, "health_failures: 0 is out of range (1 to 100)");
  expect_one(web + "health = \"GET /h\"\nbake = \"5s\"\n", 6, 8,
             "bake: 5s is shorter than health_interval x health_failures (2s x 3 = 6s)");
  expect_one(kApp + "health = \"GET /h\"\n", 4, 10, "the probe goes through the app's first listen address, and it has none");
  expect_one(web + "health_host = \"a b\"\n", 5, 15, "is not a host name");
  // A bake without a probe watches the workers only: no window to be shorter than.
  REQUIRE(errors_of(web + "bake = \"5s\"\n", &cfg).empty());
}

TEST_CASE("changed_keys: what a reload changed, by key; apps matched by name") {
  const std::string before = R"(
[agent]
state_dir = "/var/lib/agent"
[[app]]
name = "web"
command = ["node", "server.js"]
instances = 2
[app.env]
API_URL = "http://a"
[[app]]
name = "old"
command = ["node"]
)";
  const std::string after = R"(
[agent]
state_dir = "/var/lib/agent"
[[app]]
name = "api"
command = ["node"]
[[app]]
name = "web"
command = ["node", "server.js", "--x"]
instances = 4
[app.env]
API_URL = "http://a"
TOKEN = "t"
)";
  auto keys = agent::changed_keys(before, after);
  CHECK(keys == std::vector<std::string>{"app.old (removed)", "app.web.command", "app.web.instances", "app.api (added)", "app.web.env.TOKEN"});
  CHECK(agent::changed_keys(before, before).empty());
}
