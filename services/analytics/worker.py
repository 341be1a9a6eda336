"""Analytics worker (walking skeleton): ingests every stream into per-NY-date ledgers."""

from __future__ import annotations

from pathlib import Path

from shared.artifacts import append_jsonl
from shared.bus import Delivery, Emit
from shared.schemas import Message, type_name_of
from shared.service import ServiceContext, ServiceSpec, run_service
from shared.streams import BROKER, CANDIDATES, EXITS, ORDERS, REJECTIONS, state_key


def build(ctx: ServiceContext):
    root = Path(ctx.settings.core.ledger_dir) / "analytics"

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        date = getattr(msg, "trade_date", "") or getattr(msg, "scan_date", "") or "undated"
        # idempotent under redelivery: a message is written once per stream entry
        if ctx.r.sadd(state_key("analytics", "ingested", date), f"{d.stream}/{d.entry_id}"):
            append_jsonl(root / f"{date}.jsonl", [{"stream": d.stream, "type": type_name_of(msg), "msg": msg}])
        return []

    return handle


SPEC = ServiceSpec(name="analytics", streams=[CANDIDATES, ORDERS, REJECTIONS, EXITS, BROKER], build=build)


def main() -> int:
    return run_service(SPEC)
