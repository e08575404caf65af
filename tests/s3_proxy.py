"""A forwarding HTTP proxy on loopback in front of the S3 endpoint: records every request, optionally injects faults.

botocore sends requests for an ``http://`` endpoint to an HTTP proxy in absolute form, so
the proxy sees exactly what S3 would see. Each request is recorded (method, URL, headers
lower-cased, arrival time, the fault injected if any): SSE-C, ACL, proxy credentials and
the spacing of retries can be checked from outside the client.

With a ``share`` above 0, it answers a share of the requests instead of S3:

- ``"500"``: ``500 InternalError`` with an S3-style XML error body;
- ``"503"``: ``503 SlowDown`` (S3's throttling answer, ``<Code>SlowDown</Code>``);
- ``"reset"``: closes the connection without any response (TCP RST), the request never
  reaching S3;
- ``"lost"``: forwards the request to S3 (so it takes effect), then resets the
  connection instead of relaying the answer: the client cannot tell it succeeded.

Which requests fail is deterministic: of the requests the ``only`` filter accepts, the
n-th (counting from 1) fails when ``floor(n * share)`` moves, so faults are spread
evenly (``share=0.3`` fails 3 of every 10, never two in a row; ``share=1.0`` fails all),
and the fault kinds take turns in the order given; ``limit`` caps how many faults are
injected in all. The proxy binds 127.0.0.1 and only forwards to loopback targets.
"""

from __future__ import annotations

import http.client
import ipaddress
import math
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULT_KINDS = ("500", "503", "reset", "lost")

_ERRORS = {
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
    "503": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
}


@dataclass(frozen=True)
class RelayedRequest:
    method: str
    url: str
    fault: str | None  # the fault injected, or None when forwarded and answered ("refused": not loopback)
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased
    at: float = 0.0  # time.monotonic() when the request line and headers had arrived


def _is_loopback(host: str | None) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class S3Proxy:
    """``with S3Proxy() as proxy: ... proxy.url``; ``proxy.requests`` lists what it saw.

    :param share: fraction of the accepted requests that fail, 0.0 (default: a recording proxy) to 1.0.
    :param faults: fault kinds (see module doc), used in turn.
    :param only: ``only(method, url)`` picks the requests that may fail; the others always pass.
    :param limit: most faults injected in all (``None``: no limit).
    """

    def __init__(self, share: float = 0.0, faults: Sequence[str] = ("500", "503", "reset"),
                 only: Callable[[str, str], bool] | None = None, limit: int | None = None) -> None:
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share must be between 0 and 1, not {share}")
        unknown = set(faults) - set(FAULT_KINDS)
        if unknown or not faults:
            raise ValueError(f"faults must be some of {FAULT_KINDS}, not {faults}")
        self.share = share
        self.faults = tuple(faults)
        self.only = only
        self.limit = limit
        self.requests: list[RelayedRequest] = []
        self._lock = threading.Lock()
        self._eligible = 0
        self._injected = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def _relay(self) -> None:
                arrived = time.monotonic()
                target = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("content-length", 0) or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                if not _is_loopback(target.hostname):
                    proxy._record(RelayedRequest(self.command, self.path, "refused", headers, arrived))
                    self._answer(403, "Forbidden", b"this test proxy only forwards to loopback\n", "text/plain")
                    return
                fault = proxy._next_fault(self.command, self.path)
                proxy._record(RelayedRequest(self.command, self.path, fault, headers, arrived))
                if fault in _ERRORS:
                    status, reason, code, message = _ERRORS[fault]
                    xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                           f"<Message>{message}</Message><RequestId>{uuid.uuid4().hex[:16]}</RequestId></Error>")
                    self._answer(status, reason, xml.encode(), "application/xml")
                    return
                if fault == "reset":
                    self._reset()
                    return
                response = self._forward(target, body)
                if fault == "lost":
                    self._reset()
                    return
                status, reason, headers, data = response
                self.send_response(status, reason)
                for k, v in headers:
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _forward(self, target, body: bytes):
                forward = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("proxy-authorization", "proxy-connection", "expect")}
                conn = http.client.HTTPConnection(target.hostname, target.port, timeout=60)
                try:
                    path = target.path + (f"?{target.query}" if target.query else "")
                    conn.request(self.command, path, body=body or None, headers=forward)
                    response = conn.getresponse()
                    return response.status, response.reason, response.getheaders(), response.read()
                finally:
                    conn.close()

            def _answer(self, status: int, reason: str, data: bytes, content_type: str) -> None:
                self.send_response(status, reason)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _reset(self) -> None:
                """Drop the connection with a TCP RST and no response at all."""
                self.close_connection = True
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request, client_address) -> bool:  # loopback clients only
                return _is_loopback(client_address[0])

            def shutdown_request(self, request) -> None:
                try:
                    super().shutdown_request(request)
                except OSError:  # already reset
                    pass

        self._server = Server(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _next_fault(self, method: str, url: str) -> str | None:
        with self._lock:
            if self.only is not None and not self.only(method, url):
                return None
            if self.limit is not None and self._injected >= self.limit:
                return None
            self._eligible += 1
            n = self._eligible
            if math.floor(n * self.share + 1e-9) == math.floor((n - 1) * self.share + 1e-9):
                return None
            fault = self.faults[self._injected % len(self.faults)]
            self._injected += 1
            return fault

    def _record(self, request: RelayedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def set_share(self, share: float) -> None:
        with self._lock:
            self.share = share

    def fault_counts(self) -> Counter:
        with self._lock:
            return Counter(r.fault for r in self.requests)

    def __enter__(self) -> S3Proxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
