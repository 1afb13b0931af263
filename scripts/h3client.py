#!/usr/bin/env python3
"""One HTTP/3 request with aioquic: an HTTP/3 client that switchyard did not write.

tests/http3_interop.rs runs it with the Python of the virtual environment that
scripts/test.sh makes (target/h3venv, aioquic pinned there). By hand:

    target/h3venv/bin/python scripts/h3client.py URL [options]

    URL                   https://HOST[:PORT]/path?query; HOST is the TLS server name (SNI)
                          and :authority, PORT the UDP port (default 443)
    --connect ADDR        dial ADDR (an IP or a name) instead of HOST; HOST stays SNI/:authority
    --ca FILE             trust the CA certificate(s) in FILE (PEM) instead of the system's
    --insecure            do not verify the server certificate
    --method M            request method (default GET; POST when --data-size is given)
    --data-size N         send a body of N bytes (bytes 0..250 repeated) with content-length
    --frames SIZES        send the body's first bytes as DATA frames of these sizes (comma list,
                          0 allowed: an empty DATA frame), the rest in one last frame
    -H, --header 'k: v'   an extra request header (repeatable)
    --trailer k=v         a request trailer (repeatable)
    --show-body           also print the response body (decoded as UTF-8, lossy)
    --timeout SECS        give up after SECS for the whole exchange (default 30)

Only loopback addresses are dialed: the address dialed (ADDR, else HOST) must resolve to
127.0.0.0/8 or ::1 only, or nothing is sent and the exit status is 2.

Output: one JSON line on stdout. On a response (any status), exit status 0 and
  {"ok": true, "status": 200, "headers": [[name, value], ...], "informational": [status, ...],
   "body_bytes": N, "body_sha256": HEX, "trailers": [[name, value], ...],
   "sent_bytes": N, "sent_sha256": HEX, "alpn": "h3", "elapsed_ms": F[, "body": TEXT]}
(header names lower-case, pseudo-headers left out; values decoded as Latin-1). On a failure
(handshake, reset stream, closed connection, timeout), exit status 1 and
  {"ok": false, "error": "KIND: detail"}.

aioquic 1.7.2 checks every response's content-length against the DATA it got, HEAD and 304
responses included: a correct HEAD response with a content-length fails here with
"content-length does not match data size" (H3_MESSAGE_ERROR) on aioquic's side.
"""

import argparse
import asyncio
import hashlib
import ipaddress
import json
import logging
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit

from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.h3.connection import H3_ALPN, H3Connection
from aioquic.h3.events import DataReceived, HeadersReceived
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import ConnectionTerminated, StreamReset


class Refused(Exception):
    """The address to dial is not a loopback address."""


class H3Client(QuicConnectionProtocol):
    """A QUIC connection carrying HTTP/3 requests, one future per request stream."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.h3 = H3Connection(self._quic)
        self.streams = {}  # stream id -> (future, state)
        self.terminated = None  # the ConnectionTerminated event, once closed

    def _fail(self, sid, exc):
        fut, _ = self.streams.get(sid, (None, None))
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def quic_event_received(self, event):
        if isinstance(event, StreamReset):
            self._fail(event.stream_id, ConnectionError(f"stream reset by the server, code {event.error_code:#x}"))
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event
            for sid in list(self.streams):
                self._fail(sid, ConnectionError(
                    f"connection closed, code {event.error_code:#x}, reason {event.reason_phrase!r}"))
        for ev in self.h3.handle_event(event):
            if not isinstance(ev, (HeadersReceived, DataReceived)) or ev.stream_id not in self.streams:
                continue
            fut, st = self.streams[ev.stream_id]
            if isinstance(ev, HeadersReceived):
                status = dict(ev.headers).get(b":status", b"")
                if "headers" in st:
                    st["trailers"] = ev.headers
                elif status.startswith(b"1"):
                    st["informational"].append(int(status))
                else:
                    st["headers"] = ev.headers
            else:
                st["body"].extend(ev.data)
            if ev.stream_ended and not fut.done():
                fut.set_result(st)

    async def request(self, method, url, headers, body, trailers, frames=(), content_length=True):
        u = urlsplit(url)
        sid = self._quic.get_next_available_stream_id()
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        head = [(b":method", method.encode()), (b":scheme", b"https"),
                (b":authority", u.netloc.encode()), (b":path", path.encode()),
                (b"user-agent", b"aioquic-h3client")]
        head += [(k.lower().encode(), v.encode()) for k, v in headers]
        if body and content_length:
            head.append((b"content-length", str(len(body)).encode()))
        fut = asyncio.get_running_loop().create_future()
        self.streams[sid] = (fut, {"body": bytearray(), "informational": []})
        self.h3.send_headers(sid, head, end_stream=not body and not trailers)
        if body or frames:
            chunks, pos = [], 0
            for n in frames:
                chunks.append(body[pos:pos + n])
                pos += n
            chunks.append(body[pos:])
            for i, chunk in enumerate(chunks):
                self.h3.send_data(sid, chunk, end_stream=i == len(chunks) - 1 and not trailers)
        if trailers:
            self.h3.send_headers(sid, [(k.lower().encode(), v.encode()) for k, v in trailers], end_stream=True)
        self.transmit()
        return await fut


def loopback_address(host, port):
    """The first address HOST resolves to, when every one of them is a loopback address."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as e:
        raise Refused(f"cannot resolve {host!r}: {e}") from None
    addrs = [info[4][0] for info in infos]
    wrong = [a for a in addrs if not ipaddress.ip_address(a.split("%")[0]).is_loopback]
    if not addrs or wrong:
        raise Refused(f"{host!r} resolves to {addrs}: only loopback addresses are dialed")
    return addrs[0]


