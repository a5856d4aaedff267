"""A non-Node worker for the readiness and process tests: serves HTTP on the inherited socket
(fd 3) and reports ready with sd_notify READY=1 on $NOTIFY_SOCKET when that is set. With
argv[1] == "from-child", a child process sends READY=1 instead, which the agent must ignore
(only the worker's own pid counts). /fds tells which fds it was started with; /id who and where
it runs."""
import os

# Before Python opens anything else. The listing's own fd is closed again by the time it is
# checked, so it drops out.
OPEN_AT_START = sorted(int(fd) for fd in os.listdir("/proc/self/fd") if os.path.lexists(f"/proc/self/fd/{fd}"))

import http.server  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402


def notify(msg):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(msg.encode(), addr)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/fds":
            return self.reply(" ".join(map(str, OPEN_AT_START)))
        if self.path == "/id":
            groups = ",".join(str(g) for g in sorted(os.getgroups()))
            return self.reply(f"uid={os.getuid()} gid={os.getgid()} groups={groups} home={os.environ.get('HOME')} "
                              f"user={os.environ.get('USER')} cwd={os.getcwd()} sid={os.getsid(0)} pid={os.getpid()}")
        self.reply(f"release={os.environ.get('APP_RELEASE')} worker={os.environ.get('APP_WORKER')} pid={os.getpid()}")

    def reply(self, text):
        body = (text + "\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.HTTPServer(("127.0.0.1", 0), Handler, bind_and_activate=False)
server.socket.close()
server.socket = socket.socket(fileno=3)
if len(sys.argv) > 1 and sys.argv[1] == "from-child":
    if os.fork() == 0:
        notify("READY=1")
        os._exit(0)
elif "NOTIFY_SOCKET" in os.environ:
    notify("STATUS=starting\nREADY=1")
server.serve_forever()
