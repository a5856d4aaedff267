// The Prometheus text format of /metrics (agent/daemon/metrics.h), and what the machine counts
// for it, without sockets or processes.
#include <doctest/doctest.h>

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
  CHECK(cpu_seconds_of(0x7ffffff0) == -1);
}
