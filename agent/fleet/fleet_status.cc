// The coordinator's two operator verbs (fleet.h): `agent fleet status` and `agent fleet
// resume`, run on the fleet thread as commands like any other.
#include <spdlog/spdlog.h>

#include "agent/fleet/fleet.h"
#include "agent/fleet/keys.h"
#include "agent/fleet/waves.h"

namespace agent::fleet {

using json = nlohmann::json;

void Coordinator::status(const std::string& app, std::map<std::string, std::vector<FleetWave>> waves,
                         std::function<void(const json&, const std::string&)> then) {
  post([this, app, waves = std::move(waves), then](std::string*) {
    try {
      status_now(app, waves, then);
    } catch (const std::exception& e) {
      then(json(), std::string("unexpected data in etcd: ") + e.what());
    }
    return true;  // answered either way; not tried again
  });
}

void Coordinator::status_now(const std::string& app, const std::map<std::string, std::vector<FleetWave>>& waves,
                             const std::function<void(const json&, const std::string&)>& then) {
  std::string err;
  std::vector<KeyValue> alive, hosts, kvs;
  if (!etcd_.range_prefix(prefix() + "alive/", &alive, nullptr, &err) || !etcd_.range_prefix(prefix() + "hosts/", &hosts, nullptr, &err) ||
      !etcd_.range_prefix(prefix() + "apps/" + (app.empty() ? "" : app + "/"), &kvs, nullptr, &err)) {
    return then(json(), err);
  }
  std::set<std::string> up = hosts_of(alive, prefix() + "alive/");
  std::map<std::string, json> host_apps;
  for (const auto& kv : hosts) {
    json apps = parse(kv.value)["apps"];
    json clean = json::object();
    if (apps.is_object())
      for (auto it = apps.begin(); it != apps.end(); ++it)
        if (it->is_string()) clean[it.key()] = *it;
    host_apps[kv.key.substr(prefix().size() + 6)] = clean;
  }
  for (const auto& h : up) host_apps.emplace(h, json::object());
  json out = {{"fleet", settings_.name}, {"host", settings_.host}, {"etcd", etcd_.endpoint()}, {"hosts", json::array()}, {"apps", json::array()}};
  for (const auto& [h, apps] : host_apps) out["hosts"].push_back({{"host", h}, {"alive", up.count(h) > 0}, {"apps", apps}});
  // apps/<app>/<version>/...: the newest version of each app is the one asked for last.
  std::map<std::string, std::map<std::string, std::vector<KeyValue>>> by_app;
  std::string ap = prefix() + "apps/";
  for (const auto& kv : kvs) {
    std::string rest = kv.key.substr(ap.size());
    size_t a = rest.find('/'), b = a == std::string::npos ? a : rest.find('/', a + 1);
    if (b == std::string::npos) continue;
    by_app[rest.substr(0, a)][rest.substr(a + 1, b - a - 1)].push_back(kv);
  }
  for (const auto& [name, versions] : by_app) {
    std::string newest;
    VersionKeys nv;
    for (const auto& [ver, list] : versions) {
      VersionKeys v = read_version(list, ap + name + "/" + ver + "/");
      if (newest.empty() || v.first_revision > nv.first_revision) newest = ver, nv = std::move(v);
    }
    std::vector<FleetWave> w = waves.count(name) ? waves.at(name) : std::vector<FleetWave>{};
    Decision d = decide(w, view_of(nv, up));
    json a = {{"app", name}, {"version", unescape(newest)}, {"waves", waves_text(w)}, {"open_wave", d.wave + 1},
              {"waves_total", d.waves}, {"capacity", d.capacity}, {"halt", nullptr}, {"hosts", json::array()}};
    if (nv.halt) {
      json h = parse(nv.halt->value);
      a["halt"] = {{"host", text(h, "host")}, {"reason", text(h, "reason")}, {"time", text(h, "time")}};
    }
    for (const auto& [h, apps] : host_apps) {
      std::string st = state_of(nv, h);
      if (st.empty()) st = apps.value(name, "") == unescape(newest) ? "done" : "-";
      json row = {{"host", h}, {"alive", up.count(h) > 0}, {"current", apps.value(name, "")}, {"state", st}};
      if (auto it = nv.state.find(h); it != nv.state.end() && !text(it->second, "reason").empty()) row["reason"] = text(it->second, "reason");
      a["hosts"].push_back(row);
    }
    out["apps"].push_back(a);
  }
  then(out, "");
}

void Coordinator::resume(const std::string& app, const std::string& version, std::function<void(bool, const std::string&)> then) {
  post([this, app, version, then](std::string*) {
    try {
      resume_now(app, version, then);
    } catch (const std::exception& e) {
      then(false, std::string("unexpected data in etcd: ") + e.what());
    }
    return true;  // answered either way
  });
}

void Coordinator::resume_now(const std::string& app, const std::string& version,
                             const std::function<void(bool, const std::string&)>& then) {
  std::string err, vp = version_prefix(app, version);
  std::vector<KeyValue> kvs;
  if (!etcd_.range_prefix(vp, &kvs, nullptr, &err)) {
    return then(false, err);
  }
  VersionKeys v = read_version(kvs, vp);
  if (!v.halt) {
    return then(false, app + " " + version + " is not halted in fleet " + settings_.name);
  }
  std::string was = halt_text(*v.halt);
  // The halt goes, and so do the failed and halted marks: those hosts ask again.
  json ops = json::array({Etcd::delete_op(vp + "halt")});
  int retry = 0;
  for (const auto& [h, st] : v.state) {
    std::string s = text(st, "state");
    if (s == "failed" || s == "halted") ops.push_back(Etcd::delete_op(vp + "state/" + h)), ++retry;
  }
  bool unused;
  if (!etcd_.txn(json::array(), ops, json::array(), &unused, &err)) {
    return then(false, err);
  }
  spdlog::info("fleet: {} {} resumed by {} (it was {})", app, version, settings_.host, was);
  then(true, "resumed " + app + " " + version + " in fleet " + settings_.name + " (it was " + was + "); " + std::to_string(retry) +
                 " host" + (retry == 1 ? "" : "s") + " will try it again");
}

}  // namespace agent::fleet
