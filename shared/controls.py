"""The trading state (``avwap:control:trading_state``): one key, one reader, one writer.

States (NautilusTrader's vocabulary):

- ``ACTIVE``: every order may go (the other gates still apply).
- ``REDUCING``: no new entries; exits, protective stops (place, replace, cancel) work. The kill
  switch is this state: ``avwap kill-switch on`` = ``avwap state reduce``, env ``KILL_SWITCH=1``
  raises an ACTIVE key to REDUCING.
- ``HALTED``: no new orders of any kind except cancels: no entry, no exit, no stop replace; the
  protective stops stay at the broker. One exception, written down because it only lowers risk: a
  position with *no* live stop (an entry that filled as the halt began) may still get its first stop.

Unreadable (a Redis error, a key of the wrong type, a value that does not decode): entries are
blocked (``KILL_SWITCH_UNREADABLE``) and a critical alert is raised; exits and stops behave as in
REDUCING. A broken key must never cancel or freeze a protective stop: the worst a wrongly assumed
REDUCING does is let an exit or a tighter stop through, both of which lower risk.

The value is a ``TradingState`` (msgspec JSON). A value written before trading states existed
(the kill switch's ``{"on": bool, ...}`` or a bare ``0``/``1``/``true``/``false``) is read as
REDUCING (on) or ACTIVE (off), and the old key ``avwap:control:kill_switch`` is still read (ON
raises the state to REDUCING) until the first transition deletes it.

Every transition is one atomic commit (``shared.audit.transact``, a unit of work of
``shared.unit_of_work``): the key, a ``TradingStateChange`` on ``avwap:control`` (who, why,
when) and an audit record (``shared.audit``). Risk, the executor and exits read the key for every
message they handle, so a transition applies from the next message on.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

import msgspec
import redis

from shared import audit
from shared.ids import stable_id
from shared.schemas import BreakerRearm, FlattenRequest, TradingState, TradingStateChange
from shared.schemas.controls import BreakerName, ControlSource, TradingStateName
from shared.streams import BREAKERS_KEY, CONTROL, LEGACY_KILL_SWITCH_KEY, TRADING_STATE_KEY

log = logging.getLogger(__name__)

StateRead = Literal["ACTIVE", "REDUCING", "HALTED", "UNREADABLE"]
KillSwitchState = Literal["on", "off", "unreadable"]
RANK: dict[str, int] = {"ACTIVE": 0, "REDUCING": 1, "UNREADABLE": 1, "HALTED": 2}

# entry reason codes (risk and executor): the kill switch's codes are kept for REDUCING/unreadable
R_REDUCING = "KILL_SWITCH_ON"
R_HALTED = "TRADING_HALTED"
R_UNREADABLE = "KILL_SWITCH_UNREADABLE"
# order reason code (executor, exits): an exit or a stop replace refused while HALTED
R_ORDER_HALTED = "TRADING_HALTED"
_DEC = msgspec.json.Decoder(TradingState)


class StateView(msgspec.Struct, frozen=True, kw_only=True):
    """What the gates see: the state (``UNREADABLE`` when the key cannot be read) and its record."""

    state: StateRead = "ACTIVE"
    record: TradingState | None = None
    detail: str = ""


ACTIVE_VIEW = StateView()


def parse_state(raw: bytes | str | None) -> StateView:
    """The state a stored value means (None: the key is absent -> ACTIVE)."""
    if raw is None:
        return ACTIVE_VIEW
    try:
        rec = _DEC.decode(raw)
        return StateView(state=rec.state, record=rec)
    except msgspec.DecodeError:
        pass
    legacy = _legacy(raw)
    if legacy == "on":
        return StateView(state="REDUCING", detail="kill switch value (before trading states)")
    if legacy == "off":
        return ACTIVE_VIEW
    return StateView(state="UNREADABLE", detail=f"value does not decode: {raw[:80]!r}")


def _legacy(raw: bytes | str) -> KillSwitchState:
    try:
        val = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return "unreadable"
    if isinstance(val, dict):
        on = val.get("on")
        return ("on" if on else "off") if isinstance(on, bool) else "unreadable"
    if isinstance(val, bool) or (isinstance(val, int) and val in (0, 1)):
        return "on" if val else "off"
    return "unreadable"


def _combine(cur: StateView, legacy_raw: object) -> StateView:
    """The new key's view raised by the old kill-switch key (ON or unreadable blocks entries too)."""
    if legacy_raw is None or cur.state in ("HALTED", "UNREADABLE"):
        return cur
    if isinstance(legacy_raw, Exception):
        return StateView(state="UNREADABLE", detail=f"{LEGACY_KILL_SWITCH_KEY}: {legacy_raw}")
    old = _legacy(legacy_raw)  # type: ignore[arg-type]
    if old == "unreadable":
        return StateView(state="UNREADABLE", detail=f"{LEGACY_KILL_SWITCH_KEY} does not decode")
    if old == "on" and cur.state == "ACTIVE":
        return StateView(state="REDUCING", detail=f"{LEGACY_KILL_SWITCH_KEY} is on")
    return cur


