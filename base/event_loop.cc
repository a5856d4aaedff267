#include "base/event_loop.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <spdlog/spdlog.h>

namespace base {

EventLoop::EventLoop() {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  wakefd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (epfd_ < 0 || wakefd_ < 0) spdlog::critical("event loop: {}", std::strerror(errno));
  add(wakefd_, EPOLLIN, [this](std::uint32_t) {
    std::uint64_t n;
    while (::read(wakefd_, &n, sizeof n) > 0) {
    }
    std::vector<Task> tasks;
    {
      std::lock_guard lock(foreign_mu_);
      tasks.swap(foreign_);
    }
    for (auto& t : tasks) posted_.push_back(std::move(t));
  });
}

EventLoop::~EventLoop() {
  if (wakefd_ >= 0) ::close(wakefd_);
  if (epfd_ >= 0) ::close(epfd_);
}

EventLoop::Id EventLoop::add(int fd, std::uint32_t events, Handler handler) {
  Id id = next_id_++;
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = id;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    spdlog::error("epoll add fd {}: {}", fd, std::strerror(errno));
    return 0;
  }
  watches_[id] = Watch{fd, std::make_unique<Handler>(std::move(handler))};
  return id;
}

void EventLoop::remove(Id id) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  ::epoll_ctl(epfd_, EPOLL_CTL_DEL, it->second.fd, nullptr);
  // The handler may be the one running now: destroy it after the dispatch, not under it.
  posted_.push_back([h = std::shared_ptr<Handler>(std::move(it->second.handler))] {});
  watches_.erase(it);
}

EventLoop::Id EventLoop::after(std::chrono::milliseconds delay, Task task) {
  Id id = next_id_++;
  auto when = now() + delay;
  timers_[id] = {when, std::move(task)};
  timer_order_.insert({when, id});
  return id;
}

void EventLoop::cancel(Id timer) {
  auto it = timers_.find(timer);
  if (it == timers_.end()) return;
  timer_order_.erase({it->second.first, timer});
  posted_.push_back([t = std::move(it->second.second)] {});
  timers_.erase(it);
}

void EventLoop::post(Task task) { posted_.push_back(std::move(task)); }

void EventLoop::post_from_thread(Task task) {
  {
    std::lock_guard lock(foreign_mu_);
    foreign_.push_back(std::move(task));
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto n = ::write(wakefd_, &one, sizeof one);
}

// Every handler runs here: an exception is a bug, but it must not take the daemon down.
template <typename F>
static void guarded(const char* what, F&& f) noexcept {
  try {
    f();
  } catch (const std::exception& e) {
    spdlog::error("{} threw: {}", what, e.what());
  } catch (...) {
    spdlog::error("{} threw", what);
  }
}

namespace {

struct ThreadUsage {
  std::chrono::microseconds cpu{0};
  long voluntary = 0, involuntary = 0;
};

ThreadUsage thread_usage() {
  rusage ru{};
  ::getrusage(RUSAGE_THREAD, &ru);
  auto us = [](const timeval& t) { return std::chrono::seconds(t.tv_sec) + std::chrono::microseconds(t.tv_usec); };
  return {std::chrono::duration_cast<std::chrono::microseconds>(us(ru.ru_utime) + us(ru.ru_stime)), ru.ru_nvcsw, ru.ru_nivcsw};
}

}  // namespace

// A stall is how long the loop was held by its own work: the wall time of the dispatch, or,
// when the kernel only took the CPU away meanwhile (involuntary switches, no blocking), the
// CPU time it used. Time spent waiting for a CPU another process had is the machine's load,
// not the loop's doing; time spent blocked in a system call (fsync, a lookup) is.
template <typename F>
void EventLoop::dispatch(const char* what, F&& f) {
  auto began = Clock::now();
  ThreadUsage before = thread_usage();
  guarded(what, f);
  drain_posted();
  auto wall = std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - began);
  if (wall <= max_stall_) return;
  ThreadUsage after = thread_usage();
  bool only_preempted = after.voluntary == before.voluntary && after.involuntary > before.involuntary;
  auto took = only_preempted ? std::min(wall, after.cpu - before.cpu) : wall;
  if (took > max_stall_) {
    max_stall_ = took;
    max_stall_what_ = what;
    max_stall_at_ = std::chrono::system_clock::now();
  }
}

void EventLoop::drain_posted() {
  while (!posted_.empty()) {
    Task t = std::move(posted_.front());
    posted_.pop_front();
    guarded("posted task", t);
  }
}

int EventLoop::run_due_timers() {
  int ran = 0;
  auto due = now();
  while (!timer_order_.empty() && timer_order_.begin()->first <= due) {
    Id id = timer_order_.begin()->second;
    timer_order_.erase(timer_order_.begin());
    auto it = timers_.find(id);
    if (it == timers_.end()) continue;
    Task t = std::move(it->second.second);
    timers_.erase(it);
    dispatch("timer", t);
    ++ran;
  }
  return ran;
}

int EventLoop::run_once(std::chrono::milliseconds timeout) {
  if (!posted_.empty()) dispatch("posted task", [] {});
  if (!timer_order_.empty()) {
    auto until = std::chrono::duration_cast<std::chrono::milliseconds>(timer_order_.begin()->first - now());
    // Round up so a timer never fires a millisecond early and spins.
    if (until < timeout) timeout = std::max(until + std::chrono::milliseconds(1), std::chrono::milliseconds(0));
  }
  epoll_event events[64];
  int n = ::epoll_wait(epfd_, events, 64, static_cast<int>(timeout.count()));
  if (n < 0 && errno != EINTR) spdlog::error("epoll_wait: {}", std::strerror(errno));
  int ran = 0;
  for (int i = 0; i < n; ++i) {
    // epoll_event is packed on x86-64: copy the id out rather than bind a reference to it
    // (a misaligned reference is undefined behaviour; UBSan reports it).
    std::uint64_t id = events[i].data.u64;
    auto it = watches_.find(id);
    if (it == watches_.end()) continue;  // removed by an earlier handler in this batch
    Handler* h = it->second.handler.get();  // stays alive through the dispatch (see Watch)
    std::uint32_t ev = events[i].events;
    dispatch("fd handler", [&] { (*h)(ev); });
    ++ran;
  }
  ran += run_due_timers();
  return ran;
}

void EventLoop::run() {
  while (!stopping_) run_once(std::chrono::milliseconds(60'000));
  drain_posted();
}

}  // namespace base
