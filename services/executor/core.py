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
from shared.schemas import BrokerOrder, BrokerPosition, BrokerSnapshot

# ``from .part import X as X``: re-exported (the worker, the shell's helpers and the tests use ``core.<name>``)
from .broker import AccountView, OrderView, PositionView
from .broker_results import breach_exit as breach_exit
from .broker_results import mark_cancel_requested as mark_cancel_requested
from .broker_results import on_broker_update as on_broker_update
from .broker_results import on_rejected as on_rejected
from .broker_results import on_submitted as on_submitted
from .broker_results import on_view as on_view
from .broker_results import reprotect_rec as reprotect_rec
from .intents import batch_id as batch_id
from .intents import confirm_daily as confirm_daily
from .intents import confirm_intraday as confirm_intraday
from .intents import entry_blocks as entry_blocks
from .intents import expire_unconfirmed as expire_unconfirmed
from .intents import on_entry_intent as on_entry_intent
from .intents import on_exit_intent as on_exit_intent
from .intents import on_stop_intent as on_stop_intent
from .intents import ready_waiting as ready_waiting
from .intents import resend_or_block as resend_or_block
from .model import DONE, ExecState
from .model import LOOKUP as LOOKUP
from .model import OPEN_GATES as OPEN_GATES
from .model import OPEN_LOCAL as OPEN_LOCAL
from .model import R_NOT_CONFIRMED as R_NOT_CONFIRMED
from .model import RUNBOOK_PROTECTION as RUNBOOK_PROTECTION
from .model import Action as Action
from .model import Cancel as Cancel
from .model import CancelForeign as CancelForeign
from .model import Ctx as Ctx
from .model import Gates as Gates
from .model import OrderRec as OrderRec
from .model import Out as Out
from .model import Params as Params
from .model import Replace as Replace
from .model import Submit as Submit
from .model import order_event as order_event
from .model import reject_entry as reject_entry
from .model import request_of as request_of
from .protection import coverage as coverage
from .protection import flatten_intents as flatten_intents
from .protection import overdue_exits as overdue_exits
from .protection import repair_protection as repair_protection


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
