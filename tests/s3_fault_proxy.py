"""A fault-injecting HTTP proxy on loopback, in front of the test S3 server.

For each request whose path matches ``pattern``, the first ``failures`` requests to that path
fail, cycling through the faults an object store shows under load: HTTP 503 ``SlowDown``
(throttling), HTTP 500 ``InternalError``, and a connection closed without a response. Later
requests pass through unchanged (headers, including ``Host``, are forwarded as sent, so SigV4
signatures stay valid).
"""

from __future__ import annotations

import http.client
import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("slowdown", "internal", "drop")
_BODIES = {
    "slowdown": (503, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code>"
                      b"<Message>Please reduce your request rate.</Message></Error>"),
    "internal": (500, b"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>InternalError"
                      b"</Code><Message>We encountered an internal error.</Message></Error>"),
}
_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


class FaultProxy:
    def __init__(self, upstream: str, pattern: str, failures: int) -> None:
        self.upstream = urlsplit(upstream)
        self.pattern = re.compile(pattern)
        self.failures = failures
        self.seen: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                key = self.path.split("?", 1)[0]
                fault = proxy._fault_for(key)
                if fault == "drop":
                    self.close_connection = True
                    self.connection.close()
                    return
                if fault is not None:
                    status, payload = _BODIES[fault]
                    self.send_response(status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":  # a HEAD answer has no body
                        self.wfile.write(payload)
                    return
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port,
                                                  timeout=120)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True,
                                    skip_accept_encoding=True)
                    for name, value in self.headers.items():
                        if name.lower() not in _HOP:
                            conn.putheader(name, value)
                    conn.endheaders(body)
                    resp = conn.getresponse()
                    data = resp.read()
                finally:
                    conn.close()
                self.send_response(resp.status, resp.reason)
                for name, value in resp.getheaders():
                    if name.lower() not in _HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                # A HEAD answer has no body but the object's length (s3fs takes the size from it).
                length = resp.getheader("Content-Length") if self.command == "HEAD" else None
                self.send_header("Content-Length", length or str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _fault_for(self, key: str) -> str | None:
        if not self.pattern.search(key):
            return None
        with self._lock:
            n = self.seen[key]
            self.seen[key] += 1
            if n >= self.failures:
                return None
            fault = FAULTS[n % len(FAULTS)]
            self.injected[fault] += 1
            return fault

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
