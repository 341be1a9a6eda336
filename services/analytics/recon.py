"""Reconciliation (pure): the internal ledger versus the broker's CLOSE snapshot.

Mismatch types (sorted by ``(type, symbol, key)`` in the artifact):
- MISSING_POSITION: held internally but not at the broker (``where="broker"``), or at the
  broker but not internally (``where="internal"``).
- QUANTITY: both hold the symbol with different quantities.
- AVERAGE_PRICE: average entry prices differ by more than the tolerance.
- UNKNOWN_ORDER: a broker open order whose client_order_id the ledger never saw.
- STOP_MISSING: an internal position held since before the day's stop window opened has no
  live sell stop at the broker covering its quantity (a position opened later is protected
  from the next window, DESIGN: "a stop computed from D's bar goes live at D+1's WINDOW_OPEN").
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

import msgspec

from shared.ids import stable_id
from shared.schemas import MISMATCH_TYPES, BrokerSnapshot, Mismatch, Reconciliation

__all__ = ["MISMATCH_TYPES", "InternalPosition", "Mismatch", "Reconciliation", "reconcile"]


class InternalPosition(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    qty: int
    avg_entry_price: float
    opened_ts: int
    position_id: str = ""


def reconcile(date: str, internal: Mapping[str, InternalPosition], snap: BrokerSnapshot,
              known_client_ids: Collection[str], window_start_ns: int, price_tol: float,
              provenance: Mapping[str, str] | None = None) -> Reconciliation:
    out: list[Mismatch] = []
    broker = {p.symbol: p for p in snap.positions if p.qty != 0}
    for sym in sorted(set(internal) | set(broker)):
        mine, theirs = internal.get(sym), broker.get(sym)
        if mine is not None and theirs is None:
            out.append(Mismatch(type="MISSING_POSITION", symbol=sym, key="broker", expected=str(mine.qty), actual="0",
                                detail="held internally, not at the broker"))
        elif mine is None and theirs is not None:
            out.append(Mismatch(type="MISSING_POSITION", symbol=sym, key="internal", expected="0", actual=str(theirs.qty),
                                detail="held at the broker, not internally"))
        elif mine is not None and theirs is not None:
            if mine.qty != theirs.qty:
                out.append(Mismatch(type="QUANTITY", symbol=sym, expected=str(mine.qty), actual=str(theirs.qty)))
            if abs(mine.avg_entry_price - theirs.avg_entry_price) > price_tol:
                out.append(Mismatch(type="AVERAGE_PRICE", symbol=sym, expected=f"{mine.avg_entry_price:.6f}",
                                    actual=f"{theirs.avg_entry_price:.6f}"))
    for o in sorted(snap.open_orders, key=lambda o: (o.symbol, o.client_order_id)):
        if o.client_order_id not in known_client_ids:
            out.append(Mismatch(type="UNKNOWN_ORDER", symbol=o.symbol, key=o.client_order_id,
                                detail=f"{o.side} {o.order_type} {o.qty} {o.status}"))
    for sym, mine in sorted(internal.items()):
        if mine.qty <= 0 or mine.opened_ts >= window_start_ns:
            continue
        covered = sum(o.qty - o.filled_qty for o in snap.open_orders
                      if o.symbol == sym and o.side == "sell" and o.order_type in ("stop", "stop_limit"))
        if covered < mine.qty:
            out.append(Mismatch(type="STOP_MISSING", symbol=sym, expected=str(mine.qty), actual=str(covered),
                                detail="no live stop covering the position"))
    out.sort(key=lambda m: (MISMATCH_TYPES.index(m.type), m.symbol, m.key))
    return Reconciliation(recon_id=stable_id("rc", date, snap.snapshot_id, out), date=date,
                          snapshot_id=snap.snapshot_id, status="mismatch" if out else "ok", mismatches=out,
                          positions_internal=len(internal), positions_broker=len(broker),
                          open_orders=len(snap.open_orders), provenance=dict(provenance or {}))