def read_state(r: redis.Redis, *, env_kill_switch: bool = False) -> StateView:
    """The trading state now (never raises for a bad key: unreadable is a state). ``env_kill_switch``
    (``KILL_SWITCH=1``) raises ACTIVE to REDUCING."""
    try:  # one round trip, no script (a read-only user, e.g. the dashboard's, may not run one); WRONGTYPE: the error
        pipe = r.pipeline(transaction=False)
        pipe.get(TRADING_STATE_KEY)
        pipe.get(LEGACY_KILL_SWITCH_KEY)
        raw, legacy = pipe.execute(raise_on_error=False)
        for got in (raw, legacy):
            if isinstance(got, Exception) and not isinstance(got, redis.ResponseError):
                raise got  # a connection error: the whole read failed
    except (redis.RedisError, OSError) as exc:
        log.error("trading state unreadable: %s", exc)
        return StateView(state="UNREADABLE", detail=str(exc))
    return view_of(raw, legacy, env_kill_switch=env_kill_switch)


def view_of(raw: object, legacy: object, *, env_kill_switch: bool = False) -> StateView:
    """The trading state of the two keys' values as read (bytes, None when absent, or the exception the
    read raised, e.g. WRONGTYPE); ``read_state`` reads them, a caller that read them itself calls this."""
    if isinstance(raw, Exception):
        log.error("trading state key unreadable: %s", raw)
        view = StateView(state="UNREADABLE", detail=str(raw))
    else:
        view = _combine(parse_state(raw), legacy)  # type: ignore[arg-type]
    if env_kill_switch and view.state == "ACTIVE":
        return StateView(state="REDUCING", detail="env KILL_SWITCH=1")
    return view


def entry_codes(view: StateView) -> list[str]:
    """Reason codes with which the state refuses a new entry (empty: ACTIVE)."""
    return {"ACTIVE": [], "REDUCING": [R_REDUCING], "HALTED": [R_HALTED], "UNREADABLE": [R_UNREADABLE]}[view.state]


def orders_allowed(view: StateView) -> bool:
    """Exits and stop replaces may be sent (every state but HALTED; unreadable counts as REDUCING)."""
    return view.state != "HALTED"


def read_kill_switch(r: redis.Redis) -> KillSwitchState:
    """The kill switch as the trading state shows it: on (REDUCING or HALTED), off (ACTIVE) or unreadable."""
    return {"ACTIVE": "off", "REDUCING": "on", "HALTED": "on", "UNREADABLE": "unreadable"}[read_state(r).state]  # type: ignore[return-value]


def parse_kill_switch(raw: bytes | str | None) -> KillSwitchState:
    """The kill switch a stored value means (as ``read_kill_switch``, for one value)."""
    return {"ACTIVE": "off", "REDUCING": "on", "HALTED": "on", "UNREADABLE": "unreadable"}[parse_state(raw).state]  # type: ignore[return-value]


