"""Operator commands: run a service, inspect streams, the DLQ, the kill switch, health."""

from __future__ import annotations

import importlib
import json
import re
import time

import typer

from avwap.common import fail, operator_redis
from shared.bus import HEARTBEAT_PREFIX, live_consumers
from shared.controls import Refused, read_kill_switch, read_state, transition
from shared.schemas import SchemaError, decode
from shared.settings import get_settings
from shared.streams import ALL_STREAMS, DLQ

SERVICES = ("scanner", "regime", "risk", "executor", "exits", "analytics")

app = typer.Typer(no_args_is_help=True)
dlq_app = typer.Typer(help="Inspect and requeue dead-lettered messages.", no_args_is_help=True)
ks_app = typer.Typer(help="Kill switch (alias of `avwap state reduce|resume`): blocks every new entry, never an exit.",
                      no_args_is_help=True)


_STREAM_ID = re.compile(r"^\d+(-\d+)?$")


def _s(v: object) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else str(v)


def _dlq_entry(r: object, entry_id: str) -> dict:
    """The fields of DLQ entry ``entry_id`` (one clear error if the id is malformed or absent)."""
    if not _STREAM_ID.match(entry_id):
        fail(f"not a stream entry id: {entry_id!r} (expected like 1700000000000-0; see `avwap dlq list`)")
    entries = r.xrange(DLQ, min=entry_id, max=entry_id)  # type: ignore[attr-defined]
    if not entries:
        fail(f"no DLQ entry {entry_id}")
    return entries[0][1]


@app.command("run")
def run(service: str = typer.Argument(..., help="scanner | risk | executor | exits | analytics")) -> None:
    """Run one service in the foreground (same as `python -m services.<service>`)."""
    if service not in SERVICES:
        fail(f"unknown service {service!r}; choose one of {', '.join(SERVICES)}")
    if not get_settings().core.redis_url:
        from shared.service import NO_REDIS_URL

        fail(NO_REDIS_URL)
    worker = importlib.import_module(f"services.{service}.worker")
    raise typer.Exit(worker.main())


