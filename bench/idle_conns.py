#!/usr/bin/env python3
"""Memory per idle keep-alive client connection, as bench/compare.sh measures it.

usage: idle_conns.py PORT N PID [PID...]

Opens N connections to 127.0.0.1:PORT one after another, sends one `GET /` on each and reads
its response (so every connection has served a request and sits idle in keep-alive, as a
browser's would), waits a second, and prints one line:

    conns=N rss_before_kib=A rss_after_kib=B per_conn_bytes=C

where RSS is the sum of VmRSS over the PIDs (a proxy's master and workers). The connections
are then closed. Requests go one at a time, so the proxy keeps one upstream connection, not N:
the figure is the cost of the client side alone.
"""

import resource
import socket
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total


def read_response(sock):
    """Read one response to a GET whose body is framed by Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of the body")
        body += chunk
    status = head.split(b" ", 2)[1]
    if not status.startswith(b"2"):
        raise ConnectionError(f"status {status.decode()}")


def main():
    port, n, pids = int(sys.argv[1]), int(sys.argv[2]), [int(p) for p in sys.argv[3:]]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if n + 64 > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 64), hard))
    time.sleep(0.5)
    before = rss_kib(pids)
    socks = []
    try:
        req = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: idle_conns.py\r\nAccept: */*\r\n\r\n"
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            socks.append(s)
            s.sendall(req)
            read_response(s)
        time.sleep(1.0)
        after = rss_kib(pids)
    finally:
        for s in socks:
            s.close()
    per = (after - before) * 1024 / n if n else 0
    print(f"conns={n} rss_before_kib={before} rss_after_kib={after} per_conn_bytes={per:.0f}")


if __name__ == "__main__":
    main()
