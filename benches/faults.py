"""Fault injection under mixed load: the orchestrator behind benches/faults.sh (which
installs what it needs, builds the release binary and starts slapd and PostgreSQL).

Every dependency is reached through a TCP proxy this script controls: slapd, PostgreSQL,
an SMTP sink, a Twilio stand-in (SMS) and a homeserver stand-in (OpenID userinfo for
account registration, onbind for bound invites). For each dependency in turn, under
load, the proxy goes through five phases: before (pass), down (refuses connections and
resets open ones), slow (accepts and never answers: past every timeout), garbage
(answers random bytes), after (pass again).

Load, all at once, during every phase: hashed lookups (wrk, 8 connections) and uncached
search (wrk, 4 connections) answered locally; admin binds one after the other; e-mail
and SMS validation requests (SMTP, SMS gateway); store-invite then a bind of the invited
address (SMTP, then an onbind queued for the homeserver); account registrations (the
homeserver); LDAP and SQL syncs back to back (slapd, PostgreSQL).

Printed per dependency and phase: lookups and search rate and p99; per other kind the
successes, the errors by status and errcode with their slowest answer. After each
dependency: how long the queued onbinds took to be delivered once it was back. At the
end: every acknowledged bind, mail, SMS and onbind is checked to have landed, and the
LDAP and SQL bindings to be all there.

Environment (set by faults.sh): BIN, WORK, LDAP_PORT, PG_PORT, USERS; N (people of the file
source, default 50000), PHASE (seconds of each fault phase, default 10; before and after
last 1.5 times that), ONLY (some of: ldap postgresql smtp sms homeserver), WITHOUT
(kinds of load left out: binds email sms invite register "sync ldap" "sync sql")."""

import asyncio
import base64
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

BIN, WORK = os.environ["BIN"], os.environ["WORK"]
LDAP_PORT, PG_PORT = int(os.environ["LDAP_PORT"]), int(os.environ["PG_PORT"])
N = int(os.environ.get("N", "50000"))
PHASE = float(os.environ.get("PHASE", "10"))
DIRECTORY_USERS = int(os.environ["USERS"])  # in slapd and in PostgreSQL each (faults.sh)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds=20):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


# --- the proxies and the SMTP sink, on one asyncio loop in a thread ---------------------

LOOP = asyncio.new_event_loop()
threading.Thread(target=LOOP.run_forever, daemon=True).start()


def on_loop(coro):
    return asyncio.run_coroutine_threadsafe(coro, LOOP).result()


class Proxy:
    """Forwards 127.0.0.1:port to upstream, or fails as its mode says."""

    def __init__(self, name, upstream):
        self.name, self.upstream, self.mode = name, upstream, "pass"
        self.port, self.server, self.conns = free_port(), None, set()

    async def listen(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)

    async def set_mode(self, mode):
        self.mode = mode
        if mode == "down" and self.server is not None:
            self.server.close()
            self.server = None
        elif mode != "down" and self.server is None:
            await self.listen()
        if mode in ("down", "garbage"):
            for w in list(self.conns):
                w.transport.abort()

    async def handle(self, reader, writer):
        self.conns.add(writer)
        try:
            if self.mode == "garbage":
                await self.garbage(reader, writer)
            elif self.mode == "slow":
                # Takes what comes, answers nothing, until the client gives up.
                while self.mode == "slow":
                    try:
                        if not await asyncio.wait_for(reader.read(65536), 0.2):
                            break
                    except asyncio.TimeoutError:
                        pass
            elif self.mode == "pass":
                await self.forward(reader, writer)
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self.conns.discard(writer)
            writer.transport.abort()

    async def garbage(self, reader, writer):
        rnd = random.Random()
        writer.write(rnd.randbytes(256))
        end = time.monotonic() + 2
        while time.monotonic() < end:
            try:
                data = await asyncio.wait_for(reader.read(65536), 0.5)
            except asyncio.TimeoutError:
                continue
            if not data:
                break
            writer.write(rnd.randbytes(len(data) % 512 + 16))
            await writer.drain()

    async def forward(self, reader, writer):
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        self.conns.add(up_writer)

        async def pump(src, dst):
            try:
                while True:
                    data = await src.read(65536)
                    if not data:
                        break
                    while self.mode == "slow":  # stalls in the middle of a conversation
                        await asyncio.sleep(0.05)
                    if self.mode != "pass":
                        break
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.transport.abort()

        try:
            await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))
        finally:
            self.conns.discard(up_writer)


