// The agent's side of systemd, without libsystemd: sd_notify (READY=1 once every app is
// up, STOPPING=1, WATCHDOG=1) and socket activation (listening sockets passed in with
// LISTEN_FDS/LISTEN_PID, so that a restart of the agent queues connections instead of
// refusing them). Both are no-ops when systemd (or a launcher like it) did not ask.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/listen.h"

namespace agent {

/// Whether stderr is connected to the journal: $JOURNAL_STREAM ("DEV:INODE", set by systemd
/// for StandardError=journal) names the very file `fd` is. Then log lines carry a "<N>" syslog
/// priority and no time of their own (journald stamps them). `value`: $JOURNAL_STREAM.
bool journal_stream_is(const char* value, int fd);

/// "<7>" debug .. "<2>" critical: the prefix of a line at spdlog `level` (trace 0 .. critical 5).
const char* journal_priority(int level);

/// True when $NOTIFY_SOCKET was captured: someone reads READY=1 and STATUS=.
bool notify_socket_set();

/// Sends `state` ("READY=1", ...) to $NOTIFY_SOCKET as captured by capture_notify_socket().
/// False (quietly) when there is no such socket.
bool sd_notify(const std::string& state);

/// Reads NOTIFY_SOCKET and WATCHDOG_USEC/WATCHDOG_PID once, at start, then removes them from
/// the environment so no worker inherits them. Returns the watchdog interval, if any.
std::optional<std::chrono::microseconds> capture_notify_socket();
/// The $NOTIFY_SOCKET captured, and the same given back by the next image of the agent
/// (`agent upgrade`: the environment no longer has it).
const std::string& notify_socket_path();
void restore_notify_socket(const std::string& path);

/// Socket activation: when LISTEN_PID is our pid, takes fds 3 .. 3+LISTEN_FDS-1, makes them
/// close-on-exec, and returns them by canonical address ("127.0.0.1:8197", "[::]:80",
/// "unix:/run/x.sock"); LISTEN_FDNAMES, when set, is logged with them. The LISTEN_*
/// variables are removed from the environment. `notes` says what was found.
std::map<std::string, int> take_activated_sockets(std::vector<std::string>* notes);


}  // namespace agent
