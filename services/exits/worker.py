"""Exits worker (walking skeleton): records the order events it sees in its state."""

from __future__ import annotations

from shared.bus import Delivery, Emit
from shared.schemas import Message, OrderEvent
from shared.service import ServiceContext, ServiceSpec, run_service
from shared.streams import BARS_1M, BROKER, ORDERS, state_key


def build(ctx: ServiceContext):
    def handle(msg: Message, d: Delivery) -> list[Emit]:
        if isinstance(msg, OrderEvent):
            ctx.r.hset(state_key("exits", "seen_orders"), msg.event_id, msg.event)
        return []

    return handle


SPEC = ServiceSpec(name="exits", streams=[ORDERS, BROKER, BARS_1M], build=build)


def main() -> int:
    return run_service(SPEC)
