// Fleets (agent/fleet/): the waves as pure arithmetic, in microseconds; the etcd client and the
// coordinator against a real etcd (Debian's etcd-server, one member started by the test on a
// loopback port of its own and stopped after).
#include <doctest/doctest.h>

#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "agent/config/config.h"
#include "agent/fleet/etcd.h"
#include "agent/fleet/fleet.h"
#include "agent/fleet/waves.h"
#include "base/base64.h"
#include "testutil.h"

using namespace agent;
using namespace agent::fleet;
using namespace std::chrono_literals;

namespace {

std::vector<FleetWave> waves(std::initializer_list<const char*> list) {
  std::vector<FleetWave> out;
  for (const char* s : list) {
    std::string t = s;
    if (t.ends_with("%")) out.push_back({std::stoi(t), true});
    else out.push_back({std::stoi(t), false});
  }
  return out;
}

}  // namespace

TEST_CASE("waves: bounds as Ansible's serial, the last entry repeating, percentages rounding up") {
  CHECK(wave_bounds(waves({"1", "50%", "100%"}), 4) == std::vector<int>{1, 3, 4});
  CHECK(wave_bounds(waves({"1", "25%", "100%"}), 8) == std::vector<int>{1, 3, 8});
  CHECK(wave_bounds(waves({"1", "25%"}), 8) == std::vector<int>{1, 3, 5, 7, 8});  // 25% repeats
  CHECK(wave_bounds(waves({"2"}), 5) == std::vector<int>{2, 4, 5});
  CHECK(wave_bounds(waves({"30%"}), 5) == std::vector<int>{2, 4, 5});  // 1.5 rounds up to 2
  CHECK(wave_bounds(waves({"1", "100%"}), 1) == std::vector<int>{1});
  CHECK(wave_bounds(waves({"10"}), 3) == std::vector<int>{3});
  CHECK(wave_bounds({}, 3) == std::vector<int>{3});  // no waves: everyone at once
  CHECK(wave_bounds(waves({"1"}), 0).empty());
}

TEST_CASE("waves: the canary rolls alone; the next wave opens only when every earlier host is done") {
  auto w = waves({"1", "50%", "100%"});  // 4 hosts: 1, then 2, then 1
  WaveView v{4, 0, {}, {{"c", 30}, {"a", 10}, {"b", 20}, {"d", 40}}};
  Decision d = decide(w, v);
  CHECK(d.wave == 0);
  CHECK(d.waves == 3);
  CHECK(d.granted == std::vector<std::string>{"a"});  // the first to ask, by revision
  v.holding = {"a"};
  v.waiting = {{"c", 30}, {"b", 20}, {"d", 40}};
  CHECK(decide(w, v).granted.empty());  // the canary is still rolling or baking
  v.holding = {};
  v.done = 1;
  d = decide(w, v);
  CHECK(d.wave == 1);
  CHECK(d.granted == std::vector<std::string>{"b", "c"});
  v.holding = {"b"};
  v.done = 2;  // c is done, b is not: wave 2 stays open and has no room
  v.waiting = {{"d", 40}};
  CHECK(decide(w, v).granted.empty());
  v.holding = {};
  v.done = 3;
  CHECK(decide(w, v).granted == std::vector<std::string>{"d"});
  v.done = 4;
  v.waiting = {};
  d = decide(w, v);
  CHECK(d.capacity == 0);
}

TEST_CASE("waves: a host that joins late waits its turn; hosts that hold count even unregistered") {
  auto w = waves({"1", "100%"});
  WaveView v{1, 0, {"x", "y"}, {{"z", 5}}};  // only 1 registered, but 2 hold slots
  Decision d = decide(w, v);
  CHECK(d.granted.empty());
  CHECK(d.capacity == 1);
}