@app.command("streams")
def streams(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """Each stream: length, groups, pending, consumers, last id; and the DLQ size."""
    rows = []
    with operator_redis() as r:
        for name in ALL_STREAMS:
            if not r.exists(name):
                rows.append({"stream": name, "length": 0, "last_id": "-", "groups": []})
                continue
            info = r.xinfo_stream(name)
            groups = []
            for g in r.xinfo_groups(name):
                groups.append({"group": _s(g["name"]), "pending": g["pending"], "consumers": g["consumers"],
                               "lag": g.get("lag"), "last_delivered": _s(g["last-delivered-id"])})
            rows.append({"stream": name, "length": info["length"], "last_id": _s(info["last-generated-id"]), "groups": groups})
        hb = sorted(f"{HEARTBEAT_PREFIX}:{g}:{c}" for g, c in live_consumers(r))
    if as_json:
        typer.echo(json.dumps({"streams": rows, "heartbeats": hb}, indent=2))
        return
    typer.echo(f"{'stream':<22} {'length':>8} {'last id':<22} groups (pending/consumers/lag)")
    for row in rows:
        groups = ", ".join(f"{g['group']}({g['pending']}/{g['consumers']}/{g['lag']})" for g in row["groups"]) or "-"
        typer.echo(f"{row['stream']:<22} {row['length']:>8} {row['last_id']:<22} {groups}")
    dlq_len = next(r["length"] for r in rows if r["stream"] == DLQ)
    typer.echo(f"DLQ size: {dlq_len}")
    typer.echo(f"live consumers (heartbeats): {', '.join(k.removeprefix(HEARTBEAT_PREFIX + ':') for k in hb) or 'none'}")


@dlq_app.command("list")
def dlq_list(count: int = typer.Option(20, help="How many entries (newest last).")) -> None:
    """List DLQ entries: id, source stream, group, deliveries, reason."""
    with operator_redis() as r:
        entries = r.xrevrange(DLQ, count=count)[::-1]
    if not entries:
        typer.echo("DLQ is empty")
        return
    for entry_id, f in entries:
        typer.echo(f"{_s(entry_id)}  {_s(f.get(b'dlq_source_stream', b'?'))}  group={_s(f.get(b'dlq_group', b'?'))}  "
                   f"deliveries={_s(f.get(b'dlq_deliveries', b'?'))}  reason={_s(f.get(b'dlq_reason', b'?'))}")


@dlq_app.command("show")
def dlq_show(entry_id: str) -> None:
    """Show one DLQ entry with all its fields."""
    with operator_redis() as r:
        f = _dlq_entry(r, entry_id)
    typer.echo(json.dumps({_s(k): _s(v) for k, v in f.items()}, indent=2, sort_keys=True))


@dlq_app.command("requeue")
def dlq_requeue(entry_id: str, delete: bool = typer.Option(True, help="Remove it from the DLQ once requeued.")) -> None:
    """Put a DLQ entry's original fields back on its source stream (after the cause is fixed).

    The entry is re-added verbatim (type, v, data) and removed from the DLQ in one MULTI/EXEC.
    Every group on that stream sees it again (consumers de-duplicate by message id).
    Entries that still do not decode are refused.
    """
    with operator_redis() as r:
        f = _dlq_entry(r, entry_id)
        source = _s(f.get(b"dlq_source_stream", b""))
        if not source:
            fail(f"DLQ entry {entry_id} has no source stream")
        try:
            decode(f.get(b"data", b""))
        except SchemaError as exc:
            fail(f"DLQ entry {entry_id} still does not decode ({exc}); fix the producer or upgrade the consumer first")
        original = {k: v for k, v in f.items() if not _s(k).startswith("dlq_")}
        pipe = r.pipeline(transaction=True)
        pipe.xadd(source, original)
        if delete:
            pipe.xdel(DLQ, entry_id)
        new_id = _s(pipe.execute()[0])
    typer.echo(f"requeued {entry_id} to {source} as {new_id}")


@ks_app.command("on")
def ks_on(reason: str = typer.Option("operator", help="Why (recorded with the switch).")) -> None:
    """Block every new entry from the next message on (= `avwap state reduce`)."""
    _ks_change("REDUCING", reason)
    typer.echo("kill switch: ON (new entries blocked; exits unaffected) — trading state REDUCING")


@ks_app.command("off")
def ks_off(reason: str = typer.Option("operator", help="Why (recorded).")) -> None:
    """Allow new entries again (= `avwap state resume`; other gates still apply)."""
    _ks_change("ACTIVE", reason)
    typer.echo("kill switch: OFF — trading state ACTIVE")


def _ks_change(state: str, reason: str) -> None:
    from avwap.commands.state import operator

    with operator_redis() as r:
        try:
            transition(r, state, who=operator(), source="cli", reason=reason, ts=time.time_ns())  # type: ignore[arg-type]
        except Refused as exc:
            fail(f"refused: {exc}")


@ks_app.command("status")
def ks_status() -> None:
    """Show the kill switch: ON when the trading state is not ACTIVE (the env KILL_SWITCH=1 also blocks entries)."""
    from shared.settings import get_settings

    with operator_redis() as r:
        state = read_kill_switch(r)
        view = read_state(r)
    env_on = get_settings().core.kill_switch
    on = state != "off" or env_on
    note = " — the key is unreadable, which blocks entries like ON" if state == "unreadable" else ""
    typer.echo(f"kill switch: {'ON' if on else 'OFF'} (redis={state}, env={'on' if env_on else 'off'}) "
               f"trading state {view.state}{note}")


@app.command("health")
def health(service: str) -> None:
    """Exit 0 when the service has a live heartbeat (compose healthchecks call this)."""
    with operator_redis() as r:
        keys = live_consumers(r, service)
    if not keys:
        fail(f"{service}: no live heartbeat")
    typer.echo(f"{service}: {len(keys)} live consumer(s)")


app.add_typer(dlq_app, name="dlq")
app.add_typer(ks_app, name="kill-switch")