MAILS = []  # recipients of every message the sink accepted


async def smtp_session(reader, writer):
    def say(line):
        writer.write(line.encode() + b"\r\n")

    say("220 sink ESMTP")
    rcpts = []
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = line.decode(errors="replace").strip()
            verb = cmd.split(" ", 1)[0].split(":", 1)[0].upper()
            if verb == "EHLO":
                say("250-sink")
                say("250 8BITMIME")
            elif verb == "MAIL":
                rcpts = []
                say("250 ok")
            elif verb == "RCPT":
                rcpts.append(cmd.split(":", 1)[1].strip().strip("<>").split(">")[0])
                say("250 ok")
            elif verb == "DATA":
                say("354 go on")
                await writer.drain()
                while (await reader.readline()) not in (b".\r\n", b".\n", b""):
                    pass
                MAILS.extend(rcpts)
                say("250 queued")
            elif verb == "QUIT":
                say("221 bye")
                await writer.drain()
                break
            else:
                say("250 ok")
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()


# --- the HTTP stand-ins ------------------------------------------------------------------

SMS = []  # numbers the gateway accepted a message for
ONBINDS = []  # addresses of the onbind calls the homeserver received


class Standin(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self):  # OpenID userinfo, whoami
        self.reply(200, {"user_id": "@bench:localhost", "sub": "@bench:localhost"})

    def do_POST(self):
        raw = self.body()
        if self.path.endswith("/Messages.json"):
            SMS.append(urllib.parse.parse_qs(raw.decode()).get("To", [""])[0])
            self.reply(201, {"sid": "SM1", "status": "queued"})
        elif self.path.endswith("/3pid/onbind"):
            ONBINDS.append(json.loads(raw).get("address"))
            self.reply(200, {})
        else:
            self.reply(200, {"limited": False, "results": []})

    def log_message(self, *args):
        pass


