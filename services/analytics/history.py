"""This process's view of the cross-day history (pure): the canonical fills, the exit events per
symbol and the known client order ids, extended message by message as the shell reads the ingest
logs (``Store.history_since``)."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable

from shared.ids import client_order_id
from shared.schemas import ExitEvent, Fill, Message, OrderEvent

from .ledger import HISTORY_TYPES
from .trades import fill_of


class KnownIds:
    """Client order ids the ledger knows as of a date (order events through it, every intent)."""

    def __init__(self, order_dates: dict[str, str], intents: set[str], date: str) -> None:
        self.order_dates, self.intents, self.date = order_dates, intents, date

    def __contains__(self, coid: object) -> bool:
        d = self.order_dates.get(coid)  # type: ignore[call-overload]
        return (d is not None and d <= self.date) or coid in self.intents


def _fill_order(f: Fill) -> tuple[int, str]:
    return f.ts, f.fill_id


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class History:
    """The cross-day history read so far (``pos``: type -> ingest-log entries read).

    Keeps the canonical fills (one per fill key: the smallest event id wins, as in
    ``trades.fills_from_orders``), the exit events per symbol, and the known client order ids.
    """

    def __init__(self) -> None:
        self.pos = dict.fromkeys(HISTORY_TYPES, 0)
        self.fill_src: dict[str, tuple[str, Fill]] = {}  # fill key -> (event id, fill)
        self.fills: list[Fill] = []  # sorted by (ts, fill_id)
        self.by_symbol: dict[str, list[Fill]] = {}  # symbol -> its fills, sorted by (ts, fill_id)
        self.events: dict[str, list[ExitEvent]] = {}  # symbol -> sorted by (ts, event_id)
        self.order_dates: dict[str, str] = {}  # client order id -> earliest trade date of its events
        self.intents: set[str] = set()  # client order ids of every intent
        self.max_date = ""  # latest trade date of any fill or exit event
        self._sums = {"fills": 0, "exit_events": 0}  # order-independent digests (see ``digest``)

    def extend(self, pos: dict[str, int], messages: Iterable[Message]) -> None:
        """Add the messages read from the ingest logs up to ``pos``."""
        for m in messages:
            self._add(m)
        self.pos = pos

    def _add(self, m: Message) -> None:
        if isinstance(m, OrderEvent):
            d = self.order_dates.get(m.client_order_id)
            if d is None or m.trade_date < d:
                self.order_dates[m.client_order_id] = m.trade_date
            f = fill_of(m)
            if f is None:
                return
            seen = self.fill_src.get(f.fill_id)
            if seen is not None and seen[0] <= m.event_id:
                return
            self.fill_src[f.fill_id] = (m.event_id, f)
            self._sums["fills"] += _h(f"{f.fill_id}|{m.event_id}") - (_h(f"{f.fill_id}|{seen[0]}") if seen else 0)
            if seen is not None:  # a smaller event id for the same fill: rebuild the order (rare)
                self.fills = sorted((x for _, x in self.fill_src.values()), key=_fill_order)
                self.by_symbol[f.symbol] = [x for x in self.fills if x.symbol == f.symbol]
            else:
                bisect.insort(self.fills, f, key=_fill_order)
                bisect.insort(self.by_symbol.setdefault(f.symbol, []), f, key=_fill_order)
            self.max_date = max(self.max_date, f.trade_date)
        elif isinstance(m, ExitEvent):
            bisect.insort(self.events.setdefault(m.symbol, []), m, key=lambda e: (e.ts, e.event_id))
            self._sums["exit_events"] += _h(m.event_id)
            self.max_date = max(self.max_date, m.trade_date)
        else:
            self.intents.add(client_order_id(m.intent_id))  # type: ignore[attr-defined]

    def fills_through(self, date: str) -> list[Fill]:
        return self.fills if self.max_date <= date else [f for f in self.fills if f.trade_date <= date]

    def fills_by_symbol(self, date: str) -> dict[str, list[Fill]]:
        if self.max_date <= date:
            return self.by_symbol
        return {s: [f for f in v if f.trade_date <= date] for s, v in self.by_symbol.items()}

    def events_through(self, date: str) -> dict[str, list[ExitEvent]]:
        if self.max_date <= date:
            return self.events
        return {s: [e for e in v if e.trade_date <= date] for s, v in self.events.items()}

    def digests(self, date: str) -> dict[str, str]:
        """Order-independent content digests of the fills and exit events through ``date`` (provenance inputs)."""
        if self.max_date <= date:
            return {k: f"{v % 2**64:016x}" for k, v in self._sums.items()}
        fills = sum(_h(f"{f.fill_id}|{self.fill_src[f.fill_id][0]}") for f in self.fills_through(date))
        events = sum(_h(e.event_id) for v in self.events_through(date).values() for e in v)
        return {"fills": f"{fills % 2**64:016x}", "exit_events": f"{events % 2**64:016x}"}

    def known(self, date: str) -> KnownIds:
        return KnownIds(self.order_dates, self.intents, date)
