"""A non-Node worker for the readiness tests: serves HTTP on the inherited socket (fd 3) and
reports ready with sd_notify READY=1 on $NOTIFY_SOCKET. With argv[1] == "from-child", a child
process sends READY=1 instead, which the agent must ignore (only the worker's own pid counts)."""
import http.server
import os
import socket
import sys


def notify(msg):
    addr = os.environ["NOTIFY_SOCKET"]
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(msg.encode(), addr)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"release={os.environ.get('APP_RELEASE')} worker={os.environ.get('APP_WORKER')} pid={os.getpid()}\n".encode()
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
