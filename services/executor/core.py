"""Executor decisions: intents + executor/broker state -> order actions and events.

Pure: no Redis, no clock, no env, no network. The worker loads ``ExecState``, calls these
functions, performs the returned ``Action``s through a broker adapter, feeds the results back
(``on_submitted``, ``on_view``, ...), and commits state + events atomically.

Conventions (docs/ARCHITECTURE.md, docs/executor.md):
- ``client_order_id = shared.ids.client_order_id(intent_id)``; every event about an order carries
  that order's client id and the id of the intent that created it.
- Entry fills carry the entry intent's protective stop in ``stop_price``.
- A stop replace emits ``replaced`` for the NEW order (``reason_code`` REPLACES, ``replaces_client_order_id``)
  once the broker shows the old one ``replaced`` (or, cancel-and-new, cancelled); the old order gets no
  ``cancelled`` event. Until then the old stop is the live one (the protection invariant).
- Status changes go through ``lifecycle.transition`` (one table); every event carries a ``ReasonCode``.
- An exit cancels every stop holding the symbol's shares first (``cancelled``, reason names the
  exit intent), then sells market (kind="exit").
- Event ids: ``stable_id("ev", client_order_id, event, trade_id)``; fills de-duplicated by trade id.

The core is split along the lines a reader looks for (each module pure): ``model`` (records, state,
gates, actions, the event builders), ``intents`` (intents into orders; entry confirmation),
``broker_results`` (the order lifecycle from the broker's answers and views: fills, replaces,
rejections), ``protection`` (one live stop per held share; stops restored after a refused exit;
flatten). This module builds the broker snapshots and re-exports the rest: the worker, the shell's
helpers and the tests use ``core.<name>``.
"""

from __future__ import annotations

from shared.ids import stable_id
from shared.schemas import (
    BarRow,
    BrokerOrder,
    BrokerPosition,
    BrokerSnapshot,
)

from .broker import TERMINAL, AccountView, OrderView, PositionView
from .broker_results import (
    breach_exit,
    impossible_alert,
    mark_cancel_requested,
    on_broker_update,
    on_rejected,
    on_submitted,
    on_view,
    reprotect_rec,
)
from .intents import (
    batch_id,
    confirm_daily,
    confirm_intraday,
    entry_blocks,
    expire_unconfirmed,
    on_entry_intent,
    on_exit_intent,
    on_stop_intent,
    ready_waiting,
    resend_or_block,
)
from .model import (
    DONE,
    LOOKUP,
    OPEN_GATES,
    OPEN_LOCAL,
    R_BAD_QTY,
    R_EXPIRED,
    R_HALTED,
    R_KILL_SWITCH,
    R_KILL_SWITCH_UNREADABLE,
    R_LIVE_GATE,
    R_NOT_CONFIRMED,
    R_UNRECONCILED,
    RUNBOOK_PROTECTION,
    STOP_RESTORED,
    Action,
    Bucket,
    Cancel,
    CancelForeign,
    Ctx,
    ExecState,
    Gates,
    OrderRec,
    Out,
    Params,
    Pending,
    Replace,
    Submit,
    live_stops,
    order_event,
    reject_entry,
    request_of,
)
from .protection import (
    STOP_TYPES,
    Gap,
    coverage,
    flatten_intents,
    in_flight,
    overdue_exits,
    repair_protection,
    restore_stops,
)


# -- snapshots ----------------------------------------------------------------
def snapshot(mode: str, trade_date: str, ts: int, reason: str, account: AccountView, positions: list[PositionView],
             open_orders: list[OrderView], reconciled: bool) -> BrokerSnapshot:
    pos = [BrokerPosition(symbol=p.symbol, qty=p.qty, avg_entry_price=round(p.avg_entry_price, 4),
                          market_value=round(p.qty * p.current_price, 2), current_price=round(p.current_price, 4))
           for p in sorted(positions, key=lambda p: p.symbol)]
    orders = [BrokerOrder(client_order_id=o.client_order_id, broker_order_id=o.broker_order_id, symbol=o.symbol,
                          side=o.side, order_type=o.order_type, qty=o.qty, status=o.status, filled_qty=o.filled_qty,
                          stop_price=o.stop_price, limit_price=o.limit_price)
              for o in sorted(open_orders, key=lambda o: (o.symbol, o.client_order_id))]
    return BrokerSnapshot(snapshot_id=stable_id("bs", mode, trade_date, reason, ts), mode=mode, trade_date=trade_date,
                          ts=ts, equity=round(account.equity, 2), cash=round(account.cash, 2),
                          buying_power=round(account.buying_power, 2), positions=pos, open_orders=orders,
                          reconciled=reconciled, reason=reason)


def dry_run_account(equity: float) -> AccountView:
    return AccountView(equity=equity, cash=equity, buying_power=equity)


def prune(st: ExecState, d: str, keep_days: int = 10) -> None:
    """At D's close: forget finished orders of earlier dates (and blocked entries of earlier dates:
    day orders that never reached the broker) and old de-dup keys."""
    for coid in [k for k, o in st.orders.items() if (o.status in DONE or o.status == "blocked") and o.trade_date < d]:
        del st.orders[coid]
    cutoff = _days_before(d, keep_days)
    st.handled = {k: v for k, v in st.handled.items() if v >= cutoff}
    st.sessions = {k: v for k, v in st.sessions.items() if v >= cutoff}
    st.intraday = {k: v for k, v in st.intraday.items() if k >= d}
    st.session_open = {k: v for k, v in st.session_open.items() if k >= d}


def _days_before(d: str, n: int) -> str:
    from datetime import date, timedelta

    return (date.fromisoformat(d) - timedelta(days=n)).isoformat()


__all__ = [
    "Action", "BarRow", "Bucket", "Cancel", "CancelForeign", "Ctx", "DONE", "ExecState", "Gap", "Gates",
    "LOOKUP", "OPEN_GATES", "OPEN_LOCAL", "OrderRec", "Out", "Params", "Pending", "RUNBOOK_PROTECTION",
    "R_BAD_QTY", "R_EXPIRED", "R_HALTED", "R_KILL_SWITCH", "R_KILL_SWITCH_UNREADABLE", "R_LIVE_GATE",
    "R_NOT_CONFIRMED", "R_UNRECONCILED", "Replace", "STOP_RESTORED", "STOP_TYPES", "Submit", "TERMINAL",
    "batch_id", "breach_exit", "confirm_daily", "confirm_intraday", "coverage", "entry_blocks",
    "expire_unconfirmed", "flatten_intents", "impossible_alert", "in_flight", "live_stops",
    "mark_cancel_requested", "on_broker_update", "on_entry_intent", "on_exit_intent", "on_rejected",
    "on_stop_intent", "on_submitted", "on_view", "order_event", "overdue_exits", "prune", "ready_waiting",
    "reject_entry", "repair_protection", "reprotect_rec", "request_of", "resend_or_block",
    "restore_stops", "snapshot",
]
