"""Risk worker: reads clock, candidates, portfolio decisions, broker snapshots and order events;
publishes EntryIntents / Rejections / alerts.

Each message is one unit of work (``Bus.unit_of_work``): WATCH the state's keys (and the kill
switch), read the state and the controls, run the pure ``core.step``, then commit (XACK the
message and, only if that XACK won, append the new records to the state's log, SET its root and XADD
the outputs; ``store.py``) in one EXEC; the
handler returns the unit's ``Committed`` so the bus does not ack again. A concurrent replica's commit
aborts the EXEC and the step is recomputed on the new state, so two replicas never together
exceed a cap; a consumer whose entry another one already committed writes nothing (a lost
race, counted by the bus); a crash before EXEC leaves nothing (the message is redelivered),
after EXEC nothing is pending.
The decision artifact ``<ARTIFACTS_DIR>/risk_decisions/<D>.jsonl`` is rewritten afterwards from
the committed state (sorted, canonical), so every replica writes the same bytes; a file never
gets shorter (``never_shorter``: records the state lost are kept, logged and alerted).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import msgspec
import redis

from shared.alerts import make_alert
from shared.artifacts import canonical_line, code_version, under, write_atomic
from shared.bus import Bus, Committed, Delivery, Emit, entry_id
from shared.controls import StateView, read_state, view_of
from shared.live_token import read_token_file, token_status
from shared.reads import TYPED_VALUES_LUA, evalsha, typed_value
from shared.regime import Table
from shared.schemas import Alert, Message, SessionEvent
from shared.service import ServiceContext, ServiceSpec, Worker, run_service
from shared.settings import Settings
from shared.streams import (
    ALERTS,
    BROKER,
    CANDIDATES,
    CLOCK,
    DLQ,
    INTENTS,
    LEGACY_KILL_SWITCH_KEY,
    ORDERS,
    PORTFOLIO,
    REGIME,
    REJECTIONS,
    TRADING_STATE_KEY,
)

from .core import MODES, Controls, Limits, RiskState, encode_state, step
from .store import LOG_KEY, STATE_KEY, added, all_entries, from_stored, load_state, marks, root_of

log = logging.getLogger(__name__)

GROUP = "risk"
ARTIFACT_SUBDIR = "risk_decisions"
STREAMS = [CLOCK, CANDIDATES, PORTFOLIO, REGIME, BROKER, ORDERS]
DLQ_SCAN = 1000


def live_token_status(settings: Settings) -> str:
    core = settings.core
    if core.execution_mode != "LIVE":
        return "n/a"
    token = core.live_confirm_token.get_secret_value() if core.live_confirm_token else ""
    return token_status(token, read_token_file(core.live_confirm_token_file))


def dead_lettered_decisions(r: redis.Redis) -> tuple[tuple[int, str, str], ...]:
    """Decision batches the risk group dead-lettered: (source entry ms, date or "", code)."""
    out = []
    for _, f in r.xrevrange(DLQ, count=DLQ_SCAN):
        if f.get(b"dlq_group") != GROUP.encode() or f.get(b"dlq_source_stream") != PORTFOLIO.encode():
            continue
        raw = f.get(b"data", b"")
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if data is None:
            if f.get(b"type") != b"portfolio_decision_batch":
                continue
            code, date = "DECISION_JSON_INVALID", ""
        else:
            if not isinstance(data, dict) or data.get("type", f.get(b"type", b"").decode()) != "portfolio_decision_batch":
                continue
            code, date = "DECISION_SCHEMA_INVALID", data.get("date") if isinstance(data.get("date"), str) else ""
        ms = entry_id(f.get(b"dlq_source_id"))[0]
        out.append((ms, date, code))
    return tuple(sorted(out))


def controls_for(r: redis.Redis, settings: Settings, msg: Message | None, view: StateView | None = None) -> Controls:
    """The control inputs of one step, read now (never cached); ``msg`` decides whether the DLQ is read;
    ``view``: the trading state when the caller read it already."""
    core = settings.core
    dlq: tuple[tuple[int, str, str], ...] = ()
    if settings.risk.portfolio_decision_enforce and isinstance(msg, SessionEvent) and msg.phase != "PRE_MARKET":
        dlq = dead_lettered_decisions(r)
    state = (view if view is not None else read_state(r)).state
    kill = {"ACTIVE": "off", "REDUCING": "on", "HALTED": "on"}.get(state, "unreadable")
    return Controls(kill_switch=kill, kill_switch_env=core.kill_switch, trading_state=state, mode=core.execution_mode,
                    live_trading=core.live_trading, live_token=live_token_status(settings), decision_dlq=dlq)


def artifact_path(settings: Settings, session: str) -> Path:
    return under(settings.core.artifacts_dir, ARTIFACT_SUBDIR, f"{session}.jsonl")


class Lines:
    """A memo of canonical lines (canonical_json is the slow part), keyed by a record's msgspec JSON."""

    def __init__(self, cap: int = 100_000) -> None:
        self.cap = cap
        self.lines: dict[bytes, bytes] = {}

    def __call__(self, rec: object) -> bytes:
        key = _ENC.encode(rec)
        line = self.lines.get(key)
        if line is None:
            if len(self.lines) > self.cap:
                self.lines.clear()
            line = self.lines[key] = canonical_line(rec)
        return line