class Quiet(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # a client the proxy cut off


def standin():
    server = Quiet(("127.0.0.1", 0), Standin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


# --- the server ----------------------------------------------------------------------------

SMTP_PORT = free_port()
on_loop(asyncio.start_server(smtp_session, "127.0.0.1", SMTP_PORT))
PROXIES = {
    "ldap": Proxy("ldap", LDAP_PORT),
    "postgresql": Proxy("postgresql", PG_PORT),
    "smtp": Proxy("smtp", SMTP_PORT),
    "sms": Proxy("sms", standin()),
    "homeserver": Proxy("homeserver", standin()),
}
for p in PROXIES.values():
    on_loop(p.listen())

with open(f"{WORK}/users.yaml", "w") as f:
    firsts = ["Ada", "Bob", "Cleo", "Dan", "Eve", "Finn", "Gus", "Hana", "Ivo", "June"]
    for i in range(N):
        f.write(f"- username: user{i}\n  displayName: {firsts[i % 10]} Name{i}\n"
                f"  threepids:\n    - {{medium: email, address: user{i}@example.org}}\n")
PORT, APORT = free_port(), free_port()
ADMIN_TOKEN = base64.b16encode(os.urandom(16)).decode().lower()
with open(f"{WORK}/admin.token", "w") as f:
    f.write(ADMIN_TOKEN + "\n")
os.chmod(f"{WORK}/admin.token", 0o600)
HS = f"http://127.0.0.1:{PROXIES['homeserver'].port}"
with open(f"{WORK}/mxisd.yaml", "w") as f:
    f.write(f"""matrix:
  domain: localhost
  homeserver:
    url: {HS}
server:
  port: {PORT}
  admin:
    port: {APORT}
    tokenFile: admin.token
storage:
  path: state
outbound:
  allowedCidr: [127.0.0.0/8]
  timeout: 2s
threepid:
  medium:
    email:
      identity:
        from: id@localhost
        name: Bench ID
      connectors:
        smtp:
          host: 127.0.0.1
          port: {PROXIES['smtp'].port}
          tls: 0
          timeout: 2s
    msisdn:
      connectors:
        twilio:
          account_sid: AC0123
          auth_token: bench-secret
          number: "+15550001111"
          baseUrl: http://127.0.0.1:{PROXIES['sms'].port}
          timeout: 2s
invite:
  delivery:
    minDelay: 500ms
    maxDelay: 2s
    maxAttempts: 100
rateLimit:
  enabled: false
file:
  enabled: true
  path: users.yaml
  sync:
    interval: 24h
ldap:
  enabled: true
  filter: (objectClass=inetOrgPerson)
  connection:
    host: 127.0.0.1
    port: {PROXIES['ldap'].port}
    bindDn: cn=mxisd,dc=example,dc=org
    bindPassword: syncsecret
    baseDNs: ['ou=people,dc=example,dc=org']
    timeout: 2s
  attribute:
    uid: {{type: uid, value: uid}}
    name: displayName
    threepid:
      email: [mail]
  sync:
    interval: 24h
sql:
  enabled: true
  type: postgresql
  connection: postgres://postgres@127.0.0.1:{PROXIES['postgresql'].port}/hr
  sync:
    interval: 24h
    timeout: 3s
    query: "SELECT uid, name AS display_name, 'email' AS medium, mail AS address FROM people"
directory:
  searchCache: 0
  exclude:
    homeserver: true
dns:
  overwrite:
    homeserver:
      federation:
        - name: localhost
          value: {HS}
""")
env = dict(os.environ, RUST_LOG="warn")
log = open(f"{WORK}/server.log", "ab")
SERVER = subprocess.Popen([BIN, "run", "-c", "mxisd.yaml"], cwd=WORK, env=env, stderr=log)
try:
    wait_port(PORT)
except SystemExit:
    sys.exit("mxisd did not start:\n" + open(f"{WORK}/server.log", errors="replace").read()[-3000:])


def cli(*args, timeout=120):
    return subprocess.run([BIN, *args, "--json", "-c", "mxisd.yaml"], cwd=WORK,
                          capture_output=True, text=True, timeout=timeout)


def synced(name):
    r = cli("sync", "status")
    if r.returncode:
        return False
    return any(s["source"] == name and s.get("last_success_ms") is not None
               for s in json.loads(r.stdout)["sources"])


end = time.monotonic() + 600
while not all(synced(n) for n in ("file", "ldap", "sql")):
    if time.monotonic() > end or SERVER.poll() is not None:
        sys.exit(f"the first syncs did not finish: {cli('sync', 'status').stdout}")
    time.sleep(0.5)


class Client:
    """One keep-alive connection; answers (status, json or None, ms)."""

    def __init__(self, port, token=None):
        self.port, self.token, self.conn = port, token, None

    def call(self, method, path, body=None):
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        t0 = time.monotonic()
        for attempt in (0, 1):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                self.conn.request(method, path, json.dumps(body) if body is not None else None, headers)
                r = self.conn.getresponse()
                raw = r.read()
                if r.getheader("connection", "").lower() == "close":
                    self.conn.close()
                    self.conn = None
                break
            except (OSError, http.client.HTTPException):
                self.conn = None
                if attempt:
                    raise
        ms = (time.monotonic() - t0) * 1000
        try:
            return r.status, json.loads(raw), ms
        except ValueError:
            return r.status, None, ms


public = Client(PORT)
status, body, _ = public.call("POST", "/_matrix/identity/v2/account/register",
                              {"access_token": "x", "token_type": "Bearer",
                               "matrix_server_name": "localhost", "expires_in": 3600})
TOKEN = body["token"]
public.token = TOKEN
PEPPER = public.call("GET", "/_matrix/identity/v2/hash_details")[1]["lookup_pepper"]

rnd = random.Random(7)
addrs = [f"user{rnd.randrange(N)}@example.org" for _ in range(20000)]
hashes = [base64.urlsafe_b64encode(hashlib.sha256(f"{a} email {PEPPER}".encode()).digest())
          .decode().rstrip("=") for a in addrs]
head = ('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {TOKEN}"\n')
cycle = ("local i = 0\nrequest = function()\n  i = i % #bodies + 1\n"
         "  return wrk.format(nil, nil, nil, bodies[i])\nend\n")
lookups = [json.dumps({"algorithm": "sha256", "pepper": PEPPER, "addresses": [h]}) for h in hashes]
with open(f"{WORK}/lookup.lua", "w") as f:
    f.write(head + "local bodies = {" + ",".join(json.dumps(b) for b in lookups) + "}\n" + cycle)
terms = [rnd.choice([rnd.choice(firsts), f"Name{rnd.randrange(N)}"]) for _ in range(500)]
searches = [json.dumps({"search_term": t, "limit": 10}) for t in terms]
with open(f"{WORK}/search.lua", "w") as f:
    f.write(head + "local bodies = {" + ",".join(json.dumps(b) for b in searches) + "}\n" + cycle)

# --- the load ----------------------------------------------------------------------------

CURRENT = ["setup"]
RECORDS = []  # (phase, kind, ok, what, ms)
STOP = threading.Event()
ACKED = {"bind": [], "email": [], "sms": [], "invite": []}


def record(kind, ok, what, ms):
    RECORDS.append((CURRENT[0], kind, ok, what, ms))


def outcome(status, body):
    return f"{status} {(body or {}).get('errcode', 'no JSON body')}"


def worker(kind, step):
    i = 0
    while not STOP.is_set():
        try:
            step(i)
        except Exception as e:  # a hang or a dropped connection is a finding, not a crash
            record(kind, False, f"client error {type(e).__name__}", 0)
            time.sleep(0.1)
        i += 1


admin = Client(APORT, ADMIN_TOKEN)
watcher = Client(APORT, ADMIN_TOKEN)  # the main thread's own


def bind_step(i):
    addr = f"bind{i}@example.org"
    status, body, ms = admin.call("POST", "/_mxisd/admin/v1/bindings",
                                  {"medium": "email", "address": addr, "mxid": f"@bind{i}:localhost"})
    record("binds", status == 200, outcome(status, body), ms)
    if status == 200:
        ACKED["bind"].append(addr)


email = Client(PORT, TOKEN)


def email_step(i):
    addr = f"mail{i}@example.org"
    status, body, ms = email.call("POST", "/_matrix/identity/v2/validate/email/requestToken",
                                  {"client_secret": f"s{i}", "email": addr, "send_attempt": 1})
    record("email", status == 200, outcome(status, body), ms)
    if status == 200:
        ACKED["email"].append(addr)
    time.sleep(0.02)


sms = Client(PORT, TOKEN)


def sms_step(i):
    number = f"202555{i % 10000:04d}"
    status, body, ms = sms.call("POST", "/_matrix/identity/v2/validate/msisdn/requestToken",
                                {"client_secret": f"m{i}", "country": "US",
                                 "phone_number": number, "send_attempt": 1})
    record("sms", status == 200, outcome(status, body), ms)
    if status == 200:
        ACKED["sms"].append("+1" + number)
    time.sleep(0.02)


inviter = Client(PORT, TOKEN)
invite_admin = Client(APORT, ADMIN_TOKEN)
watcher = Client(APORT, ADMIN_TOKEN)  # the main thread's own


def invite_step(i):
    addr = f"inv{i}@example.org"
    status, body, ms = inviter.call("POST", "/_matrix/identity/v2/store-invite",
                                    {"medium": "email", "address": addr, "room_id": "!room:localhost",
                                     "sender": "@bench:localhost"})
    record("invite", status == 200, outcome(status, body), ms)
    if status != 200:
        time.sleep(0.05)
        return
    status, body, ms = invite_admin.call("POST", "/_mxisd/admin/v1/bindings",
                                         {"medium": "email", "address": addr, "mxid": f"@inv{i}:localhost"})
    record("invite bind", status == 200, outcome(status, body), ms)
    if status == 200:
        ACKED["invite"].append(addr)
    time.sleep(0.02)


registrar = Client(PORT)


def register_step(i):
    status, body, ms = registrar.call("POST", "/_matrix/identity/v2/account/register",
                                      {"access_token": f"t{i}", "token_type": "Bearer",
                                       "matrix_server_name": "localhost", "expires_in": 3600})
    record("register", status == 200, outcome(status, body), ms)
    time.sleep(0.05)


def syncs(source):
    def step(i):
        t0 = time.monotonic()
        r = cli("sync", source)
        ms = (time.monotonic() - t0) * 1000
        what = "ok"
        if r.returncode:
            what = "failed: " + re.sub(r"\d+", "N", (r.stderr or r.stdout).strip().splitlines()[-1])[:110]
        record(f"sync {source}", r.returncode == 0, what, ms)
    return step


def wrk(name, script, conns, seconds, out):
    r = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds:.0f}s", "--latency", "-s", script,
                        f"http://127.0.0.1:{PORT}{name}"], capture_output=True, text=True)
    text = r.stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+(\S+)", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    sock = re.search(r"Socket errors: (.*)", text)
    out.append(f"{float(rate.group(1)) / 1000 if rate else 0:.1f}k/s p99 {p99.group(1) if p99 else '?'}"
               + (f" NON-2XX {non2xx.group(1)}" if non2xx else "")
               + (f" SOCKET ERRORS {sock.group(1)}" if sock else ""))


