"""Scanner worker (walking skeleton): consumes daily bars; the scan lands with the scanner issue."""

from __future__ import annotations

from shared.bus import Delivery, Emit
from shared.schemas import Message
from shared.service import ServiceContext, ServiceSpec, run_service
from shared.streams import BARS_1D


def build(ctx: ServiceContext):
    def handle(msg: Message, d: Delivery) -> list[Emit]:
        return []

    return handle


SPEC = ServiceSpec(name="scanner", streams=[BARS_1D], build=build)


def main() -> int:
    return run_service(SPEC)
