"""``/avwap`` Slack commands: the pure part (parsing, the allowlist rule, replies, the status text).

Commands: ``status``, ``reduce [reason…]``, ``halt [reason…]``, ``resume [reason…]``,
``flatten SYMBOL[,SYMBOL…]|all [reason…]``, ``rearm BREAKER reason…``, ``help``. Every command is
refused unless the Slack user id is on ``SLACK_ALLOWED_USERS``; a command that changes anything is
not carried out at once: the reply carries a Confirm button whose value is a one-time nonce that
expires after ``SLACK_CONFIRM_TTL_S``. The shell (``slack_control.py``) does the I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import msgspec

from shared.schemas import BREAKERS
from shared.settings.base import comma_list

Verb = Literal["status", "reduce", "halt", "resume", "flatten", "rearm", "help"]
CHANGES: frozenset[str] = frozenset({"reduce", "halt", "resume", "flatten", "rearm"})
CONFIRM, CANCEL = "avwap_confirm", "avwap_cancel"
HELP = ("`/avwap status` | `reduce [reason]` | `halt [reason]` | `resume [reason]` | "
        "`flatten SYMBOL|all [reason]` | `rearm BREAKER reason`")


class Command(msgspec.Struct, frozen=True, kw_only=True):
    verb: Verb
    target: str = ""  # flatten: comma-separated symbols or "ALL"; rearm: the breaker
    reason: str = ""


class Pending(msgspec.Struct, frozen=True, kw_only=True):
    """A command waiting for its Confirm click (stored under its nonce)."""

    nonce: str
    user: str
    command: Command
    created_ns: int
    expires_ns: int


def parse(text: str) -> Command | str:
    """The command in a slash command's text, or why it is not one."""
    words = text.split()
    if not words:
        return Command(verb="help")
    verb, rest = words[0].lower(), words[1:]
    if verb in ("status", "help"):
        return Command(verb=verb)  # type: ignore[arg-type]
    if verb in ("reduce", "halt", "resume"):
        return Command(verb=verb, reason=" ".join(rest) or "via Slack")  # type: ignore[arg-type]
    if verb == "flatten":
        if not rest:
            return "flatten needs a symbol or `all`"
        target = "ALL" if rest[0].lower() == "all" else ",".join(sorted({s.upper() for s in rest[0].split(",") if s}))
        if not target or not all(s.isalnum() or s == "ALL" or "." in s for s in target.split(",")):
            return f"not a symbol: {rest[0]!r}"
        return Command(verb="flatten", target=target, reason=" ".join(rest[1:]) or "via Slack")
    if verb == "rearm":
        if not rest or rest[0] not in BREAKERS:
            return f"rearm needs a breaker ({', '.join(BREAKERS)}) and a reason"
        if len(rest) < 2:
            return "rearm needs a reason"
        return Command(verb="rearm", target=rest[0], reason=" ".join(rest[1:]))
    return f"unknown command {verb!r}"


def allowed(user_id: str, allowlist: str | Iterable[str]) -> bool:
    """Only user ids listed in ``SLACK_ALLOWED_USERS`` may act (empty: nobody)."""
    return user_id in comma_list(allowlist)


def describe(c: Command) -> str:
    return {
        "reduce": "REDUCING (no new entries; exits and stops work)",
        "halt": "HALTED (no new orders but cancels; stops stay at the broker)",
        "resume": "ACTIVE (entries allowed again)",
        "flatten": f"FLATTEN {c.target} (market exits, stops cancelled just before; then REDUCING)",
        "rearm": f"re-arm breaker {c.target}",
    }.get(c.verb, c.verb) + (f" — reason: {c.reason}" if c.reason else "")


def confirm_reply(c: Command, nonce: str, ttl_s: float) -> dict[str, Any]:
    """The ephemeral reply to a state-changing command: what it will do, Confirm / Cancel buttons."""
    text = f"Confirm: {describe(c)}? (expires in {int(ttl_s)} s, one use)"
    return {"response_type": "ephemeral", "text": text, "blocks": [
        {"type": "section", "text": {"type": "mrkdwn", "text": text}},
        {"type": "actions", "block_id": "avwap_confirm", "elements": [
            {"type": "button", "action_id": CONFIRM, "style": "danger", "value": nonce,
             "text": {"type": "plain_text", "text": "Confirm"}},
            {"type": "button", "action_id": CANCEL, "value": nonce, "text": {"type": "plain_text", "text": "Cancel"}},
        ]},
    ]}


def reply(text: str) -> dict[str, Any]:
    return {"response_type": "ephemeral", "text": text}


class StatusInputs(msgspec.Struct, frozen=True, kw_only=True):
    state: str
    state_by: str = ""
    state_reason: str = ""
    tripped: list[str] = []
    breaker_figures: dict[str, Any] = {}
    session: str = ""
    positions: list[tuple[str, int, float]] = []  # symbol, qty, avg price
    stops: dict[str, list[tuple[float, int]]] = {}  # symbol -> live stop orders (price, qty)
    entries: list[str] = []  # "SYM qty@price" filled today
    rejections: list[str] = []  # "SYM: CODES"
    heartbeats: dict[str, int] = {}  # group -> live consumers
    dlq: int = 0


def status_text(s: StatusInputs) -> str:
    lines = [f"*State:* {s.state}" + (f" (by {s.state_by}: {s.state_reason})" if s.state_by else "")]
    lines.append("*Breakers tripped:* " + (", ".join(s.tripped) or "none"))
    if s.breaker_figures:
        lines.append("*Equity:* " + ", ".join(f"{k} {v}" for k, v in s.breaker_figures.items()))
    lines.append(f"*Positions ({s.session or '-'}):*" + ("" if s.positions else " none"))
    for sym, qty, avg in s.positions:
        st = s.stops.get(sym, [])
        stop = ", ".join(f"stop {p} x{q}" for p, q in st) or "NO LIVE STOP"
        lines.append(f"  {sym} {qty} @ {avg} — {stop}")
    lines.append("*Entries today:* " + (", ".join(s.entries) or "none"))
    lines.append("*Rejections today:* " + (", ".join(s.rejections[:15]) or "none")
                 + (f" (+{len(s.rejections) - 15} more)" if len(s.rejections) > 15 else ""))
    lines.append("*Heartbeats:* " + (", ".join(f"{g} {n}" for g, n in sorted(s.heartbeats.items())) or "none"))
    lines.append(f"*DLQ:* {s.dlq}")
    return "\n".join(lines)