_ENC = msgspec.json.Encoder()


def artifact_bytes(st: RiskState, session: str, line: Callable[[object], bytes] = canonical_line) -> bytes:
    """Canonical JSONL of a session: decisions in decision order, then analytics decisions by (symbol, id).
    ``line``: how a record becomes its line (the worker passes its ``Lines`` memo)."""
    decided = sorted(st.decided.get(session, {}).values(), key=lambda x: x.ord)
    lines = [line(r) for r in decided]
    shadow = sorted(st.shadow.get(session, {}).values(), key=lambda x: (x.symbol, x.decision_id))
    lines += [line(r) for r in shadow]
    return b"".join(lines)


def _record_key(line: bytes) -> str | None:
    """The identity of a telemetry line: its kind and candidate id / decision id (None: not a record)."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not isinstance(rec, dict):
        return None
    ident = rec.get("candidate_id") if rec.get("kind") == "decision" else rec.get("decision_id")
    return f"{rec.get('kind')}:{ident}"


def never_shorter(old: bytes, new: bytes) -> tuple[bytes, int]:
    """``new``, preceded by the lines of ``old`` whose record ``new`` does not have (and the count).

    The file is rendered from risk's state; if the state lost records that the file holds (Redis
    data lost, a flushed database), those lines are kept, first, in their order, so a day's file
    never gets shorter. A line whose record ``new`` has (re-rendered) is replaced by it.
    """
    if not old or old == new:
        return new, 0
    have = set(new.splitlines())
    missing = [ln for ln in old.splitlines() if ln.strip() and ln not in have]
    if not missing:
        return new, 0
    keys = {_record_key(ln) for ln in new.splitlines()}
    kept = [ln for ln in missing if (k := _record_key(ln)) is None or k not in keys]
    return b"".join(ln + b"\n" for ln in kept) + new, len(kept)


def write_artifacts(r: redis.Redis, settings: Settings, sessions: list[str],
                    committed: tuple[bytes, RiskState] | None = None,
                    line: Callable[[object], bytes] = canonical_line) -> list[tuple[str, int]]:
    """Rewrite the sessions' artifacts from the committed state until the state did not move meanwhile.

    ``committed`` is the (bytes, state) this process just committed, to skip one read. Returns the
    sessions whose file held records the state no longer has, with how many (kept: ``never_shorter``).
    """
    gaps: list[tuple[str, int]] = []
    for _ in range(20):
        if committed is not None:
            raw, st = committed
            committed = None
        else:
            raw, st = load_state(r)
        gaps = []
        moved = False
        for s in sessions:
            if s not in st.decided and s not in st.shadow:
                continue  # pruned from the state (KEEP_DATES): its file is final, never touched again
            path = artifact_path(settings, s)
            try:
                old = path.read_bytes()
            except FileNotFoundError:
                old = b""
            data, kept = never_shorter(old, artifact_bytes(st, s, line))
            if kept and state_moved(r, raw):
                moved = True  # the file may be from a newer state than ours: start again from that one
                break
            if kept:
                gaps.append((s, kept))
            if data != old:
                write_atomic(path, data)
        if not moved and not state_moved(r, raw):
            return gaps
    return gaps


# One round trip under the WATCH: the root's revision (its first field), the root and the record log unless
# this process holds that revision (ARGV: held revision, root length and log length, "" when none), and each
# control key's type and value. KEYS: risk's root, its record log, trading state, legacy kill switch.
_READ_LUA = """
local rev = string.match(redis.call('GETRANGE', KEYS[1], 0, 40), '^{"rev":(%d+)[,}]') or ''
local len = redis.call('STRLEN', KEYS[1])
local llen = redis.call('LLEN', KEYS[2])
local blob, log = false, false
if rev == '' or rev ~= ARGV[1] or tostring(len) ~= ARGV[2] or tostring(llen) ~= ARGV[3] then
  blob = redis.call('GET', KEYS[1])
  log = redis.call('LRANGE', KEYS[2], 0, -1)