# --- the timeline: what happened in each second ---------------------------------------------
# A probe in its own process (not under this script's GIL) sends one lookup every 20 ms on
# a keep-alive connection and writes each answer's time. Once a second a sampler reads the
# server's lookup and search histograms (server-side time), the server's threads (CPU and
# time spent runnable but waiting for a core, from schedstat), the machine's CPU pressure
# and the processes that used the most CPU. The slow seconds of a phase are printed with
# what the machine was doing in them.
PROBE_SRC = """
import http.client, sys, time
port, token, body, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
conn = None
with open(out, "w") as f:
    while True:
        t0 = time.monotonic()
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            conn.request("POST", "/_matrix/identity/v2/lookup", body,
                         {"Content-Type": "application/json", "Authorization": "Bearer " + token})
            conn.getresponse().read()
            ms = (time.monotonic() - t0) * 1000
        except (OSError, http.client.HTTPException):
            conn, ms = None, -1.0
        f.write(f"{t0:.4f} {ms:.2f}\\n")
        f.flush()
        time.sleep(max(0.0, 0.02 - (time.monotonic() - t0)))
"""
PROBE = subprocess.Popen([sys.executable, "-c", PROBE_SRC, str(PORT), TOKEN, lookups[0],
                          f"{WORK}/probe.txt"])