TEST_CASE("config: [fleet] and fleet_waves, with pointed errors") {
  std::string base = "[[app]]\nname = \"api\"\ncommand = [\"node\", \"s.js\"]\nsource = \"/srv/api\"\n";
  Config c;
  std::vector<ConfigError> errors;
  CHECK(parse_config("[fleet]\netcd = [\"http://127.0.0.1:2379/\"]\nname = \"web\"\nhost = \"web-01\"\nlease_ttl = \"5s\"\n" + base +
                         "fleet_waves = [1, \"25%\", \"100%\"]\n",
                     "a.toml", &c, &errors));
  REQUIRE(c.fleet);
  CHECK(c.fleet->etcd == std::vector<std::string>{"http://127.0.0.1:2379"});
  CHECK(c.fleet->host == "web-01");
  CHECK(c.fleet->lease_ttl == base::Millis(5000));
  CHECK(c.apps[0].fleet_waves == waves({"1", "25%", "100%"}));

  auto first_error = [&](const std::string& text) {
    Config c2;
    std::vector<ConfigError> e;
    parse_config(text, "a.toml", &c2, &e);
    return e.empty() ? std::string() : e[0].format();
  };
  CHECK(first_error(base + "fleet_waves = [1]\n").find("has fleet_waves but the file has no [fleet]") != std::string::npos);
  CHECK(first_error("[fleet]\netcd = [\"http://e:2379\"]\nname = \"web\"\n" + base + "fleet_waves = [0]\n").find("a wave has at least 1") != std::string::npos);
  CHECK(first_error("[fleet]\netcd = [\"http://e:2379\"]\nname = \"web\"\n" + base + "fleet_waves = [\"120%\"]\n").find("\"120%\": a percentage") != std::string::npos);
  CHECK(first_error("[fleet]\netcd = [\"e:2379\"]\nname = \"web\"\n" + base).find("must start with http://") != std::string::npos);
  CHECK(first_error("[fleet]\netcd = [\"http://e:2379\"]\n" + base).find("missing required key \"name\"") != std::string::npos);
  CHECK(first_error("[fleet]\netcd = [\"http://e:2379\"]\nname = \"web\"\nlease_ttl = \"1s\"\n" + base).find("at least 2s") != std::string::npos);
  CHECK(first_error("[fleet]\netcd = [\"http://e:2379\"]\nname = \"web\"\netcd_user = \"root\"\n" + base).find("needs etcd_password_file") != std::string::npos);
  CHECK(first_error("[fleet]\netcd = [\"http://e:2379\"]\nname = \"web\"\netcd_pasword_file = \"/x\"\n" + base).find("did you mean \"etcd_password_file\"") != std::string::npos);
}

TEST_CASE("base64 round trips, and refuses what is not base64") {
  for (std::string s : {std::string(), std::string("a"), std::string("ab"), std::string("abc"), std::string("abcd"), std::string("\0\xff\x10", 3)}) CHECK(base::base64_decode(base::base64_encode(s)) == s);
  CHECK(base::base64_encode("hello") == "aGVsbG8=");
  CHECK_FALSE(base::base64_decode("aGVsbG8"));
  CHECK_FALSE(base::base64_decode("a=GV"));
  CHECK(prefix_end("/a/") == "/a0");
}