end
local out = {rev, blob, log}""" + TYPED_VALUES_LUA.replace("{first}", "3") + "return out\n"
_READ_SHA = hashlib.sha1(_READ_LUA.encode()).hexdigest()


class StateCache(msgspec.Struct):
    """The state this process last committed or read: its revision, its root's bytes, its value, and whether
    the stored log is this state's. A step reuses the value while the stored revision, root length and log
    length are the same (no fetch, no decode); every commit of the state bumps the revision
    (``transact``). Emptied before a step changes the value in place, refilled after the commit."""

    rev: int = -1
    raw: bytes = b""
    state: RiskState | None = None
    log_ok: bool = False


def _read(r: redis.Redis, held: StateCache) -> tuple[bytes | None, RiskState, bool, object, object]:
    """(root bytes, state, whether the stored log is its own, trading state value, legacy kill-switch
    value), in one round trip."""
    kept = held.state
    _rev, blob, entries, t1, v1, t2, v2 = evalsha(
        r, _READ_LUA, _READ_SHA, [STATE_KEY, LOG_KEY, TRADING_STATE_KEY, LEGACY_KILL_SWITCH_KEY],
        [held.rev if kept is not None else "", len(held.raw), kept.records if kept is not None else ""])
    if blob is None and kept is not None and _rev:
        raw, st, log_ok = held.raw, kept, held.log_ok
    else:
        raw = blob
        st, log_ok = from_stored(blob, entries)
    return raw, st, log_ok, typed_value(t1, v1), typed_value(t2, v2)


def _with_rev(body: bytes, old: int, new: int) -> bytes:
    """``body`` (a state encoded with revision ``old``) with revision ``new`` (its first field)."""
    head = b'{"rev":%d' % old
    assert body.startswith(head), "RiskState.rev must be its first field"
    return b'{"rev":%d' % new + body[len(head):]


def transact(bus: Bus, settings: Settings, limits: Limits, msg: Message, d: Delivery | None,
             held: StateCache | None = None) -> tuple[Committed, list[str], bytes, RiskState]:
    """Run one step in a unit of work: state + outputs + ack in one commit (``Bus.unit_of_work``).

    The state is stored as a root and a record log (``store.py``): the commit appends the step's new
    records to the log, or rewrites the log when the step dropped some (a prune) or the stored log is not
    the state's, and sets the root when anything changed. Returns the bus answer, the sessions whose
    artifact changed and the committed state (root bytes and value). When another consumer had already
    acked the entry (a real race) nothing is written: ``Committed(lost_race=True)`` and no session changed.
    ``held``: this process's ``StateCache`` (updated).
    """
    held = held if held is not None else StateCache()
    entry_ms = entry_id(d.entry_id)[0] if d is not None else 0
    for uow in bus.unit_of_work(GROUP, d, watch=[STATE_KEY, LOG_KEY, TRADING_STATE_KEY, LEGACY_KILL_SWITCH_KEY]):
        with uow:
            raw, state, log_ok, ts_raw, legacy_raw = _read(uow.r, held)
            held.state, held.raw = None, b""  # the step changes ``state`` in place
            controls = controls_for(uow.r, settings, msg, view=view_of(ts_raw, legacy_raw))
            rev, records, before = state.rev, state.records, marks(state)
            res = step(state, msg, controls, limits, entry_ms=entry_ms, copy=False)
            new_entries = added(before, res.state) if log_ok else None
            rewrite = new_entries is None
            if rewrite:
                new_entries = all_entries(res.state)
                uow.delete(LOG_KEY)
                records = 0
            if new_entries:
                uow.rpush(LOG_KEY, *new_entries)
            res.state.rev, res.state.records = rev, records + len(new_entries)
            new = encode_state(root_of(res.state))
            if new != raw or rewrite:
                res.state.rev = rev + 1
                new = _with_rev(new, rev, rev + 1)
                uow.set(STATE_KEY, new)
            for out, m in res.emits:
                uow.emit(out, m)
    answer = uow.result
    assert answer is not None
    if answer.lost_race:
        raw, st = load_state(bus.r)
        return answer, [], raw, st
    held.rev, held.raw, held.state, held.log_ok = res.state.rev, new, res.state, True
    return answer, res.dates, new, res.state


def state_moved(r: redis.Redis, raw: bytes | None) -> bool:
    """Whether the stored state is no longer ``raw``: by its revision when it has one (a GETRANGE)."""
    head = (raw or b"").partition(b",")[0]
    if head.startswith(b'{"rev":') and head[7:].isdigit():
        return r.getrange(STATE_KEY, 0, len(head)) != head + b","
    return r.get(STATE_KEY) != raw


def limits_for(settings: Settings) -> Limits:
    """The core's limits, with what every telemetry line records: settings hash, code version, run id."""
    limits = Limits.from_settings(settings.risk, settings.hash(), code_version=code_version(),
                                  run_id=settings.resolved_run_id())
    if settings.regime.regime_modulation:
        limits = msgspec.structs.replace(limits, modulation=Table.from_settings(settings.regime))
    return limits