MPORT = PORT + 1  # server.metrics: the public port + 1 by default
TICK = os.sysconf("SC_CLK_TCK")
SECONDS = []  # one dict per second


def proc_stat(path):
    with open(path) as f:
        text = f.read()
    name = text[text.index("(") + 1:text.rindex(")")]
    fields = text[text.rindex(")") + 2:].split()
    return name, int(fields[11]) + int(fields[12])


def server_threads():
    out = {}
    for tid in os.listdir(f"/proc/{SERVER.pid}/task"):
        try:
            name, ticks = proc_stat(f"/proc/{SERVER.pid}/task/{tid}/stat")
            with open(f"/proc/{SERVER.pid}/task/{tid}/schedstat") as f:
                _, wait_ns, _ = (int(x) for x in f.read().split())
        except (OSError, ValueError):
            continue
        out[tid] = (name, ticks, wait_ns)
    return out


def all_processes():
    out = {}
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                out[pid] = proc_stat(f"/proc/{pid}/stat")
            except (OSError, ValueError):
                pass
    return out


def histograms():
    """Per route (lookup, search): cumulative counts by upper bound, from /metrics."""
    out = {}
    try:
        c = http.client.HTTPConnection("127.0.0.1", MPORT, timeout=5)
        c.request("GET", "/metrics")
        text = c.getresponse().read().decode()
        c.close()
    except (OSError, http.client.HTTPException):
        return out
    for m in re.finditer(r'^mxisd_http_request_duration_seconds_bucket\{listener="public",'
                         r'route="([^"]+)",le="([^"]+)"\} (\d+)', text, re.M):
        route, le, n = m.groups()
        kind = "lookup" if route.endswith("/lookup") else "search" if route.endswith("/search") else None
        if kind:
            out.setdefault(kind, {})
            out[kind][le] = out[kind].get(le, 0) + int(n)
    return out


