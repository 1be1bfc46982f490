#!/usr/bin/env bash
# Connection storms against a release build on loopback (the server runs with 1,024
# open files, as without the systemd unit):
#   1. 1,100 idle sockets (from 127.0.0.2, another address than the client measured)
#      held open; then 20 v1 lookups from 127.0.0.1, one after the other: p50 and max;
#      and whether the admin status answers;
#   2. 5,000 keep-alive connections, each sending one request, held, then closed:
#      the server's RssAnon before, while held, and 5 s after they closed.
#
#   benches/conns.sh
#   MXISD_BIN=/path/to/mxisd benches/conns.sh   # measure that binary
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/mxisd-target}"
export MALLOC_ARENA_MAX="${MALLOC_ARENA_MAX-2}"
export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_-131072}"

. benches/lib.sh
command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
command -v prlimit >/dev/null || { echo "prlimit is needed (apt-get install util-linux)" >&2; exit 1; }
bench_binary
work_dir
# This shell holds the storm's sockets: it needs more than the server's 1,024.
ulimit -n 16384 2>/dev/null || { echo "cannot raise the open-file limit to 16384 for the client" >&2; exit 1; }

DIR="$WORK/server"; mkdir -p "$DIR"
printf 'matrix:\n  domain: localhost\nserver:\n  port: 0\nstorage:\n  path: state\n' > "$DIR/mxisd.yaml"
PORT=$(free_port)
(cd "$DIR" && MXISD_SERVER_PORT=$PORT RUST_LOG=warn exec prlimit --nofile=1024:1024 -- "$BIN" run -c mxisd.yaml 2>>"$DIR/server.log") &
# prlimit executes mxisd in its own place: the pid is the server's.
SERVER=$!
PIDS+=("$SERVER")
wait_port "$PORT"; wait_admin "$DIR/state"

python3 - "$PORT" "$DIR/state/admin.sock" "$SERVER" <<'PY'
import socket, sys, time
port, admin, pid = int(sys.argv[1]), sys.argv[2], sys.argv[3]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("RssAnon"):
            return " ".join(line.split()[1:])
def lookup():
    t0 = time.monotonic()
    s = socket.create_connection(("127.0.0.1", port), timeout=15)
    s.sendall(b"GET /_matrix/identity/api/v1/lookup?medium=email&address=x%40example.org HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    s.close()
    return (time.monotonic() - t0) * 1000, data[:12]
def admin_status():
    s = socket.socket(socket.AF_UNIX); s.settimeout(15); s.connect(admin)
    s.sendall(b"GET /_mxisd/admin/v1/status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
    data = s.recv(64)
    s.close()
    return data[:12].decode(errors="replace")

print("== 1,100 idle sockets, server at 1,024 open files")
idle = []
for _ in range(1100):
    s = socket.socket(); s.bind(("127.0.0.2", 0)); s.connect(("127.0.0.1", port)); idle.append(s)
time.sleep(1)
times = []
for _ in range(20):
    ms, status = lookup()
    times.append(ms)
times.sort()
print(f"  lookups during the flood: p50 {times[10]:.1f} ms, max {times[-1]:.1f} ms ({status.decode()})")
print(f"  admin status during the flood: {admin_status()}")
for s in idle: s.close()
time.sleep(1)

print("== 5,000 keep-alive connections, one request each")
print(f"  RssAnon before: {rss()}")
held = []
for i in range(5000):
    s = socket.socket(); s.bind((f"127.0.{1 + i // 250}.{2 + i % 250}", 0)); s.connect(("127.0.0.1", port))
    s.sendall(b"GET /_matrix/identity/v2 HTTP/1.1\r\nHost: x\r\n\r\n")
    held.append(s)
for s in held:
    s.settimeout(5)
    try: s.recv(4096)
    except OSError: pass
print(f"  RssAnon while held (the server keeps at most its cap): {rss()}")
for s in held: s.close()
time.sleep(5)
print(f"  RssAnon 5 s after they closed: {rss()}")
PY
echo "  log lines about the connection limit: $(grep -c 'connection limit' "$DIR/server.log" || true)"
echo "  log lines about failed accepts: $(grep -c 'accepting a connection failed' "$DIR/server.log" || true)"