def kill_switch_value(on: bool, reason: str, at: float) -> str:
    """A kill-switch value as written before trading states (still read: on -> REDUCING); tests use it."""
    return json.dumps({"on": on, "reason": reason, "at": at}, sort_keys=True)


# -- transitions -----------------------------------------------------------------------------
class Refused(Exception):
    """A transition that must not happen (e.g. resume while a breaker is tripped)."""


def _tripped(raw: bytes | None) -> list[str]:
    from shared.breakers import tripped_names

    return tripped_names(raw)


def transition(r: redis.Redis, state: TradingStateName, *, who: str, source: ControlSource, reason: str, ts: int,
               breaker: str | None = None, figures: dict[str, float] | None = None, never_lower: bool = False,
               flatten: FlattenRequest | None = None) -> TradingStateChange:
    """Set the state: key + ``TradingStateChange`` on ``avwap:control`` + audit record, one commit
    (with ``flatten``: the request and its audit record too, after the change).

    ``never_lower`` (breaker trips): a HALTED state is not lowered to REDUCING. ACTIVE is refused
    (``Refused``) while a breaker is tripped or the breakers' book is unreadable: a tripped breaker
    is re-armed first (``avwap breakers rearm``), never bypassed.
    """
    if not reason.strip():
        raise Refused("a reason is required")

    def step(pipe: redis.client.Pipeline):  # noqa: ANN202
        if state == "ACTIVE":
            tripped = _tripped(pipe.get(BREAKERS_KEY))  # type: ignore[arg-type]
            if tripped:
                raise Refused(f"breaker(s) tripped: {', '.join(tripped)}; "
                              "re-arm with `avwap breakers rearm NAME --reason ...` first")
        staged = stage_transition(pipe, state, who=who, source=source, reason=reason, ts=ts, breaker=breaker,
                                  figures=figures, never_lower=never_lower)
        recs = [staged.record]
        if flatten is not None:
            recs.append(audit.make(audit.line_of(staged.record), "flatten", who,
                                   "flatten " + (",".join(flatten.symbols) or "ALL"), ts,
                                   {"request_id": flatten.request_id, "reason": flatten.reason}))

        def write(w: audit.Writes) -> None:
            staged.write(w, with_record=False)
            if flatten is not None:
                w.emit(CONTROL, flatten)
            for x in recs:
                audit.push(w, x)
        return staged.change, write

    return audit.transact(r, step, watch=(TRADING_STATE_KEY, BREAKERS_KEY))


class Staged(msgspec.Struct, frozen=True, kw_only=True):
    """A transition read and computed inside a WATCH; ``write`` queues it in the commit (``audit.transact``)."""

    change: TradingStateChange
    value: TradingState
    record: audit.AuditRecord

    def write(self, w: audit.Writes, *, with_record: bool = True) -> None:
        w.set(TRADING_STATE_KEY, msgspec.json.encode(self.value))
        w.delete(LEGACY_KILL_SWITCH_KEY)
        w.emit(CONTROL, self.change)
        if with_record:
            audit.push(w, self.record)


def stage_transition(pipe: redis.client.Pipeline, state: TradingStateName, *, who: str, source: ControlSource,
                     reason: str, ts: int, breaker: str | None = None, figures: dict[str, float] | None = None,
                     never_lower: bool = False, after: audit.AuditRecord | None = None,
                     current: TradingStateName | None = None) -> Staged:
    """Inside a WATCH of the state key and the audit log: the change, the new value and its audit
    record (``after``: a record staged earlier in the same transaction, which this one follows;
    ``current``: the state that earlier change sets, instead of the key's)."""
    cur = StateView(state=current) if current is not None else parse_state(pipe.get(TRADING_STATE_KEY))  # type: ignore[arg-type]
    target = state
    if never_lower and RANK[cur.state] > RANK[state] and cur.state != "UNREADABLE":
        target = cur.state  # type: ignore[assignment]
    change = TradingStateChange(
        change_id=stable_id("tc", who, source, reason, ts, cur.state, target), state=target, previous=cur.state,
        who=who, source=source, reason=reason, ts=ts, breaker=breaker, figures=dict(figures or {}))  # type: ignore[arg-type]
    detail = {"state": target, "previous": cur.state, "reason": reason, "source": source, "change_id": change.change_id}
    if breaker:
        detail["breaker"] = breaker
        detail.update({f"figure:{k}": f"{v}" for k, v in sorted((figures or {}).items())})
    kind = "breaker_trip" if breaker else "state_change"
    if after is None:
        rec = audit.stage(pipe, kind, who, f"state {target}", ts, detail)
    else:
        rec = audit.make(audit.line_of(after), kind, who, f"state {target}", ts, detail)
    value = TradingState(state=target, on=target != "ACTIVE", change_id=change.change_id, who=who, source=source,
                         reason=reason, ts=ts)
    return Staged(change=change, value=value, record=rec)