def pressure():
    with open("/proc/pressure/cpu") as f:
        return int(f.readline().rsplit("total=", 1)[1])


def sampler():
    before = (server_threads(), all_processes(), histograms(), pressure(), time.monotonic())
    while not STOP.is_set():
        time.sleep(1)
        now = (server_threads(), all_processes(), histograms(), pressure(), time.monotonic())
        threads = {}
        for tid, (name, ticks, wait) in now[0].items():
            t0 = before[0].get(tid, (name, 0, 0))
            c, w = threads.get(name, (0, 0))
            threads[name] = (c + ticks - t0[1], w + wait - t0[2])
        procs = sorted(((ticks - before[1].get(pid, (name, 0))[1], name)
                        for pid, (name, ticks) in now[1].items()), reverse=True)[:4]
        slow = {}
        for kind, buckets in now[2].items():
            old = before[2].get(kind, {})
            total = buckets.get("+Inf", 0) - old.get("+Inf", 0)
            fast = buckets.get("0.025", 0) - old.get("0.025", 0)
            slow[kind] = (max(0, total - fast), total)  # buckets are read one by one
        SECONDS.append({"phase": CURRENT[0], "start": before[4], "end": now[4],
                        "threads": threads, "procs": procs, "slow": slow,
                        "stall_ms": (now[3] - before[3]) / 1000})
        before = now


def timeline(phase):
    """The phase's seconds whose slowest probe answer took over 50 ms, one line each."""
    probes = []
    with open(f"{WORK}/probe.txt") as f:
        for line in f:
            try:
                t, ms = (float(x) for x in line.split())
            except ValueError:
                continue
            probes.append((t, ms))
    lines = []
    rows = [s for s in SECONDS if s["phase"] == phase]
    for s in rows:
        inside = [ms for t, ms in probes if s["start"] <= t < s["end"]]
        worst = max(inside, default=0)
        if worst <= 50 and not any(n for n, _ in s["slow"].values()):
            continue
        server = ", ".join(f"{n} {c * 1000 // TICK}ms/wait {w // 1_000_000}ms"
                           for n, (c, w) in sorted(s["threads"].items(), key=lambda kv: -kv[1][1])[:3])
        top = ", ".join(f"{n} {t * 100 // TICK}%" for t, n in s["procs"])
        slow = ", ".join(f"{k} {n}/{t}>25ms" for k, (n, t) in s["slow"].items())
        lines.append(f"      t+{s['start'] - rows[0]['start']:4.0f}s probe max {worst:5.0f} ms "
                     f"({len(inside)}) | server {slow} | stall {s['stall_ms']:.0f}ms | "
                     f"threads {server} | top {top}")
    return lines


threading.Thread(target=sampler, daemon=True).start()

kinds = (
    ("binds", bind_step), ("email", email_step), ("sms", sms_step), ("invite", invite_step),
    ("register", register_step), ("sync ldap", syncs("ldap")), ("sync sql", syncs("sql")))
left_out = os.environ.get("WITHOUT", "").split()
threads = [threading.Thread(target=worker, args=a, daemon=True) for a in kinds if a[0] not in left_out]
for t in threads:
    t.start()

PHASES = [("before", "pass", 1.5), ("down", "down", 1), ("slow", "slow", 1),
          ("garbage", "garbage", 1), ("after", "pass", 1.5)]


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def summary(phase):
    lines = []
    kinds = sorted({k for p, k, *_ in RECORDS if p == phase})
    for kind in kinds:
        rows = [r for r in RECORDS if r[0] == phase and r[1] == kind]
        good = [r[4] for r in rows if r[2]]
        text = f"{len(good)} ok" + (f" p99 {pct(good, 0.99):.0f} ms" if good else "")
        bad = {}
        for r in rows:
            if not r[2]:
                n, worst = bad.get(r[3], (0, 0))
                bad[r[3]] = (n + 1, max(worst, r[4]))
        for what, (n, worst) in sorted(bad.items()):
            text += f"; {n} × {what} (slowest {worst:.0f} ms)"
        lines.append(f"      {kind:<12} {text}")
    return lines


