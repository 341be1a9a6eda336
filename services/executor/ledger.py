"""Execution ledgers: append-only JSONL per mode and NY date, ``<ledger_dir>/<MODE>/YYYY-MM-DD.jsonl``.

Every record carries ``provenance`` (docs/executor.md, "Ledgers"): the code version, ``Settings.hash()``,
the broker-settings hash, the mode, the run id (``Settings.resolved_run_id()``), ``input:intent`` (the intent behind the record) and
``input:trigger`` (the stable id of the message, or the broker call, that produced it) — the values
when the line was queued. No wall-clock value and no path, so replays stay byte-identical.

Records are queued in Redis (``ledger_key``) in the same MULTI/EXEC as the events they describe,
then ``flush`` appends them to the files and drops them from the queue. A crash between the
append and the drop is harmless: ``flush`` skips records whose ``record_id`` the file already
holds, so every record lands exactly once, in commit order (byte-identical on replay).
A torn last line (crash mid-write) is isolated by ``append_jsonl`` and skipped by ``read_jsonl``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import redis

from shared.artifacts import append_jsonl, canonical_line, provenance, read_jsonl, to_plain, under
from shared.schemas import Message, OrderEvent, Rejection, type_name_of


class Provenance(msgspec.Struct, frozen=True, kw_only=True):
    """What every ledger line of one commit shares; ``record_of`` adds the record's own intent."""

    settings_hash: str
    broker_settings_hash: str
    mode: str
    run_id: str
    trigger: str

    def block(self, intent_id: str) -> dict[str, str]:
        return provenance(self.settings_hash, {"intent": intent_id, "trigger": self.trigger},
                          broker_settings_hash=self.broker_settings_hash, mode=self.mode, run_id=self.run_id)


def record_of(msg: Message, prov: Provenance) -> dict[str, Any] | None:
    """The ledger record of an event (None for messages the ledger does not hold)."""
    if isinstance(msg, OrderEvent):
        rid = msg.event_id
    elif isinstance(msg, Rejection):
        rid = msg.rejection_id
    else:
        return None
    rec = to_plain(msg)
    rec["record"] = type_name_of(msg)
    rec["record_id"] = rid
    rec["provenance"] = prov.block(msg.intent_id)
    return rec


def ledger_path(ledger_dir: str | Path, mode: str, trade_date: str) -> Path:
    return under(ledger_dir, mode, f"{trade_date}.jsonl")


def queue_lines(msgs: list[Message], prov: Provenance) -> list[bytes]:
    out = []
    for m in msgs:
        rec = record_of(m, prov)
        if rec is not None:
            out.append(canonical_line(rec))
    return out


def flush(r: redis.Redis, key: str, ledger_dir: str | Path, mode: str) -> int:
    """Append the queued records to their files (skipping ones already there). Returns records written."""
    raw = r.lrange(key, 0, -1)
    if not raw:
        return 0
    by_path: dict[Path, list[dict[str, Any]]] = {}
    for line in raw:
        rec = json.loads(line)
        by_path.setdefault(ledger_path(ledger_dir, mode, rec["trade_date"]), []).append(rec)
    written = 0
    for path, recs in by_path.items():
        have = {x.get("record_id") for x in read_jsonl(path)}
        new = []
        for rec in recs:
            if rec["record_id"] not in have:
                have.add(rec["record_id"])
                new.append(rec)
        if new:
            append_jsonl(path, new)
            written += len(new)
    r.ltrim(key, len(raw), -1)
    return written


def expected_positions(ledger_dir: str | Path, mode: str) -> dict[str, int]:
    """Net shares per symbol from every fill in the mode's ledgers (buys minus sells)."""
    out: dict[str, int] = {}
    root = Path(ledger_dir) / mode
    for path in sorted(root.glob("*.jsonl")) if root.exists() else []:
        for rec in read_jsonl(path):
            if rec.get("record") == "order_event" and rec.get("event") in ("filled", "partially_filled"):
                sign = 1 if rec.get("side") == "buy" else -1
                out[rec["symbol"]] = out.get(rec["symbol"], 0) + sign * int(rec.get("fill_qty") or 0)
    return {s: q for s, q in sorted(out.items()) if q}