def flatten_request(symbols: list[str], *, who: str, source: ControlSource, reason: str, ts: int) -> FlattenRequest:
    """The request for ``symbols`` (empty: every position), upper-cased and sorted."""
    syms = sorted({s.strip().upper() for s in symbols if s.strip()})
    return FlattenRequest(request_id=stable_id("fl", who, reason, ts, syms), symbols=syms, all_positions=not syms,
                          who=who, source=source, reason=reason, ts=ts)


def request_flatten(r: redis.Redis, symbols: list[str], *, who: str, source: ControlSource, reason: str,
                    ts: int) -> tuple[TradingStateChange, FlattenRequest]:
    """REDUCING from now (HALTED too: the operator's flatten overrides a halt for its exits), and a
    ``FlattenRequest`` for the executor, in one commit."""
    req = flatten_request(symbols, who=who, source=source, reason=reason, ts=ts)
    change = transition(r, "REDUCING", who=who, source=source, reason=f"flatten: {reason}", ts=ts, flatten=req)
    return change, req


def rearm_breaker(r: redis.Redis, name: BreakerName, *, who: str, source: ControlSource, reason: str,
                  ts: int) -> BreakerRearm:
    """Re-arm a tripped breaker (``Refused`` if it is not tripped or no reason is given): the book,
    a ``BreakerRearm`` on ``avwap:control`` and an audit record in one commit. An unreadable book
    is replaced by a fresh one (every breaker re-armed, measurements from the next figures). The
    trading state is not changed: ``resume`` is a separate, explicit step."""
    from shared.breakers import BreakerBook, decode_book, encode_book, rearm

    if not reason.strip():
        raise Refused("a reason is required")

    def step(pipe: redis.client.Pipeline):  # noqa: ANN202
        book = decode_book(pipe.get(BREAKERS_KEY))  # type: ignore[arg-type]
        if book is None:
            book, note = BreakerBook(), "book was unreadable: replaced by a fresh one"
        elif not rearm(book, name):
            raise Refused(f"breaker {name} is not tripped")
        else:
            note = ""
        msg = BreakerRearm(rearm_id=stable_id("ra", name, who, reason, ts), breaker=name, who=who, source=source,
                           reason=reason, ts=ts)
        detail = {"breaker": name, "reason": reason, "source": source}
        if note:
            detail["note"] = note
        rec = audit.stage(pipe, "breaker_rearm", who, f"rearm {name}", ts, detail)

        def write(w: audit.Writes) -> None:
            w.set(BREAKERS_KEY, encode_book(book))
            w.emit(CONTROL, msg)
            audit.push(w, rec)
        return msg, write

    return audit.transact(r, step, watch=(BREAKERS_KEY,))


def recent_changes(r: redis.Redis, count: int = 5) -> list[TradingStateChange]:
    """The last ``count`` transitions on ``avwap:control`` (oldest first; undecodable entries skipped)."""
    from shared.schemas import SchemaError, decode

    out: list[TradingStateChange] = []
    for _, f in r.xrevrange(CONTROL, count=200):  # type: ignore[union-attr]
        try:
            m = decode(f.get(b"data", b""))
        except SchemaError:
            continue
        if isinstance(m, TradingStateChange):
            out.append(m)
            if len(out) >= count:
                break
    return out[::-1]