def mode_unknown_alert(mode: str) -> Alert:
    """The start-up alert of a risk worker whose EXECUTION_MODE is unknown (it refuses every entry)."""
    return make_alert(GROUP, "mode_unknown", f"risk: EXECUTION_MODE {mode!r} is unknown; every entry is refused "
                      "(MODE_UNKNOWN)", severity="critical", text="set EXECUTION_MODE to one of " + ", ".join(MODES)
                      + " and restart risk", runbook="risk-fail-closed", dedup=f"mode_unknown:{mode}")


class Risk(Worker):
    """The risk worker: one unit of work per message, then the artifacts of the sessions it changed."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.limits = limits_for(ctx.settings)
        self.lines = Lines()
        self.gaps_alerted: set[tuple[str, int]] = set()  # (session, count) alerted by this process
        self.held = StateCache()  # the state this process last committed (no fetch, no decode while current)

    def handle(self, msg: Message, d: Delivery) -> Committed:
        ctx = self.ctx
        try:
            answer, dates, raw, st = transact(ctx.bus, self.settings, self.limits, msg, d, self.held)
        except redis.RedisError as exc:
            log.error("risk: Redis error, no entry made (message stays pending): %s", exc)
            with contextlib.suppress(redis.RedisError):
                ctx.alerts.alert("risk_redis_error", "risk: Redis error, entries paused (fail closed)",
                                 severity="critical", text=str(exc)[:500], dedup=f"redis-error:{d.stream}:{d.entry_id}")
            raise
        if dates:
            self.report_gaps(write_artifacts(ctx.r, self.settings, dates, committed=(raw, st), line=self.lines))
        return answer

    def start(self) -> list[Emit]:
        """Rewrite the artifacts of every session in the state (after a crash between commit and write);
        alert at once when the mode is unknown (every decision will also be refused and alerted)."""
        ctx = self.ctx
        _, st = load_state(ctx.r)
        self.report_gaps(write_artifacts(ctx.r, ctx.settings, sorted(set(st.decided) | set(st.shadow)), line=self.lines))
        if not ctx.settings.core.mode_known:
            log.critical("risk: EXECUTION_MODE %r is unknown: every entry will be refused (MODE_UNKNOWN)",
                         ctx.settings.core.execution_mode)
            return [(ALERTS, mode_unknown_alert(ctx.settings.core.execution_mode))]
        return []

    def report_gaps(self, gaps: list[tuple[str, int]]) -> None:
        """Log and alert (once per session and count in this process) that risk's state lost decisions."""
        ctx = self.ctx
        for session, n in gaps:
            if (session, n) in self.gaps_alerted:
                continue
            self.gaps_alerted.add((session, n))
            log.error("risk: %s holds %d records risk's state no longer has (Redis state lost?); kept them, the "
                      "file was not shortened. Caps for %s may not count them: check `avwap risk status`.",
                      artifact_path(ctx.settings, session), n, session)
            with contextlib.suppress(redis.RedisError):
                ctx.alerts.alert("risk_state_gap", f"risk: state lost {n} decision records of {session}",
                                 severity="critical", text=f"risk_decisions/{session}.jsonl keeps them; the new-entry "
                                 "counters may not count them", trade_date=session, runbook="risk-artifacts",
                                 dedup=f"risk_state_gap:{session}:{n}")


SPEC = ServiceSpec(name=GROUP, streams=STREAMS, build=Risk, produces=[INTENTS, REJECTIONS, ALERTS])


def main() -> int:
    return run_service(SPEC)
