"""A local stand-in of the Slack Web API (``chat.postMessage``) on 127.0.0.1.

Modes: ``ok`` (default), ``down`` (503 for every call), and a queue of forced 429s
(``rate_limit(n, retry_after)``: the next ``n`` calls answer 429 with ``Retry-After``).
Checks the bearer token; records every accepted message in ``messages``.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs


class SlackStandIn:
    def __init__(self, token: str = "xoxb-test-token") -> None:
        self.token = token
        self.messages: list[dict[str, Any]] = []
        self.calls: list[tuple[str, int]] = []  # (path, status answered)
        self.mode = "ok"
        self._limits: list[int] = []
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", "0") or 0)
                body = self.rfile.read(n).decode()
                ctype = self.headers.get("Content-Type", "")
                if "json" in ctype:
                    payload = json.loads(body or "{}")
                else:
                    payload = {k: v[0] for k, v in parse_qs(body).items()}
                    if isinstance(payload.get("blocks"), str):
                        payload["blocks"] = json.loads(payload["blocks"])
                status, data, headers = stand_in._answer(self.path, self.headers.get("Authorization", ""), payload)
                out = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def rate_limit(self, n: int, retry_after: int = 1) -> None:
        with self._lock:
            self._limits.extend([retry_after] * n)

    def _answer(self, path: str, auth: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            if self.mode == "down":
                self.calls.append((path, 503))
                return 503, {"ok": False, "error": "service_unavailable"}, {}
            if self._limits:
                ra = self._limits.pop(0)
                self.calls.append((path, 429))
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(ra)}
            if auth != f"Bearer {self.token}":
                self.calls.append((path, 200))
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            if not path.endswith("/chat.postMessage"):
                self.calls.append((path, 200))
                return 200, {"ok": False, "error": "unknown_method"}, {}
            if not payload.get("channel"):
                self.calls.append((path, 200))
                return 200, {"ok": False, "error": "channel_not_found"}, {}
            self.messages.append(payload)
            self.calls.append((path, 200))
            return 200, {"ok": True, "channel": payload["channel"], "ts": f"{len(self.messages)}.000100",
                         "message": {"text": payload.get("text", "")}}, {}

    def __enter__(self) -> SlackStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
