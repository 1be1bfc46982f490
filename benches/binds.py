"""Binds distinct addresses one after the other through the admin TCP listener.

   python3 benches/binds.py PORT TOKEN PREFIX SECONDS|FLAGFILE

for SECONDS, or while FLAGFILE exists; prints the count, p50, p99 and max in ms
(used by benches/rotation.sh and benches/mixed.sh)."""
import http.client, json, os, sys, time
port, token, prefix, until = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port)
headers = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}
times, failed, i = [], 0, 0
deadline = time.monotonic() + float(until) if until.replace(".", "").isdigit() else None
def going():
    return time.monotonic() < deadline if deadline else os.path.exists(until)
while going():
    body = json.dumps({"medium": "email", "address": f"{prefix}{i}@example.org", "mxid": f"@{prefix}{i}:localhost"})
    t0 = time.monotonic()
    conn.request("POST", "/_mxisd/admin/v1/bindings", body, headers)
    r = conn.getresponse(); r.read()
    times.append((time.monotonic() - t0) * 1000)
    failed += r.status != 200
    i += 1
times.sort()
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] if times else float("nan")
print(f"{len(times)} binds, p50 {pick(0.5):.1f} ms, p99 {pick(0.99):.1f} ms, max {times[-1] if times else float('nan'):.1f} ms" + (f", {failed} FAILED" if failed else ""))
