// The Prometheus text format of /metrics (agent/daemon/metrics.h), and what the machine counts
// for it, without sockets or processes.
#include <doctest/doctest.h>

#include "agent/cli/cli.h"
#include "agent/process/orphans.h"
#include "agent/daemon/metrics.h"

using namespace agent;

TEST_CASE("metrics text: HELP and TYPE once per family, escaped label values, cumulative histogram buckets") {
  MetricsText m;
  m.family("x_total", "counter", "Things.");
  m.sample("x_total", {{"app", "a\"b\\c\nd"}}, 3);
  m.family("x_total", "counter", "Things.");  // declared once
  m.sample("x_total", {{"app", "e"}}, 0.5);
  Histogram h({0.1, 1});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(0.7);
  h.observe(5);
  m.family("d_seconds", "histogram", "Durations.");
  m.histogram("d_seconds", {{"app", "e"}}, h);
  CHECK(m.str() ==
        "# HELP x_total Things.\n# TYPE x_total counter\n"
        "x_total{app=\"a\\\"b\\\\c\\nd\"} 3\n"
        "x_total{app=\"e\"} 0.5\n"
        "# HELP d_seconds Durations.\n# TYPE d_seconds histogram\n"
        "d_seconds_bucket{app=\"e\",le=\"0.1\"} 1\n"
        "d_seconds_bucket{app=\"e\",le=\"1\"} 3\n"
        "d_seconds_bucket{app=\"e\",le=\"+Inf\"} 4\n"
        "d_seconds_sum{app=\"e\"} 6.25\n"
        "d_seconds_count{app=\"e\"} 4\n");
}

TEST_CASE("metrics: the agent's own process_* series") {
  MetricsText m;
  process_metrics(&m);
  for (const char* name : {"process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_open_fds ", "process_max_fds ",
                           "process_start_time_seconds ", "process_virtual_memory_bytes "})
    CHECK(m.str().find(std::string("\n") + name) != std::string::npos);
  CHECK(cpu_seconds_of(getpid()) >= 0);
}

TEST_CASE("metrics text: a family's samples come out as one group, added app by app as they were") {
  MetricsText m;
  for (const char* app : {"a", "b"}) {
    m.family("w", "gauge", "W.");
    m.sample("w", {{"app", app}}, 1);
    m.family("v", "gauge", "V.");
    m.sample("v", {{"app", app}}, 2);
  }
  CHECK(m.str() == "# HELP w W.\n# TYPE w gauge\nw{app=\"a\"} 1\nw{app=\"b\"} 1\n# HELP v V.\n# TYPE v gauge\nv{app=\"a\"} 2\nv{app=\"b\"} 2\n");
  CHECK(cpu_seconds_of(0x7ffffff0) == -1);
}

TEST_CASE("status --check: 0 all up, 1 degraded, 2 down, one line per app") {
  auto app = [](const char* name, int instances, int ready, const char* state = "running") {
    nlohmann::json workers = nlohmann::json::array();
    for (int i = 0; i < instances; ++i)
      workers.push_back({{"role", "serving"}, {"state", i < ready ? "ready" : "starting"}});
    workers.push_back({{"role", "draining"}, {"state", "draining"}});  // never counts
    return nlohmann::json{{"app", name}, {"instances", instances}, {"state", state}, {"workers", workers}};
  };
  std::string report;
  CHECK(status_check({{"apps", {app("web", 2, 2), app("api", 1, 1)}}}, &report) == 0);
  CHECK(report == "OK web: 2 of 2 workers ready\nOK api: 1 of 1 workers ready\n");
  report.clear();
  CHECK(status_check({{"apps", {app("web", 2, 1), app("api", 1, 1)}}}, &report) == 1);
  CHECK(report.find("DEGRADED web: 1 of 2 workers ready") == 0);
  report.clear();
  CHECK(status_check({{"apps", {app("web", 2, 1), app("api", 1, 0)}}}, &report) == 2);
  CHECK(report.find("DOWN api: 0 of 1 workers ready") != std::string::npos);
  report.clear();
  CHECK(status_check({{"apps", {app("web", 2, 0, "stopped")}}}, &report) == 2);
  CHECK(report == "DOWN web: stopped\n");
}
