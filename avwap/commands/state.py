"""``avwap state|flatten|breakers|audit``: operator control through Redis only (docs/runbook.md "Trading states").

Every change is one transaction on the running system's Redis (``shared.controls``): the state key,
a message on ``avwap:control`` and an audit record. No broker key is read here: a flatten is a
request the executor carries out.
"""

from __future__ import annotations

import getpass
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import typer

from avwap.common import fail, operator_redis
from shared import audit
from shared.breakers import BreakerConfig, decode_book, status
from shared.controls import Refused, read_state, rearm_breaker, recent_changes, request_flatten, transition
from shared.schemas import BREAKERS
from shared.streams import AUDIT_KEY, BREAKERS_KEY

app = typer.Typer()
state_app = typer.Typer(help="Trading state: ACTIVE, REDUCING (no entries), HALTED (no new orders but cancels).",
                        no_args_is_help=True)
breakers_app = typer.Typer(help="Circuit breakers on live equity: status, re-arm.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log of operator actions and control changes.", no_args_is_help=True)


def operator() -> str:
    """``cli:<login>`` (the shell user who ran the command)."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


def when(ts: int) -> str:
    return datetime.fromtimestamp(ts / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts else "-"


def plain(v: object) -> str:
    """A value as an operator reads it (no Python reprs): lists comma-joined, maps as k=v."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, dict):
        return ", ".join(f"{k}={plain(x)}" for k, x in v.items()) or "none"
    if isinstance(v, list | tuple):
        return ", ".join(plain(x) for x in v) or "none"
    return str(v)


def state_info(r: object) -> dict[str, object]:
    from shared.settings import get_settings

    s = get_settings()
    view = read_state(r, env_kill_switch=s.core.kill_switch)  # type: ignore[arg-type]
    rec = view.record
    book_raw = r.get(BREAKERS_KEY)  # type: ignore[attr-defined]
    book = decode_book(book_raw)
    return {
        "state": view.state,
        "since": when(rec.ts) if rec else "-",
        "by": rec.who if rec else "-",
        "reason": rec.reason if rec else (view.detail or "-"),
        "note": view.detail or "",
        "breakers_tripped": ["book_unreadable"] if book is None else sorted(book.tripped),
        "recent": [f"{when(c.ts)} {c.previous}->{c.state} by {c.who}: {c.reason}" for c in recent_changes(r)],  # type: ignore[arg-type]
    }


def _change(state: str, reason: str) -> None:
    with operator_redis() as r:
        try:
            ch = transition(r, state, who=operator(), source="cli", reason=reason, ts=time.time_ns())  # type: ignore[arg-type]
        except Refused as exc:
            fail(f"refused: {exc}")
    typer.echo(f"trading state: {ch.state} (was {ch.previous}) by {ch.who}: {ch.reason}")


