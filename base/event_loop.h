// EventLoop: the one loop the daemon runs on. One epoll for every fd (signalfd, pidfds, the
// control socket and its clients, readiness and log pipes), plus a timer heap whose earliest
// deadline is the epoll timeout. Handlers only dispatch; follow-on work is post()ed and runs
// after the current dispatch, never recursively (dinit's process_queues). Work from other
// threads (staging, builds) comes back through post_from_thread(), which wakes the loop.
//
// run_once() lets a test step the loop (watchman's stepIoThread), and set_clock() gives it a
// clock of its own: timers then fire when the test moves that clock, not when time passes.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

namespace base {

using Clock = std::chrono::steady_clock;

class EventLoop {
 public:
  using Handler = std::function<void(std::uint32_t events)>;
  using Task = std::function<void()>;
  using Id = std::uint64_t;

  EventLoop();
  ~EventLoop();
  EventLoop(const EventLoop&) = delete;
  EventLoop& operator=(const EventLoop&) = delete;

  /// Watches `fd` for `events` (EPOLLIN, ...). Returns an id for remove(); 0 on failure.
  Id add(int fd, std::uint32_t events, Handler handler);
  /// Stops watching. Safe from inside any handler, including the fd's own.
  void remove(Id id);

  /// Now, by the loop's clock: the steady clock, or the one a test set. Timers and everything
  /// measured against them (readiness, drains, backoff) read it from here.
  Clock::time_point now() const { return clock_ ? clock_() : Clock::now(); }
  /// Replaces the clock (tests: a fake one moved by hand). Set before any timer is armed.
  void set_clock(std::function<Clock::time_point()> clock) { clock_ = std::move(clock); }

  /// Runs `task` once after `delay`. Returns an id for cancel().
  Id after(std::chrono::milliseconds delay, Task task);
  void cancel(Id timer);

  /// Runs `task` after the current dispatch, on the loop.
  void post(Task task);
  /// Thread-safe: queues `task` for the loop and wakes it.
  void post_from_thread(Task task);

  /// Waits up to `timeout` for one batch of events, runs their handlers, due timers and posted
  /// tasks. Returns the number of handlers and timers run.
  int run_once(std::chrono::milliseconds timeout);
  /// run_once until stop().
  void run();
  void stop() { stopping_ = true; }
  /// After run() returned on stop(): the next run() turns again (an upgrade whose execve failed).
  void resume() { stopping_ = false; }
  bool stopping() const { return stopping_; }

  /// The longest a single dispatch (one handler or timer and the work it posted) held the
  /// loop since it started: what a watchdog, a client or a readiness pipe waited at worst.
  std::chrono::microseconds max_stall() const { return max_stall_; }
  /// What that dispatch was ("fd handler", "timer", "posted task") and when it ended.
  const char* max_stall_what() const { return max_stall_what_; }
  std::chrono::system_clock::time_point max_stall_at() const { return max_stall_at_; }

 private:
  struct Watch {
    int fd;
    // On the heap, so a dispatch calls it in place (no copy per event) while remove() can
    // still take it away mid-dispatch: its destruction is posted, after the dispatch.
    std::unique_ptr<Handler> handler;
  };
  void drain_posted();
  int run_due_timers();
  /// Runs f and what it posted, timing the whole as one stall.
  template <typename F>
  void dispatch(const char* what, F&& f);

  int epfd_ = -1;
  int wakefd_ = -1;  // eventfd for post_from_thread
  Id next_id_ = 1;
  std::map<Id, Watch> watches_;
  std::set<std::pair<Clock::time_point, Id>> timer_order_;
  std::map<Id, std::pair<Clock::time_point, Task>> timers_;
  std::deque<Task> posted_;
  std::mutex foreign_mu_;
  std::vector<Task> foreign_;
  bool stopping_ = false;
  std::chrono::microseconds max_stall_{0};
  const char* max_stall_what_ = "";
  std::chrono::system_clock::time_point max_stall_at_{};
  std::function<Clock::time_point()> clock_;  // empty: the steady clock
};

}  // namespace base
