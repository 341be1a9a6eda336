"""``/avwap`` over Slack Socket Mode (no public URL): the notifier's shell around ``slack_commands``.

slack-sdk's ``SocketModeClient`` (builtin) opens the WebSocket with ``apps.connections.open`` and the
app-level token (``SLACK_APP_TOKEN``), reconnects by itself, and hands each envelope to
``SlackControl.on_request``, which acknowledges it (a slash command's reply rides on the ack):

- a command from a user not on ``SLACK_ALLOWED_USERS`` is refused;
- ``status`` is answered at once (state, breakers, positions with their live stops from the last
  broker snapshot, today's entries and rejections, heartbeats, DLQ size);
- a state-changing command is answered with Confirm/Cancel buttons whose value is a one-time nonce
  (``avwap:state:notifier:nonce:<nonce>``, expiring after ``SLACK_CONFIRM_TTL_S``); the Confirm click
  takes the nonce with ``GETDEL`` (so it works once), checks it is the same user and not expired,
  and carries the command out through Redis (``shared.controls``: the state key, ``avwap:control``,
  the audit log) — never through a broker key. The outcome is posted to the channel.

Every command, confirmation and refusal is appended to the audit log (``shared.audit``).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import redis

from shared import audit
from shared.breakers import decode_book
from shared.bus import live_consumers
from shared.controls import Refused, read_state, rearm_breaker, request_flatten, transition
from shared.schemas import BrokerSnapshot, OrderEvent, Rejection, SchemaError, decode
from shared.settings.base import comma_list
from shared.streams import BREAKERS_KEY, BROKER, DLQ, ORDERS, REJECTIONS, state_key

from .slack_commands import (
    CANCEL,
    CHANGES,
    CONFIRM,
    HELP,
    Command,
    Pending,
    StatusInputs,
    allowed,
    confirm_reply,
    describe,
    parse,
    reply,
    status_text,
)

log = logging.getLogger(__name__)
SCAN = 2000  # stream entries read back for the status (newest first)


def nonce_key(nonce: str) -> str:
    return state_key("notifier", "nonce", nonce)


class SlackControl:
    def __init__(self, r: redis.Redis, allowlist: str | Iterable[str], ttl_s: float, post: Callable[[str, str], None] | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.r = r
        self.allowlist = comma_list(allowlist)
        self.ttl_s = ttl_s
        self.post = post  # (channel id, text): the outcome of a confirmation, in the channel
        self.clock = clock

    # -- envelopes ------------------------------------------------------------------------
    def on_request(self, client: Any, req: Any) -> None:
        """slack-sdk's request listener: acknowledge every envelope (a command's reply on the ack)."""
        from slack_sdk.socket_mode.response import SocketModeResponse

        payload: dict[str, Any] | None = None
        result = ""
        channel = ""
        try:
            if req.type == "slash_commands":
                payload = self.on_command(req.payload)
            elif req.type == "interactive" and req.payload.get("type") == "block_actions":
                channel = (req.payload.get("channel") or {}).get("id", "")
                result = self.on_action(req.payload)
        finally:
            client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id, payload=payload))
        if result and channel and self.post is not None:
            try:
                self.post(channel, result)
            except Exception as exc:  # noqa: BLE001 - the command was carried out; a failed post is only logged
                log.warning("slack: could not post the outcome: %s", exc)

    def _audit(self, kind: str, user: str, action: str, **detail: str) -> None:
        audit.append(self.r, kind, f"slack:{user}", action, self.clock(), detail)  # type: ignore[arg-type]

    def on_command(self, p: dict[str, Any]) -> dict[str, Any]:
        user, text = str(p.get("user_id", "")), str(p.get("text", "")).strip()
        action = f"/avwap {text}".strip()
        if not allowed(user, self.allowlist):
            self._audit("refusal", user, action, why="user not on SLACK_ALLOWED_USERS")
            return reply(f"Refused: <@{user}> may not control avwap.")
        cmd = parse(text)
        if isinstance(cmd, str):
            self._audit("refusal", user, action, why=cmd)
            return reply(f"{cmd}. {HELP}")
        self._audit("command", user, action, verb=cmd.verb)
        if cmd.verb == "help":
            return reply(HELP)
        if cmd.verb == "status":
            return reply(self.status())
        nonce = secrets.token_urlsafe(18)
        now = self.clock()
        pend = Pending(nonce=nonce, user=user, command=cmd, created_ns=now, expires_ns=now + int(self.ttl_s * 1e9))
        self.r.set(nonce_key(nonce), msgspec.json.encode(pend), px=max(int(self.ttl_s * 1000), 1))
        return confirm_reply(cmd, nonce, self.ttl_s)

    def on_action(self, p: dict[str, Any]) -> str:
        user = str((p.get("user") or {}).get("id", ""))
        actions = p.get("actions") or []
        act = actions[0] if actions else {}
        action_id, nonce = str(act.get("action_id", "")), str(act.get("value", ""))
        if not allowed(user, self.allowlist):
            self._audit("refusal", user, f"button {action_id}", why="user not on SLACK_ALLOWED_USERS")
            return f"Refused: <@{user}> may not control avwap."
        if action_id not in (CONFIRM, CANCEL):
            return ""
        pend = self._pending(self.r.get(nonce_key(nonce)) if nonce else None)
        now = self.clock()
        if pend is not None and pend.user != user:  # another operator's button: refused, the nonce stays
            self._audit("refusal", user, f"button {action_id}", why=f"confirmation belongs to {pend.user}")
            return f"Refused: only <@{pend.user}> can confirm their command."
        # one use: GETDEL takes the nonce; a second click (or a concurrent one) finds nothing
        if pend is None or self._pending(self.r.getdel(nonce_key(nonce))) is None or now > pend.expires_ns:
            self._audit("refusal", user, f"button {action_id}", why="confirmation expired or already used")
            return "Refused: that confirmation has expired or was already used; send the command again."
        if action_id == CANCEL:
            self._audit("confirmation", user, f"cancel {pend.command.verb}", outcome="cancelled")
            return f"Cancelled: {describe(pend.command)}"
        self._audit("confirmation", user, f"confirm {pend.command.verb} {pend.command.target}".strip(),
                    outcome="confirmed")
        try:
            return self.execute(pend.command, user, now)
        except Refused as exc:
            self._audit("refusal", user, f"{pend.command.verb}", why=str(exc))
            return f"Refused: {exc}"

    @staticmethod
    def _pending(raw: bytes | None) -> Pending | None:
        if raw is None:
            return None
        try:
            return msgspec.json.decode(raw, type=Pending)
        except msgspec.DecodeError:
            return None

    def execute(self, cmd: Command, user: str, ts: int) -> str:
        who = f"slack:{user}"
        assert cmd.verb in CHANGES
        if cmd.verb == "flatten":
            syms = [] if cmd.target == "ALL" else cmd.target.split(",")
            _, req = request_flatten(self.r, syms, who=who, source="slack", reason=cmd.reason, ts=ts)
            return f"<@{user}>: flatten {cmd.target} requested ({req.request_id}); trading state REDUCING"
        if cmd.verb == "rearm":
            rearm_breaker(self.r, cmd.target, who=who, source="slack", reason=cmd.reason, ts=ts)  # type: ignore[arg-type]
            return f"<@{user}>: breaker {cmd.target} re-armed (state unchanged: `/avwap resume` when ready)"
        state = {"reduce": "REDUCING", "halt": "HALTED", "resume": "ACTIVE"}[cmd.verb]
        ch = transition(self.r, state, who=who, source="slack", reason=cmd.reason, ts=ts)  # type: ignore[arg-type]
        return f"<@{user}>: trading state {ch.state} (was {ch.previous}) — {cmd.reason}"

    # -- status -------------------------------------------------------------------------------
    def status(self) -> str:
        r = self.r
        view = read_state(r)
        book = decode_book(r.get(BREAKERS_KEY))  # type: ignore[arg-type]
        snap = self._latest(BROKER, BrokerSnapshot)
        d = snap.trade_date if snap else ""
        stops: dict[str, list[tuple[float, int]]] = {}
        for o in (snap.open_orders if snap else []):
            if o.side == "sell" and o.stop_price is not None:
                stops.setdefault(o.symbol, []).append((o.stop_price, o.qty - o.filled_qty))
        entries = [f"{e.symbol} {e.fill_qty}@{e.fill_price}" for e in self._all(ORDERS, OrderEvent)
                   if e.kind == "entry" and e.fill_qty > 0 and e.trade_date == d]
        rejs = [f"{j.symbol}: {','.join(j.reasons)}" for j in self._all(REJECTIONS, Rejection) if j.trade_date == d]
        hb: dict[str, int] = {}
        for g, _ in live_consumers(r):
            hb[g] = hb.get(g, 0) + 1
        figures: dict[str, Any] = {}
        if book is not None and book.equity is not None:
            figures = {"now": book.equity, "open": book.open_equity, "high": book.hwm}
        rec = view.record
        return status_text(StatusInputs(
            state=view.state, state_by=rec.who if rec else "", state_reason=rec.reason if rec else view.detail,
            tripped=["book_unreadable"] if book is None else sorted(book.tripped), breaker_figures=figures,
            session=d, positions=[(p.symbol, p.qty, p.avg_entry_price) for p in (snap.positions if snap else [])],
            stops=stops, entries=entries[::-1], rejections=rejs[::-1], heartbeats=hb, dlq=int(r.xlen(DLQ))))

    def _all(self, stream: str, cls: type) -> list[Any]:
        out = []
        for _, f in self.r.xrevrange(stream, count=SCAN):  # type: ignore[union-attr]
            try:
                m = decode(f.get(b"data", b""))
            except SchemaError:
                continue
            if isinstance(m, cls):
                out.append(m)
        return out

    def _latest(self, stream: str, cls: type) -> Any:
        found = self._all(stream, cls)
        return found[0] if found else None


def start_socket_mode(r: redis.Redis, app_token: str, bot_token: str, base_url: str, channel: str, allowlist: str | Iterable[str],
                      ttl_s: float) -> Any:
    """Connect slack-sdk's ``SocketModeClient`` and serve ``/avwap`` (returns the client; ``close()`` it)."""
    from slack_sdk import WebClient
    from slack_sdk.socket_mode import SocketModeClient

    web = WebClient(token=bot_token, base_url=base_url)

    def post(channel_id: str, text: str) -> None:
        web.chat_postMessage(channel=channel_id or channel, text=text)

    control = SlackControl(r, allowlist, ttl_s, post=post)
    client = SocketModeClient(app_token=app_token, web_client=web, logger=logging.getLogger("slack_sdk.socket_mode"))
    client.socket_mode_request_listeners.append(control.on_request)
    client.connect()
    return client
