#!/usr/bin/env python3
"""Loopback stand-ins for the servers mxisd calls out to, for test-static-dns.sh.

Usage: fake_servers.py LOG NAME=KIND@ADDRESS...

Prints "NAME PORT" for each listener (each gets a free port), then "ready".

Each listener appends "NAME PEER" to LOG for every connection it accepts, then speaks
just enough of its protocol for mxisd to get on:
  record   accepts, records, closes (LDAP, SQL, TLS endpoints: the connection is the proof)
  smtp     a minimal SMTP server that accepts one message per session
  http     answers GET with JSON: a homeserver's OpenID userinfo, a REST source's users
Runs until killed. Binds only the addresses given (loopback).
"""

import json
import socketserver
import sys
import threading

LOG_LOCK = threading.Lock()


def record(log, name, peer):
    with LOG_LOCK, open(log, "a", encoding="utf-8") as f:
        f.write(f"{name} {peer[0]}\n")


def make_handler(log, name, kind):
    class Handler(socketserver.StreamRequestHandler):
        timeout = 10

        def handle(self):
            record(log, name, self.client_address)
            if kind == "smtp":
                self.smtp()
            elif kind == "http":
                self.http()

        def reply(self, line):
            self.wfile.write(line.encode() + b"\r\n")
            self.wfile.flush()

        def smtp(self):
            self.reply("220 fake ESMTP")
            while True:
                line = self.rfile.readline()
                if not line:
                    return
                verb = line.decode("utf-8", "replace").strip().upper()
                if verb.startswith("EHLO"):
                    self.wfile.write(b"250-fake\r\n250 8BITMIME\r\n")
                    self.wfile.flush()
                elif verb.startswith("DATA"):
                    self.reply("354 go on")
                    while True:
                        data = self.rfile.readline()
                        if not data or data in (b".\r\n", b".\n"):
                            break
                    record(log, name + ":message", self.client_address)
                    self.reply("250 queued")
                elif verb.startswith("QUIT"):
                    self.reply("221 bye")
                    return
                else:
                    self.reply("250 ok")

        def http(self):
            request = self.rfile.readline().decode("utf-8", "replace")
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass
            path = request.split(" ")[1] if " " in request else "/"
            if path.startswith("/_matrix/federation/v1/openid/userinfo"):
                body = {"sub": "@alice:hs.mxisd.test"}
            elif path.startswith("/users"):
                body = {"users": [{"username": "alice", "display_name": "Alice",
                                   "threepids": [{"medium": "email",
                                                  "address": "alice@mxisd.test"}]}]}
            else:
                body = {}
            data = json.dumps(body).encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                             + f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                             + data)
            self.wfile.flush()

    return Handler


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def main():
    log = sys.argv[1]
    servers = []
    for spec in sys.argv[2:]:
        name, rest = spec.split("=", 1)
        kind, host = rest.split("@", 1)
        server = Server((host, 0), make_handler(log, name, kind))
        servers.append(server)
        print(name, server.server_address[1], flush=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main()