def pairs(headers):
    return [[k.decode("latin-1"), v.decode("latin-1")] for k, v in headers if not k.startswith(b":")]


def split_header(text):
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"want 'name: value', got {text!r}")
    return name.strip(), value.strip()


def split_trailer(text):
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"want 'name=value', got {text!r}")
    return name, value


async def exchange(a, stage):
    u = urlsplit(a.url)
    if u.scheme != "https" or not u.hostname:
        raise Refused(f"want an https:// URL with a host, got {a.url!r}")
    port = u.port or 443
    addr = loopback_address(a.connect or u.hostname, port)
    cfg = QuicConfiguration(is_client=True, alpn_protocols=H3_ALPN, server_name=u.hostname,
                            idle_timeout=a.timeout)
    if a.insecure:
        cfg.verify_mode = ssl.CERT_NONE
    elif a.ca:
        cfg.load_verify_locations(a.ca)
    body = (bytes(range(251)) * (a.data_size // 251 + 1))[:a.data_size]
    method = a.method or ("POST" if a.data_size else "GET")
    start = time.monotonic()
    made = []  # the protocol, to read why a failed handshake failed

    def protocol(*args, **kwargs):
        made.append(H3Client(*args, **kwargs))
        return made[-1]

    stage[0] = f"the QUIC handshake with {addr} port {port} (UDP)"
    try:
        async with connect(addr, port, configuration=cfg, create_protocol=protocol) as client:
            stage[0] = "the response"
            st = await client.request(method, a.url, a.header, body, a.trailer, a.frames,
                                      content_length=not a.no_content_length)
            alpn = client._quic.tls.alpn_negotiated
    except ConnectionError as e:
        end = made[-1].terminated if made else None
        if str(e) or end is None:
            raise
        raise ConnectionError(f"connection closed, code {end.error_code:#x}, reason {end.reason_phrase!r}") from None
    if "headers" not in st:
        raise ConnectionError("the stream ended without a response head")
    got = bytes(st["body"])
    out = {
        "ok": True,
        "status": int(dict(st["headers"]).get(b":status", b"0")),
        "headers": pairs(st["headers"]),
        "informational": st["informational"],
        "body_bytes": len(got),
        "body_sha256": hashlib.sha256(got).hexdigest(),
        "trailers": pairs(st.get("trailers", [])),
        "sent_bytes": len(body),
        "sent_sha256": hashlib.sha256(body).hexdigest(),
        "alpn": alpn,
        "elapsed_ms": round((time.monotonic() - start) * 1000, 3),
    }
    if a.show_body:
        out["body"] = got.decode("utf-8", "replace")
    return out


def main():
    p = argparse.ArgumentParser(description="One HTTP/3 request with aioquic (loopback only); prints one JSON line.")
    p.add_argument("url")
    p.add_argument("--connect", metavar="ADDR", help="address to dial; the URL host stays SNI and :authority")
    p.add_argument("--ca", metavar="FILE", help="CA certificate(s) to trust, PEM")
    p.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    p.add_argument("--method", help="request method (default GET, or POST with --data-size)")
    p.add_argument("--data-size", type=int, default=0, metavar="N", help="request body of N bytes")
    p.add_argument("--no-content-length", action="store_true", help="send the body without content-length")
    p.add_argument("--frames", type=lambda t: [int(n) for n in t.split(",")], default=[], metavar="SIZES",
                   help="first DATA frame sizes, e.g. 0,100 (0 = an empty frame)")
    p.add_argument("-H", "--header", type=split_header, action="append", default=[], help="'name: value'")
    p.add_argument("--trailer", type=split_trailer, action="append", default=[], help="name=value")
    p.add_argument("--show-body", action="store_true", help="include the response body in the output")
    p.add_argument("--timeout", type=float, default=30.0, metavar="SECS", help="for the whole exchange")
    a = p.parse_args()
    if a.data_size < 0 or a.timeout <= 0 or min(a.frames, default=0) < 0 or sum(a.frames) > a.data_size:
        p.error("--data-size must be >= 0, --timeout > 0, --frames sizes >= 0 adding up to at most --data-size")
    # aioquic leaves futures it failed unawaited when a handshake fails; asyncio would log each.
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    stage = ["the start"]
    try:
        out = asyncio.run(asyncio.wait_for(exchange(a, stage), a.timeout))
    except Refused as e:
        print(json.dumps({"ok": False, "error": f"refused: {e}"}), flush=True)
        return 2
    except asyncio.TimeoutError:
        print(json.dumps({"ok": False, "error": f"timeout: {a.timeout} s passed during {stage[0]}"}), flush=True)
        return 1
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}), flush=True)
        return 1
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