namespace {

EtcdSettings endpoints(std::vector<std::string> list) {
  EtcdSettings s;
  s.endpoints = std::move(list);
  return s;
}

// One etcd member on a free loopback port, for the length of a test.
struct EtcdServer {
  testutil::TempDir dir;
  pid_t pid = 0;
  std::string url;
  /// `tls`: clients speak https and show a certificate of the test's CA (made with openssl).
  explicit EtcdServer(bool tls = false, int client_port = 0) {
    int client = client_port ? client_port : free_port(), peer = free_port();
    url = std::string(tls ? "https" : "http") + "://127.0.0.1:" + std::to_string(client);
    std::vector<std::string> extra;
    if (tls) {
      make_certificates();
      extra = {"--cert-file", dir / "server.crt", "--key-file", dir / "server.key", "--trusted-ca-file", dir / "ca.crt",
               "--client-cert-auth"};
    }
    std::string peer_url = "http://127.0.0.1:" + std::to_string(peer);
    pid = fork();
    if (pid == 0) {
      std::string log = dir / "etcd.log";
      freopen(log.c_str(), "w", stdout);
      freopen(log.c_str(), "a", stderr);
      std::vector<std::string> args = {"etcd", "--name", "t", "--data-dir", dir / "data", "--listen-client-urls", url,
                                       "--advertise-client-urls", url, "--listen-peer-urls", peer_url,
                                       "--initial-advertise-peer-urls", peer_url, "--initial-cluster", "t=" + peer_url};
      args.insert(args.end(), extra.begin(), extra.end());
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execvp("etcd", argv.data());
      _exit(127);
    }
    Etcd e(client_settings());
    auto until = std::chrono::steady_clock::now() + 20s;
    std::string err;
    std::vector<KeyValue> kvs;
    while (!e.range_prefix("/", &kvs, nullptr, &err)) {
      REQUIRE_MESSAGE(std::chrono::steady_clock::now() < until, (std::string("etcd did not start: ") + err + "; " + testutil::read(dir / "etcd.log")));
      std::this_thread::sleep_for(50ms);
    }
  }
  bool tls() const { return url.starts_with("https"); }
  EtcdSettings client_settings() const {
    EtcdSettings s = endpoints({url});
    if (tls()) s.ca_file = dir / "ca.crt", s.cert_file = dir / "client.crt", s.key_file = dir / "client.key";
    return s;
  }
  void make_certificates() {
    std::string d = dir.path;
    std::string script =
        "set -e; cd " + d + "; exec >openssl.log 2>&1\n"
        "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=test-ca -keyout ca.key -out ca.crt\n"
        // The client's certificate has no CommonName: with auth on, etcd's JSON gateway refuses one
        // that has (it would not use it as the user), docs/operating.md "Fleets".
        "for n in server client; do\n"
        "  if [ $n = server ]; then subj=/CN=server; else subj=/O=agent; fi\n"
        "  openssl req -newkey rsa:2048 -nodes -subj $subj -keyout $n.key -out $n.csr\n"
        "  echo subjectAltName=IP:127.0.0.1 > $n.ext; echo extendedKeyUsage=serverAuth,clientAuth >> $n.ext\n"
        "  openssl x509 -req -in $n.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile $n.ext -out $n.crt\n"
        "done\n";
    REQUIRE_MESSAGE(std::system(("sh -c '" + script + "'").c_str()) == 0, testutil::read(dir / "openssl.log"));
  }
  /// etcdctl against this member, with its TLS flags.
  int etcdctl(const std::string& args) const {
    std::string tls_flags = tls() ? " --cacert " + dir / "ca.crt" + " --cert " + dir / "client.crt" + " --key " + dir / "client.key" : "";
    return std::system(("ETCDCTL_API=3 etcdctl --endpoints " + url + tls_flags + " " + args + " >>" + dir / "etcdctl.log" + " 2>&1").c_str());
  }
  ~EtcdServer() {
    kill(pid, SIGTERM);
    waitpid(pid, nullptr, 0);
  }
  static int free_port() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    close(fd);
    return ntohs(a.sin_port);
  }
};

// What a coordinator's callbacks said, waited for with deadlines.
struct Heard {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::string> lines;
  void add(const std::string& s) {
    std::lock_guard<std::mutex> l(mu);
    lines.push_back(s);
    cv.notify_all();
  }
  bool wait_for(const std::string& s, std::chrono::milliseconds limit = 10s) {
    std::unique_lock<std::mutex> l(mu);
    return cv.wait_for(l, limit, [&] {
      for (const auto& x : lines)
        if (x.find(s) != std::string::npos) return true;
      return false;
    });
  }
  bool has(const std::string& s) {
    std::lock_guard<std::mutex> l(mu);
    for (const auto& x : lines)
      if (x.find(s) != std::string::npos) return true;
    return false;
  }
};

