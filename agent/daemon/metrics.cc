#include "agent/daemon/metrics.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <spdlog/spdlog.h>

#include "agent/process/orphans.h"

namespace agent {

namespace {

constexpr size_t kMaxRequest = 8 * 1024;
constexpr size_t kMaxConnections = 32;
constexpr auto kRequestTimeout = std::chrono::seconds(5);

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    std::snprintf(buf, sizeof buf, "%.0f", v);
    return buf;
  }
  std::snprintf(buf, sizeof buf, "%.15g", v);  // the shortest that reads back the same: 0.1, not 0.10000000000000001
  if (std::strtod(buf, nullptr) != v) std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string labels_text(const MetricsText::Labels& labels) {
  if (labels.empty()) return "";
  std::string s = "{";
  for (size_t i = 0; i < labels.size(); ++i)
    s += (i ? "," : "") + labels[i].first + "=\"" + escape_label_value(labels[i].second) + "\"";
  return s + "}";
}

}  // namespace

std::string escape_label_value(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

MetricsText::Family& MetricsText::group(const std::string& name) {
  auto [it, added] = index_.emplace(name, families_.size());
  if (added) families_.emplace_back();
  return families_[it->second];
}

void MetricsText::line(Family& f, const std::string& name, const Labels& labels, double value) {
  f.lines += name + labels_text(labels) + " " + number(value) + "\n";
}

void MetricsText::family(const std::string& name, const char* type, const std::string& help) {
  Family& f = group(name);
  if (f.head.empty()) f.head = "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void MetricsText::sample(const std::string& name, const Labels& labels, double value) { line(group(name), name, labels, value); }

void MetricsText::histogram(const std::string& name, const Labels& labels, const Histogram& h) {
  Family& f = group(name);
  std::uint64_t cumulative = 0;
  for (size_t i = 0; i <= h.bounds.size(); ++i) {
    cumulative += h.counts[i];
    Labels l = labels;
    l.emplace_back("le", i < h.bounds.size() ? number(h.bounds[i]) : "+Inf");
    line(f, name + "_bucket", l, static_cast<double>(cumulative));
  }
  line(f, name + "_sum", labels, h.sum);
  line(f, name + "_count", labels, static_cast<double>(h.count));
}

std::string MetricsText::str() const {
  std::string out;
  for (const auto& f : families_) out += f.head + f.lines;
  return out;
}

void process_metrics(MetricsText* m) {
  auto f = stat_fields(0);
  if (f.size() >= 22) {
    double ticks = static_cast<double>(sysconf(_SC_CLK_TCK));
    m->family("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    m->sample("process_cpu_seconds_total", {}, (std::stod(f[11]) + std::stod(f[12])) / ticks);
    m->family("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    m->sample("process_virtual_memory_bytes", {}, std::stod(f[20]));
    m->family("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    m->sample("process_resident_memory_bytes", {}, std::stod(f[21]) * static_cast<double>(sysconf(_SC_PAGESIZE)));
    // starttime is in ticks since boot: the boot time comes from /proc/stat's btime.
    std::ifstream st("/proc/stat");
    for (std::string line; std::getline(st, line);)
      if (line.starts_with("btime ")) {
        m->family("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
        m->sample("process_start_time_seconds", {}, std::stod(line.substr(6)) + std::stod(f[19]) / ticks);
      }
  }
  int fds = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (dirent* e = readdir(d)) fds += e->d_name[0] != '.';
    closedir(d);
  }
  m->family("process_open_fds", "gauge", "Number of open file descriptors.");
  m->sample("process_open_fds", {}, fds - 1);  // not the one reading the directory
  rlimit nofile{};
  if (getrlimit(RLIMIT_NOFILE, &nofile) == 0) {
    m->family("process_max_fds", "gauge", "Maximum number of open file descriptors.");
    m->sample("process_max_fds", {}, static_cast<double>(nofile.rlim_cur));
  }
}

MetricsServer::MetricsServer(base::EventLoop& loop, std::function<std::string()> metrics,
                             std::function<std::pair<bool, std::string>()> health)
    : loop_(loop), metrics_(std::move(metrics)), health_(std::move(health)) {}

MetricsServer::~MetricsServer() {
  while (!conns_.empty()) close(conns_.begin()->first);
  if (watch_) loop_.remove(watch_);
  if (fd_ >= 0) ::close(fd_);
}

bool MetricsServer::listen(const base::ListenAddress& address, std::string* err) {
  int fd = base::bind_listen(address, err);
  if (fd < 0) return false;
  adopt(fd, address);
  return true;
}

void MetricsServer::adopt(int fd, const base::ListenAddress& address) {
  fd_ = fd;
  // Accepted until EAGAIN: a blocking accept would hold the whole loop.
  ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  ::fcntl(fd_, F_SETFD, FD_CLOEXEC);
  watch_ = loop_.add(fd_, EPOLLIN, [this](std::uint32_t) { on_accept(); });
  spdlog::info("metrics: /metrics and /healthz on {}", address.text);
}

void MetricsServer::on_accept() {
  while (true) {
    int fd = ::accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return;  // EAGAIN, or a client that went away
    if (conns_.size() >= kMaxConnections) {
      ::close(fd);
      continue;
    }
    auto c = std::make_unique<Conn>();
    c->fd = fd;
    c->watch = loop_.add(fd, EPOLLIN, [this, fd](std::uint32_t) { on_readable(fd); });
    c->timer = loop_.after(kRequestTimeout, [this, fd] {
      if (auto it = conns_.find(fd); it != conns_.end()) it->second->timer = 0;
      close(fd);
    });
    conns_[fd] = std::move(c);
  }
}

void MetricsServer::on_readable(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  char buf[2048];
  while (true) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      c.in.append(buf, static_cast<size_t>(n));
      if (c.in.size() > kMaxRequest) return close(fd);
      continue;
    }
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) return close(fd);
    break;
  }
  if (c.in.find("\r\n\r\n") == std::string::npos && c.in.find("\n\n") == std::string::npos) return;
  respond(c);
}

void MetricsServer::respond(Conn& c) {
  std::string line = c.in.substr(0, c.in.find_first_of("\r\n"));
  std::string method = line.substr(0, line.find(' '));
  size_t sp = line.find(' ');
  std::string target = sp == std::string::npos ? "" : line.substr(sp + 1, line.find(' ', sp + 1) - sp - 1);
  target = target.substr(0, target.find('?'));
  int code = 200;
  std::string type = "text/plain; charset=utf-8", body;
  if (method != "GET" && method != "HEAD") {
    code = 405, body = "only GET\n";
  } else if (target == "/metrics") {
    type = "text/plain; version=0.0.4; charset=utf-8";
    body = metrics_();
  } else if (target == "/healthz") {
    auto [ok, why] = health_();
    code = ok ? 200 : 503;
    body = why + "\n";
  } else {
    code = 404, body = "not found: /metrics or /healthz\n";
  }
  const char* reason = code == 200 ? "OK" : code == 503 ? "Service Unavailable" : code == 404 ? "Not Found" : "Method Not Allowed";
  c.out = "HTTP/1.1 " + std::to_string(code) + " " + reason + "\r\nContent-Type: " + type + "\r\nContent-Length: " +
          std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + (method == "HEAD" ? "" : body);
  loop_.remove(std::exchange(c.watch, 0));
  int fd = c.fd;
  c.watch = loop_.add(fd, EPOLLOUT, [this, fd](std::uint32_t) { on_writable(fd); });
}

void MetricsServer::on_writable(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  while (c.sent < c.out.size()) {
    ssize_t n = ::send(fd, c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL);
    if (n > 0) {
      c.sent += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;  // the rest when it can take it (or the timeout)
    break;
  }
  close(fd);
}

void MetricsServer::close(int fd) {
  auto it = conns_.find(fd);
  if (it == conns_.end()) return;
  Conn& c = *it->second;
  if (c.watch) loop_.remove(c.watch);
  if (c.timer) loop_.cancel(c.timer);
  ::close(fd);
  conns_.erase(it);
}

}  // namespace agent