@state_app.command("show")
def show(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The trading state, who set it and why, tripped breakers, the last transitions."""
    with operator_redis() as r:
        info = state_info(r)
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    typer.echo(f"trading state: {info['state']} since {info['since']} by {info['by']}: {info['reason']}")
    typer.echo(f"breakers tripped: {plain(info['breakers_tripped'])}")
    for line in info["recent"]:  # type: ignore[attr-defined]
        typer.echo(f"  {line}")


@state_app.command("reduce")
def reduce(reason: str = typer.Option(..., help="Why (recorded).")) -> None:
    """REDUCING: no new entries; exits and protective stops work (= `avwap kill-switch on`)."""
    _change("REDUCING", reason)


@state_app.command("halt")
def halt(reason: str = typer.Option(..., help="Why (recorded).")) -> None:
    """HALTED: no new orders of any kind except cancels; protective stops stay at the broker."""
    _change("HALTED", reason)


@state_app.command("resume")
def resume(reason: str = typer.Option(..., help="Why (recorded).")) -> None:
    """ACTIVE again (refused while a breaker is tripped: re-arm it first)."""
    _change("ACTIVE", reason)


@app.command("flatten")
def flatten(target: str = typer.Argument(..., help="A symbol, several comma-separated, or `all`."),
            reason: str = typer.Option(..., help="Why (recorded).")) -> None:
    """Market-exit the named positions (their stops are cancelled just before, restored if the exit is
    refused), then stay REDUCING. The executor carries it out from its next message."""
    symbols = [] if target.strip().lower() == "all" else [s for s in target.split(",") if s.strip()]
    if not symbols and target.strip().lower() != "all":
        fail("name a symbol or `all`")
    with operator_redis() as r:
        try:
            ch, req = request_flatten(r, symbols, who=operator(), source="cli", reason=reason, ts=time.time_ns())
        except Refused as exc:
            fail(f"refused: {exc}")
    typer.echo(f"flatten requested: {', '.join(req.symbols) or 'ALL positions'} ({req.request_id}); "
               f"trading state: {ch.state}")


@breakers_app.command("status")
def breakers_status(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """Each breaker: configured, its limit, the current figure, tripped (with the figures that tripped it)."""
    from shared.settings import get_settings

    cfg = BreakerConfig.from_settings(get_settings().analytics)
    with operator_redis() as r:
        raw = r.get(BREAKERS_KEY)
    info = status(decode_book(raw), cfg)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps(info, indent=2, sort_keys=True))
        return
    if not info["readable"]:
        typer.echo("breakers: the book (avwap:control:breakers) is unreadable: resume is refused; "
                   "`avwap breakers rearm NAME --reason ...` replaces it")
        return
    typer.echo(f"configured: {plain(info['configured'])} (a trip sets {info['trip_state']})")
    typer.echo(f"session {info['session'] or '-'}: equity {plain(info['equity'])}, opening {plain(info['open_equity'])}, "
               f"high-water mark {plain(info['high_water_mark'])}")
    typer.echo(f"daily loss {plain(info['daily_loss_pct'])}%, drawdown {plain(info['drawdown_pct'])}%, "
               f"consecutive stop-outs {info['consecutive_stops']}")
    typer.echo(f"limits: {plain(info['limits'])}")
    tripped = info["tripped"]
    if not tripped:
        typer.echo("tripped: none")
    for name, t in tripped.items():  # type: ignore[union-attr]
        typer.echo(f"TRIPPED {name} at {when(t['ts'])}: {t['reason']}")


@breakers_app.command("rearm")
def breakers_rearm(breaker: str = typer.Argument(..., help=" | ".join(BREAKERS)),
                   reason: str = typer.Option(..., help="Why (recorded).")) -> None:
    """Re-arm a tripped breaker (its measurement restarts from now); then `avwap state resume`."""
    if breaker not in BREAKERS:
        fail(f"unknown breaker {breaker!r}; choose one of {', '.join(BREAKERS)}")
    with operator_redis() as r:
        try:
            rearm_breaker(r, breaker, who=operator(), source="cli", reason=reason, ts=time.time_ns())  # type: ignore[arg-type]
        except Refused as exc:
            fail(f"refused: {exc}")
    typer.echo(f"breaker {breaker} re-armed; the trading state is unchanged (`avwap state resume --reason ...`)")


@audit_app.command("verify")
def audit_verify(file: Path | None = typer.Option(None, help="Verify this JSONL export instead of Redis.")) -> None:
    """Recompute the hash chain; exit 1 naming the first broken record."""
    if file is not None:
        try:
            lines = [x for x in file.read_bytes().splitlines() if x.strip()]
        except OSError as exc:
            fail(f"cannot read {file}: {exc}")
    else:
        with operator_redis() as r:
            lines = audit.read_all(r)
    v = audit.verify(lines)
    if not v.ok:
        fail(f"audit chain broken at record {v.first_bad}: {v.why} ({v.records} records before it verify)")
    typer.echo(f"audit chain OK: {v.records} records")


@audit_app.command("export")
def audit_export(path: Path = typer.Argument(..., help="JSONL file to write.")) -> None:
    """Write the log as JSONL (one record a line, as stored)."""
    from shared.artifacts import write_atomic

    with operator_redis() as r:
        lines = audit.read_all(r)
    write_atomic(path, b"".join(x if x.endswith(b"\n") else x + b"\n" for x in lines))
    typer.echo(f"wrote {len(lines)} records to {path}")


@audit_app.command("show")
def audit_show(count: int = typer.Option(20, help="How many records (newest last).")) -> None:
    """The last records: seq, time, actor, action, detail."""
    with operator_redis() as r:
        lines = r.lrange(AUDIT_KEY, -count, -1)
    for x in lines:
        d = json.loads(x)
        typer.echo(f"{d['seq']:>5} {when(d['ts'])} {d['kind']:<13} {d['actor']:<20} {d['action']}  {plain(d['detail'])}")


app.add_typer(state_app, name="state")
app.add_typer(breakers_app, name="breakers")
app.add_typer(audit_app, name="audit")
