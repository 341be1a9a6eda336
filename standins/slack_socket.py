"""A local stand-in of Slack's Socket Mode WebSocket, for slack-sdk's ``SocketModeClient``.

Sources of each behaviour (Slack's "Socket Mode implementation" guide,
https://api.slack.com/apis/connections/socket-implement, and slack-sdk's ``slack_sdk/socket_mode``):

- ``apps.connections.open`` (a Web API method called with the app-level ``xapp-`` token) answers
  ``{"ok": true, "url": "wss://.../link/?ticket=...&app_id=..."}``; here ``SlackStandIn`` answers a
  ``ws://127.0.0.1:<port>/link/?ticket=<one-time ticket>&app_id=<id>`` URL issued by ``new_url``
  (slack-sdk's ``BaseSocketModeClient.issue_new_wss_url`` reads ``response["url"]``; its builtin
  connection speaks plain WebSocket to any port but 443). A ticket is good for one connection.
- On connect the server sends ``{"type": "hello", "num_connections": n, "debug_info": {...},
  "connection_info": {"app_id": ...}}``.
- Each delivery is an envelope ``{"envelope_id", "type", "payload", "accepts_response_payload"}``;
  ``type`` is ``slash_commands`` (payload: the slash command's form fields: ``command``, ``text``,
  ``user_id``, ``user_name``, ``channel_id``, ``team_id``, ``response_url``, ``trigger_id``, ...;
  ``accepts_response_payload`` true) or ``interactive`` (payload: a ``block_actions`` object with
  ``user``, ``channel``, ``actions`` [``action_id``, ``block_id``, ``value``, ``type``, ``action_ts``],
  ``response_url``, ``trigger_id``; no response payload). The app acknowledges with
  ``{"envelope_id": ..., "payload": {...}}`` (``SocketModeResponse``), the payload optional; a slash
  command's payload (``text``/``blocks``) is the reply Slack shows the user (recorded in ``acks``).
- ``{"type": "disconnect", "reason": "refresh_requested", "debug_info": {...}}`` asks the client to
  reconnect (slack-sdk's ``process_message`` calls ``connect_to_new_endpoint(force=True)``);
  ``disconnect`` sends it, ``drop`` cuts the TCP connection without a close frame (slack-sdk's
  builtin client reconnects through its monitor and ``on_close``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve


class SocketModeStandIn:
    def __init__(self, app_id: str = "A0STANDIN", team_id: str = "T0STANDIN") -> None:
        self.app_id, self.team_id = app_id, team_id
        self.lock = threading.Condition()
        self.tickets: set[str] = set()
        self.connects = 0  # accepted connections so far (hello sent)
        self.refused = 0  # connections with an unknown or used ticket
        self.acks: dict[str, dict[str, Any]] = {}  # envelope id -> the client's ack
        self.sent: list[dict[str, Any]] = []  # every envelope delivered
        self._conns: list[ServerConnection] = []
        self._send_lock = threading.Lock()
        self._server = serve(self._handler, "127.0.0.1", 0)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="slack-socket-standin")

    def __enter__(self) -> SocketModeStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.drop()
        self._server.shutdown()

    # -- what apps.connections.open answers ---------------------------------------------
    def new_url(self) -> str:
        ticket = uuid.uuid4().hex
        with self.lock:
            self.tickets.add(ticket)
        return f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"

    # -- controls -------------------------------------------------------------------------
    @property
    def connected(self) -> int:
        with self.lock:
            return len(self._conns)

    def wait_connected(self, n: int = 1, timeout_s: float = 10.0) -> None:
        """Until ``n`` connections have been accepted in total and one is open."""
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while not (self.connects >= n and self._conns):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"socket mode: {self.connects} connections, {len(self._conns)} open; wanted {n}")
                self.lock.wait(left)

    def slash_command(self, user_id: str, text: str, command: str = "/avwap", channel_id: str = "C0STANDIN") -> str:
        """Deliver a slash command; returns its envelope id."""
        n = len(self.sent) + 1
        payload = {"token": "verification-token-unused", "team_id": self.team_id, "team_domain": "standin",
                   "channel_id": channel_id, "channel_name": "avwap", "user_id": user_id, "user_name": user_id.lower(),
                   "command": command, "text": text, "api_app_id": self.app_id, "is_enterprise_install": "false",
                   "response_url": f"http://127.0.0.1:{self.port}/commands/{n}", "trigger_id": f"{n}.trigger"}
        return self._deliver("slash_commands", payload, accepts_response_payload=True)

    def block_action(self, user_id: str, action_id: str, value: str, channel_id: str = "C0STANDIN") -> str:
        """Deliver a button click (``block_actions``); returns its envelope id."""
        n = len(self.sent) + 1
        payload = {"type": "block_actions", "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(),
                                                     "team_id": self.team_id},
                   "api_app_id": self.app_id, "token": "verification-token-unused", "trigger_id": f"{n}.trigger",
                   "team": {"id": self.team_id, "domain": "standin"}, "channel": {"id": channel_id, "name": "avwap"},
                   "container": {"type": "message", "channel_id": channel_id, "is_ephemeral": True},
                   "response_url": f"http://127.0.0.1:{self.port}/actions/{n}",
                   "actions": [{"action_id": action_id, "block_id": "avwap_confirm", "value": value, "type": "button",
                                "action_ts": f"{time.time():.6f}"}]}
        return self._deliver("interactive", payload, accepts_response_payload=False)

    def wait_ack(self, envelope_id: str, timeout_s: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with self.lock:
            while envelope_id not in self.acks:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no ack for envelope {envelope_id}")
                self.lock.wait(left)
            return self.acks[envelope_id]

    def disconnect(self, reason: str = "refresh_requested") -> None:
        """Ask the client to reconnect (Slack does this before it recycles a connection)."""
        self._send({"type": "disconnect", "reason": reason, "debug_info": {"host": "standin"}})

    def drop(self) -> None:
        """Cut every connection (no close frame), as a network failure would."""
        with self.lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.socket.shutdown(socket.SHUT_RDWR)
                c.socket.close()
            except OSError:
                pass

    # -- server -----------------------------------------------------------------------------
    def _deliver(self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool) -> str:
        eid = uuid.uuid4().hex
        env = {"envelope_id": eid, "type": kind, "payload": payload, "accepts_response_payload": accepts_response_payload}
        self.sent.append(env)
        self._send(env)
        return eid

    def _send(self, msg: dict[str, Any]) -> None:
        with self.lock:
            conns = list(self._conns)
        if not conns:
            raise ConnectionError("socket mode: no client connected")
        with self._send_lock:
            conns[-1].send(json.dumps(msg))

    def _handler(self, conn: ServerConnection) -> None:
        query = parse_qs(urlsplit(conn.request.path if conn.request else "").query)
        ticket = (query.get("ticket") or [""])[0]
        with self.lock:
            ok = ticket in self.tickets
            self.tickets.discard(ticket)
            if not ok:
                self.refused += 1
        if not ok:
            conn.close(code=1008, reason="invalid ticket")
            return
        with self.lock:
            self._conns.append(conn)
            self.connects += 1
            n = len(self._conns)
        try:
            with self._send_lock:
                conn.send(json.dumps({"type": "hello", "num_connections": n,
                                      "debug_info": {"host": "standin", "build_number": 1,
                                                     "approximate_connection_time": 3600},
                                      "connection_info": {"app_id": self.app_id}}))
            with self.lock:
                self.lock.notify_all()
            while True:
                raw = conn.recv()
                try:
                    msg = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(msg, dict) and msg.get("envelope_id"):
                    with self.lock:
                        self.acks[str(msg["envelope_id"])] = msg
                        self.lock.notify_all()
        except (ConnectionClosed, OSError):
            return
        finally:
            with self.lock:
                if conn in self._conns:
                    self._conns.remove(conn)
                self.lock.notify_all()
