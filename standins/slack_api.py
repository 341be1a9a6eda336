"""A local stand-in of the Slack Web API on 127.0.0.1: ``chat.postMessage``, the three steps of
``files_upload_v2`` (``files.getUploadURLExternal``, the upload POST to the returned URL,
``files.completeUploadExternal``), and ``apps.connections.open`` (Socket Mode: called with the
app-level token, answers the WebSocket URL of a ``standins.slack_socket.SocketModeStandIn``;
https://api.slack.com/methods/apps.connections.open).

Modes: ``ok`` (default), ``down`` (503 for every call, uploads included), a queue of forced 429s
(``rate_limit(n, retry_after)``: the next ``n`` API calls answer 429 with ``Retry-After``),
``fail_uploads`` (the next n upload POSTs answer 500), ``refuse_files`` (an error code answered by
``files.getUploadURLExternal``, e.g. ``missing_scope``). Checks the bearer token on API calls.
Like Slack, ``chat.postMessage`` answers with the channel's ID and ``files.completeUploadExternal``
accepts only a channel ID. Records ``messages`` and completed ``files`` (with their bytes).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from shared.ids import stable_id


def channel_id(name: str) -> str:
    """The stand-in's ID of a channel name (``#avwap`` -> ``C...``); an ID stays as is."""
    return name if name.startswith("C") else "C" + stable_id("", name, length=10).upper()


class SlackStandIn:
    def __init__(self, token: str = "xoxb-test-token", app_token: str = "xapp-test-token",
                 socket: Any = None) -> None:
        self.token = token
        self.app_token = app_token
        self.socket = socket  # a standins.slack_socket.SocketModeStandIn: apps.connections.open issues its URLs
        self.messages: list[dict[str, Any]] = []
        self.files: list[dict[str, Any]] = []  # completed uploads: id, title, channel, filename, data, initial_comment
        self.calls: list[tuple[str, int]] = []  # (path, status answered)
        self.mode = "ok"
        self.fail_uploads = 0
        self.refuse_files = ""
        self._limits: list[int] = []
        self._pending: dict[str, dict[str, Any]] = {}  # file id -> requested upload (filename, length, data)
        self._lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_POST(self) -> None:  # noqa: N802
                n = int(self.headers.get("Content-Length", "0") or 0)
                raw = self.rfile.read(n)
                url = urlsplit(self.path)
                if url.path.startswith("/upload/"):
                    status, out, headers = stand_in._upload(url.path.rsplit("/", 1)[-1], raw)
                    body = out.encode()
                    ctype = "text/plain; charset=utf-8"
                else:
                    payload: dict[str, Any] = {k: v[0] for k, v in parse_qs(url.query).items()}
                    ctype_in = self.headers.get("Content-Type", "")
                    if "json" in ctype_in:
                        payload.update(json.loads(raw.decode() or "{}"))
                    else:
                        payload.update({k: v[0] for k, v in parse_qs(raw.decode()).items()})
                    for key in ("blocks", "files"):
                        if isinstance(payload.get(key), str):
                            payload[key] = json.loads(payload[key])
                    status, data, headers = stand_in._answer(url.path, self.headers.get("Authorization", ""), payload)
                    body = json.dumps(data).encode()
                    ctype = "application/json; charset=utf-8"
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def base_url(self) -> str:
        return f"{self.root}/api/"

    def rate_limit(self, n: int, retry_after: int = 1) -> None:
        with self._lock:
            self._limits.extend([retry_after] * n)

    def _upload(self, file_id: str, data: bytes) -> tuple[int, str, dict[str, str]]:
        with self._lock:
            path = f"/upload/{file_id}"
            if self.mode == "down":
                self.calls.append((path, 503))
                return 503, "service unavailable", {}
            if self.fail_uploads > 0:
                self.fail_uploads -= 1
                self.calls.append((path, 500))
                return 500, "upload failed", {}
            want = self._pending.get(file_id)
            if want is None or int(want["length"]) != len(data):
                self.calls.append((path, 400))
                return 400, "bad upload", {}
            want["data"] = data
            self.calls.append((path, 200))
            return 200, f"OK - {len(data)}", {}

    def _answer(self, path: str, auth: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self._lock:
            if self.mode == "down":
                self.calls.append((path, 503))
                return 503, {"ok": False, "error": "service_unavailable"}, {}
            if self._limits:
                ra = self._limits.pop(0)
                self.calls.append((path, 429))
                return 429, {"ok": False, "error": "ratelimited"}, {"Retry-After": str(ra)}
            self.calls.append((path, 200))
            method = path.rsplit("/", 1)[-1]
            if method == "apps.connections.open":
                # app-level token only (Slack: "not_allowed_token_type" for a bot token)
                if auth == f"Bearer {self.token}":
                    return 200, {"ok": False, "error": "not_allowed_token_type"}, {}
                if auth != f"Bearer {self.app_token}" or self.socket is None:
                    return 200, {"ok": False, "error": "invalid_auth"}, {}
                return 200, {"ok": True, "url": self.socket.new_url()}, {}
            if auth != f"Bearer {self.token}":
                return 200, {"ok": False, "error": "invalid_auth"}, {}
            if method == "chat.postMessage":
                if not payload.get("channel"):
                    return 200, {"ok": False, "error": "channel_not_found"}, {}
                self.messages.append(payload)
                return 200, {"ok": True, "channel": channel_id(payload["channel"]), "ts": f"{len(self.messages)}.000100",
                             "message": {"text": payload.get("text", "")}}, {}
            if method == "files.getUploadURLExternal":
                if self.refuse_files:
                    return 200, {"ok": False, "error": self.refuse_files}, {}
                if not payload.get("filename") or not str(payload.get("length", "")).isdigit():
                    return 200, {"ok": False, "error": "invalid_arguments"}, {}
                file_id = f"F{len(self._pending) + 1:08d}"
                self._pending[file_id] = {"filename": payload["filename"], "length": int(payload["length"])}
                return 200, {"ok": True, "upload_url": f"{self.root}/upload/{file_id}", "file_id": file_id}, {}
            if method == "files.completeUploadExternal":
                channel = str(payload.get("channel_id", ""))
                if channel and not channel.startswith("C"):
                    return 200, {"ok": False, "error": "channel_not_found"}, {}
                done = []
                for f in payload.get("files", []):
                    want = self._pending.get(f.get("id", ""))
                    if want is None or "data" not in want:
                        return 200, {"ok": False, "error": "file_not_found"}, {}
                    done.append({"id": f["id"], "title": f.get("title", ""), "channel": channel, "filename": want["filename"],
                                 "data": want["data"], "initial_comment": payload.get("initial_comment", ""),
                                 "thread_ts": payload.get("thread_ts", "")})
                self.files.extend(done)
                return 200, {"ok": True, "files": [{"id": f["id"], "title": f["title"]} for f in done]}, {}
            return 200, {"ok": False, "error": "unknown_method"}, {}

    def __enter__(self) -> SlackStandIn:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