FleetSettings settings(const EtcdServer& e, const std::string& host) {
  FleetSettings s;
  s.etcd = {"http://127.0.0.1:1", e.url};  // a dead member first: the client goes on to the next
  s.name = "t";
  s.host = host;
  s.lease_ttl = base::Millis(3000);
  return s;
}

const char* turn_name(Turn::Kind k) { return k == Turn::Kind::Go ? "go" : k == Turn::Kind::Halted ? "halted" : "already"; }

}  // namespace

TEST_CASE("etcd client: put, range, a create-only transaction, a lease that expires, a watch") {
  EtcdServer server;
  Etcd e(endpoints({"http://127.0.0.1:1", server.url}));
  std::string err;
  REQUIRE_MESSAGE(e.put("/x/a", "1", 0, &err), err);
  REQUIRE_MESSAGE(e.put("/x/b", "two", 0, &err), err);
  CHECK(e.endpoint() == server.url);
  std::vector<KeyValue> kvs;
  std::int64_t rev = 0;
  REQUIRE(e.range_prefix("/x/", &kvs, &rev, &err));
  REQUIRE(kvs.size() == 2);
  CHECK(kvs[1].value == "two");
  CHECK(rev >= 2);
  bool won = false;
  REQUIRE(e.txn(nlohmann::json::array({Etcd::absent("/x/halt")}), nlohmann::json::array({Etcd::put_op("/x/halt", "me")}), {}, &won, &err));
  CHECK(won);
  REQUIRE(e.txn(nlohmann::json::array({Etcd::absent("/x/halt")}), nlohmann::json::array({Etcd::put_op("/x/halt", "other")}), {}, &won, &err));
  CHECK_FALSE(won);
  KeyValue kv;
  bool found = false;
  REQUIRE(e.get("/x/halt", &kv, &found, &err));
  CHECK(found);
  CHECK(kv.value == "me");
  std::int64_t lease = 0, left = 0;
  REQUIRE(e.lease_grant(2, &lease, &err));
  REQUIRE(e.put("/x/leased", "v", lease, &err));
  REQUIRE(e.lease_keepalive(lease, &left, &err));
  CHECK(left > 0);
  REQUIRE(e.lease_revoke(lease, &err));
  REQUIRE(e.get("/x/leased", &kv, &found, &err));
  CHECK_FALSE(found);
  REQUIRE(e.lease_keepalive(lease, &left, &err));
  CHECK(left == 0);  // gone
  // A watch sees a change made after it started.
  Etcd w(endpoints({server.url}));
  std::atomic<int> events{0};
  std::thread t([&] {
    std::string werr;
    w.watch("/x/", 0, [&](std::int64_t) { return ++events < 2; }, &werr);  // the first is "created"
  });
  auto until = std::chrono::steady_clock::now() + 5s;
  while (events < 1 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  REQUIRE(e.put("/x/c", "3", 0, &err));
  while (events < 2 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  CHECK(events >= 2);
  w.abort();
  t.join();
  // Nothing answers: one clear error naming the members.
  Etcd dead(endpoints({"http://127.0.0.1:1"}));
  CHECK_FALSE(dead.put("/x/d", "v", 0, &err));
  CHECK(err.find("no etcd member answered") != std::string::npos);
}

TEST_CASE("coordinator: one slot at a time, in order of asking; a failure halts; resume lifts it") {
  EtcdServer server;
  Heard heard;
  auto make = [&](const std::string& host) {
    Events ev;
    ev.resumed = [&, host](const std::string& app, const std::string& version) { heard.add(host + " resumed " + app + " " + version); };
    return std::make_unique<Coordinator>(settings(server, host), ev);
  };
  auto a = make("a"), b = make("b"), c = make("c");
  auto ask = [&](Coordinator& co, const std::string& host, const std::string& version) {
    co.acquire("api", version, waves({"1"}), [&, host](const std::string& line) { heard.add(host + " progress " + line); },
               [&, host, version](const Turn& t) { heard.add(host + " " + turn_name(t.kind) + " " + version + " " + t.reason); });
  };
  ask(*a, "a", "1.0.0");
  REQUIRE(heard.wait_for("a go 1.0.0"));
  ask(*b, "b", "1.0.0");
  REQUIRE(heard.wait_for("b progress waiting for a fleet slot: a rolling 1.0.0"));
  ask(*c, "c", "1.0.0");
  REQUIRE(heard.wait_for("c progress waiting for a fleet slot"));
  a->baking("api", "1.0.0");
  REQUIRE(heard.wait_for("b progress waiting for a fleet slot: a baking 1.0.0"));
  a->finish("api", "1.0.0", true, "");
  REQUIRE(heard.wait_for("b go 1.0.0"));
  CHECK_FALSE(heard.has("c go"));  // b asked first
  std::atomic<int> made{-1};
  b->finish("api", "1.0.0", false, "bake failed: GET /health: HTTP 500", [&](bool m) { made = m; });
  REQUIRE(heard.wait_for("c halted 1.0.0 halted by b: bake failed"));
  CHECK(made == 1);
  // A host that is done passes at once.
  ask(*a, "a", "1.0.0");
  REQUIRE(heard.wait_for("a already 1.0.0"));
  // Status shows each host's state for the newest version, and the halt.
  std::mutex mu;
  nlohmann::json st;
  std::atomic<bool> got{false};
  a->status("api", {{"api", waves({"1"})}}, [&](const nlohmann::json& j, const std::string& err) {
    std::lock_guard<std::mutex> l(mu);
    st = j;
    CHECK(err.empty());
    got = true;
  });
  auto until = std::chrono::steady_clock::now() + 10s;
  while (!got && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(10ms);
  REQUIRE(got);
  {
    std::lock_guard<std::mutex> l(mu);
    REQUIRE(st["apps"].size() == 1);
    CHECK(st["apps"][0]["version"] == "1.0.0");
    CHECK(st["apps"][0]["halt"]["host"] == "b");
    std::map<std::string, std::string> states;
    for (const auto& h : st["apps"][0]["hosts"]) states[h["host"]] = h["state"];
    CHECK(states["a"] == "done");
    CHECK(states["b"] == "failed");
    CHECK(states["c"] == "halted");
  }
  // Resume: the halt goes, and the hosts watching for it hear so.
  c->watch_halt("api", "1.0.0");
  b->watch_halt("api", "1.0.0");
  std::atomic<bool> resumed{false};
  a->resume("api", "1.0.0", [&](bool ok, const std::string& m) {
    CHECK_MESSAGE(ok, m);
    resumed = true;
  });
  REQUIRE(heard.wait_for("c resumed api 1.0.0"));
  REQUIRE(heard.wait_for("b resumed api 1.0.0"));
  CHECK(resumed);
  // A later version has waves of its own.
  ask(*c, "c", "1.1.0");
  REQUIRE(heard.wait_for("c go 1.1.0"));
  // A dead host's slot frees itself with its lease; a clean exit frees it at once.
  ask(*b, "b", "1.1.0");
  REQUIRE(heard.wait_for("b progress waiting for a fleet slot: c rolling 1.1.0"));
  auto t0 = std::chrono::steady_clock::now();
  c.reset();  // revokes its lease
  REQUIRE(heard.wait_for("b go 1.1.0", 3s));
  CHECK(std::chrono::steady_clock::now() - t0 < 2500ms);
}

TEST_CASE("etcd client: TLS with a client certificate, then a user and password; the password is never in an error") {
  EtcdServer server(/*tls=*/true);
  std::string err;
  Etcd e(server.client_settings());
  REQUIRE_MESSAGE(e.put("/tls/a", "1", 0, &err), err);
  // No client certificate: refused by the member, said plainly.
  EtcdSettings no_cert = server.client_settings();
  no_cert.cert_file.clear();
  no_cert.key_file.clear();
  CHECK_FALSE(Etcd(no_cert).put("/tls/b", "1", 0, &err));
  CHECK_MESSAGE(err.find("no etcd member answered (" + server.url + "/v3/kv/put: ") == 0, err);
  // Not our CA: the server is not trusted.
  EtcdSettings no_ca = server.client_settings();
  no_ca.ca_file = "/etc/ssl/certs/ca-certificates.crt";
  CHECK_FALSE(Etcd(no_ca).put("/tls/b", "1", 0, &err));
  CHECK_MESSAGE(err.find("certificate") != std::string::npos, err);  // curl: "SSL certificate problem: ..."

  // Authentication on: root with a password, read from its file for each authentication.
  REQUIRE(server.etcdctl("user add root:s3cret-pw") == 0);
  REQUIRE(server.etcdctl("role add root") == 0);
  REQUIRE(server.etcdctl("user grant-role root root") == 0);
  REQUIRE(server.etcdctl("auth enable") == 0);
  testutil::write(server.dir / "password", "s3cret-pw\n", 0600);
  CHECK_FALSE(Etcd(server.client_settings()).put("/tls/c", "1", 0, &err));  // no user: refused
  CHECK_MESSAGE(err.find("user name is empty") != std::string::npos, err);
  EtcdSettings with_user = server.client_settings();
  with_user.user = "root";
  with_user.password_file = server.dir / "password";
  Etcd authed(with_user);
  REQUIRE_MESSAGE(authed.put("/tls/c", "1", 0, &err), err);
  KeyValue kv;
  bool found = false;
  REQUIRE(authed.get("/tls/c", &kv, &found, &err));
  CHECK(found);
  testutil::write(server.dir / "wrong", "not-the-password\n", 0600);
  with_user.password_file = server.dir / "wrong";
  CHECK_FALSE(Etcd(with_user).put("/tls/d", "1", 0, &err));
  CHECK(err.find("authenticating as root") != std::string::npos);
  CHECK(err.find("not-the-password") == std::string::npos);
  CHECK(err.find("s3cret-pw") == std::string::npos);
}

TEST_CASE("coordinator: a host whose lease ran out while it rolled finds its slot taken; its done still counts") {
  EtcdServer server;
  Heard heard;
  auto make = [&](const std::string& host, base::Millis ttl) {
    FleetSettings s = settings(server, host);
    s.lease_ttl = ttl;
    return std::make_unique<Coordinator>(s, Events{});
  };
  // a renews its lease only every 10 s: it cannot notice the loss and take its number back
  // before b takes it (which, noticed first, it would: that is the other outcome, by design).
  auto a = make("a", base::Millis(30'000)), b = make("b", base::Millis(3000));
  auto ask = [&](Coordinator& co, const std::string& host) {
    co.acquire("api", "2.0.0", waves({"1", "100%"}), nullptr,
               [&, host](const Turn& t) { heard.add(host + " " + turn_name(t.kind) + " " + t.reason); });
  };
  ask(*a, "a");
  REQUIRE(heard.wait_for("a go"));
  ask(*b, "b");
  // a is cut off longer than its lease: etcd forgets the lease and what it held.
  Etcd admin(server.client_settings());
  std::string err, vp = a->version_prefix("api", "2.0.0");
  KeyValue slot0;
  bool found = false;
  REQUIRE(admin.get(vp + "slot/0", &slot0, &found, &err));
  REQUIRE(found);
  REQUIRE(admin.lease_revoke(slot0.lease, &err));
  REQUIRE(heard.wait_for("b go"));  // the slot came free: b takes number 0
  a->finish("api", "2.0.0", true, "");
  auto until = std::chrono::steady_clock::now() + 10s;
  std::vector<KeyValue> kvs;
  auto slots = [&] {
    std::map<std::string, std::string> out;
    admin.range_prefix(vp + "slot/", &kvs, nullptr, &err);
    for (const auto& kv : kvs) out[kv.key.substr(vp.size())] = kv.value;
    return out;
  };
  while (slots().size() < 2 && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(20ms);
  auto s = slots();
  CHECK(s["slot/0"] == R"({"done":false,"host":"b"})");  // b's, untouched
  CHECK(s["slot/1"] == R"({"done":true,"host":"a"})");   // a's done, in a number of its own
}

TEST_CASE("coordinator: a done host whose agent stopped still counts toward the waves (no one starves)") {
  EtcdServer server;
  Heard heard;
  auto a = std::make_unique<Coordinator>(settings(server, "a"), Events{});
  auto b = std::make_unique<Coordinator>(settings(server, "b"), Events{});
  auto ask = [&](Coordinator& co, const std::string& host) {
    co.acquire("api", "3.0.0", waves({"50%"}), nullptr, [&, host](const Turn& t) { heard.add(host + " " + turn_name(t.kind)); });
  };
  ask(*a, "a");  // 2 hosts, 50%: one at a time
  REQUIRE(heard.wait_for("a go"));
  a->finish("api", "3.0.0", true, "");
  a.reset();  // a is done and its agent stops (the finish reaches etcd first): 1 host alive, 1 done
  ask(*b, "b");
  REQUIRE(heard.wait_for("b go"));  // the second wave is b's, not a wave of "50% of 1 host" already full
}

TEST_CASE("coordinator: an abandon retried while etcd was away does not take a wait asked for after it") {
  int port = EtcdServer::free_port();
  FleetSettings fs;
  fs.etcd = {"http://127.0.0.1:" + std::to_string(port)};  // nothing there yet
  fs.name = "t";
  fs.host = "a";
  fs.lease_ttl = base::Millis(3000);
  Heard heard;
  Coordinator a(fs, Events{});
  auto ask = [&](const std::string& tag) {
    a.acquire("api", "4.0.0", waves({"1"}), nullptr, [&, tag](const Turn& t) { heard.add(tag + " " + turn_name(t.kind)); });
  };
  ask("first");
  a.abandon("api", "4.0.0");  // fails: etcd is not there; tried again later, in order
  ask("second");
  EtcdServer server(false, port);  // etcd comes
  CHECK(heard.wait_for("second go"));
  CHECK_FALSE(heard.has("first"));
}

TEST_CASE("coordinator: a halt watched before it exists is not taken for a lifted one") {
  EtcdServer server;
  Heard heard;
  Events ev;
  ev.resumed = [&](const std::string& app, const std::string& version) { heard.add("resumed " + app + " " + version); };
  Coordinator a(settings(server, "a"), ev);
  auto round_trip = [&] {  // a command answered, then the rest of that step (check_halts) ran too: twice
    for (int i = 0; i < 2; ++i) {
      std::atomic<bool> got{false};
      a.status("", {}, [&](const nlohmann::json&, const std::string&) { got = true; });
      auto until = std::chrono::steady_clock::now() + 10s;
      while (!got && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(5ms);
      REQUIRE(got);
    }
  };
  a.acquire("api", "5.0.0", waves({"1"}), nullptr, [&](const Turn& t) { heard.add(std::string("turn ") + turn_name(t.kind)); });
  REQUIRE(heard.wait_for("turn go"));
  a.watch_halt("api", "5.0.0");  // the supervisor asks this just before the failing verdict
  round_trip();                  // ... and a step may read the halt before the verdict made it
  a.finish("api", "5.0.0", false, "bake failed");
  round_trip();
  CHECK_FALSE(heard.has("resumed"));
  std::atomic<bool> done{false};
  a.resume("api", "5.0.0", [&](bool ok, const std::string&) { done = ok; });
  REQUIRE(heard.wait_for("resumed api 5.0.0"));
  CHECK(done);
}
