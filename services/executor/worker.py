"""Executor worker: the only broker gateway."""

from __future__ import annotations

from shared.bus import Delivery, Emit
from shared.schemas import EntryIntent, Message
from shared.service import ServiceContext, ServiceSpec, run_service
from shared.streams import INTENTS, ORDERS

from .core import dry_run_accept


def build(ctx: ServiceContext):
    mode = ctx.settings.core.execution_mode

    def handle(msg: Message, d: Delivery) -> list[Emit]:
        if isinstance(msg, EntryIntent):
            return [(ORDERS, dry_run_accept(msg, mode))]
        return []

    return handle


SPEC = ServiceSpec(name="executor", streams=[INTENTS], build=build)


def main() -> int:
    return run_service(SPEC)