print(f"== fault injection: {N} people in a file source, {DIRECTORY_USERS} in slapd and "
      f"{DIRECTORY_USERS} in PostgreSQL; phases of {PHASE:.0f} s ({os.cpu_count()} cores)")
only = os.environ.get("ONLY", "").split()
for dep, proxy in PROXIES.items():
    if only and dep not in only:
        continue
    print(f"-- {dep}")
    for label, mode, factor in PHASES:
        on_loop(proxy.set_mode(mode))
        CURRENT[0] = f"{dep} {label}"
        seconds = PHASE * factor
        lk, se = [], []
        w1 = threading.Thread(target=wrk, args=("/_matrix/identity/v2/lookup", f"{WORK}/lookup.lua", 8, seconds, lk))
        w2 = threading.Thread(target=wrk, args=("/_matrix/client/v3/user_directory/search", f"{WORK}/search.lua", 4, seconds, se))
        w1.start(); w2.start(); w1.join(); w2.join()
        print(f"   {label:<8} lookups {lk[0]} | search {se[0]}")
        for line in summary(CURRENT[0]):
            print(line)
        for line in timeline(CURRENT[0]):
            print(line)
    # Queued work once the dependency is back: onbinds still in the outbox.
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        box = watcher.call("GET", "/_mxisd/admin/v1/outbox")[1] or {}
        if not box.get("pending") and not box.get("failed"):
            break
        time.sleep(0.2)
    print(f"   outbox empty {time.monotonic() - t0:.1f} s after the phases ended "
          f"({len(ONBINDS)} onbinds received so far)")
    sys.stdout.flush()

STOP.set()
CURRENT[0] = "end"
for t in threads:
    t.join(timeout=30)

# --- nothing acknowledged is lost ----------------------------------------------------------
print("-- what was acknowledged")


def found(addresses):
    hits = 0
    for k in range(0, len(addresses), 5000):
        pairs = [["email", a] for a in addresses[k:k + 5000]]
        body = public.call("POST", "/_matrix/identity/api/v1/bulk_lookup", {"threepids": pairs})[1]
        hits += len(body["threepids"])
    return hits


binds = ACKED["bind"] + ACKED["invite"]
print(f"   binds:    {len(binds)} acknowledged, {found(binds)} found by lookup")
mails = set(MAILS)
print(f"   e-mails:  {len(ACKED['email'])} validation requests answered 200, "
      f"{sum(a in mails for a in ACKED['email'])} of them reached the SMTP sink")
print(f"   invites:  {len(ACKED['invite'])} stored and bound, {sum(a in mails for a in ACKED['invite'])} "
      f"invite mails at the sink, {len(set(ACKED['invite']) & set(ONBINDS))} onbinds at the homeserver")
sent = set(SMS)
print(f"   SMS:      {len(ACKED['sms'])} answered 200, {sum(n in sent for n in ACKED['sms'])} at the gateway")
directory = [f"luser{i}@example.org" for i in range(DIRECTORY_USERS)] + \
            [f"suser{i}@example.org" for i in range(DIRECTORY_USERS)]
print(f"   sources:  {found(directory)} of the {len(directory)} LDAP and SQL bindings found "
      f"after every failed sync")
print(f"   server:   {'running' if SERVER.poll() is None else 'EXITED ' + str(SERVER.returncode)}")
PROBE.terminate()
SERVER.terminate()
SERVER.wait(timeout=30)
log.close()
print("-- errors and warnings in the server log (distinct, numbers as N)")
counts = {}
with open(f"{WORK}/server.log", errors="replace") as f:
    for line in f:
        if " ERROR " in line or " WARN " in line:
            key = re.sub(r"\x1b\[[0-9;]*m", "", line)
            key = re.sub(r"^\S+\s+", "", key)
            key = re.sub(r"\d+", "N", key)[:150].strip()
            counts[key] = counts.get(key, 0) + 1
for key, n in sorted(counts.items(), key=lambda kv: -kv[1]):
    print(f"   {n:>6} {key}")
