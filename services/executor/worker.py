"""Executor worker: the only broker gateway (the shell around ``core``).

Consumes ``avwap:intents``, ``avwap:clock``, ``avwap:bars:1m`` and ``avwap:bars:1d``. For each
message it loads ``ExecState`` from Redis, runs the core, performs the order actions through the
broker adapter, and commits state + events (orders, rejections, snapshots, alerts) + ledger
queue + the message's XACK in one unit of work (``Executor.unit``: one commit script). With the simulator (state in that same blob) a
SIGKILL at any point redelivers the message against the old state: same events, no duplicate.
With an external broker the outbox (the order record) is committed BEFORE the submit, and
start-up reconciliation and the idle poll resolve every record by ``client_order_id``.
Mixed into ``Executor``: the answer to each message (``handlers.py``), the broker actions
(``actions.py``) and following the external broker (``sync.py``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import msgspec
import redis
from pydantic import ValidationError

from shared import metrics
from shared.bus import Committed, Delivery, Emit, UnitOfWork
from shared.controls import read_state
from shared.crash import crash_point
from shared.live_token import read_token_file
from shared.logs import setup_logging
from shared.retention import trim_history
from shared.schemas import (
    BarBatch,
    EntryIntent,
    ExitIntent,
    FlattenRequest,
    Message,
    SessionEvent,
    StopIntent,
)
from shared.service import (
    ServiceContext,
    ServiceSpec,
    Worker,
    idle_invalid_settings,
    refuse_and_idle,
    run_service,
)
from shared.settings import SECTIONS, Settings, get_settings
from shared.streams import (
    ALERTS,
    BARS_1D,
    BARS_1M,
    BROKER,
    CLOCK,
    CONTROL,
    INTENTS,
    ORDERS,
    REJECTIONS,
    state_key,
)

from . import core, ledger
from .actions import BrokerActions
from .alerts import RUNBOOK_REFUSED, alerts_for, stream_for
from .broker import (
    Broker,
)
from .core import ExecState
from .handlers import MessageHandlers
from .modes import live_gate_check, start_check
from .settings import BrokerSettings
from .simulator import SimCosts, SimState, Simulator
from .sync import BrokerSync

if TYPE_CHECKING:  # imported for real only in ALPACA modes (make_updates)
    from .trade_stream import TradeUpdates

log = logging.getLogger(__name__)
GROUP = "executor"
RETAIN_EVERY = 5  # CLOSE events between two stream trims (shared/retention.py)


def trigger_of(msg: Message) -> str:
    """The stable id of a handled message (ledger provenance ``input:trigger``)."""
    if isinstance(msg, SessionEvent):
        return f"session:{msg.trade_date}:{msg.phase}"
    if isinstance(msg, BarBatch):
        return core.batch_id(msg)
    if isinstance(msg, FlattenRequest):
        return msg.request_id
    return msg.intent_id  # type: ignore[union-attr]


class Executor(MessageHandlers, BrokerSync, BrokerActions, Worker):
    """The executor shell over one Redis and one broker adapter (None: DRY_RUN / PAPER_SIM)."""

    def __init__(self, ctx: ServiceContext, bs: BrokerSettings, broker: Broker | None = None,
                 updates: TradeUpdates | None = None) -> None:
        self.ctx = ctx
        self.r: redis.Redis = ctx.r
        self.bs = bs
        self.mode = ctx.settings.core.execution_mode
        self.params = core.Params(mode=self.mode, confirm_start=bs.entry_confirm_start,
                                  confirm_end=bs.entry_confirm_end, confirm_minutes=bs.entry_confirm_minutes)
        self.key = state_key("executor", self.mode, "state")
        self.ledger_key = state_key("executor", self.mode, "ledger")
        self.ledger_dir = ctx.settings.core.ledger_dir
        self.external = broker
        self.costs = SimCosts(slippage_bps=bs.sim_slippage_bps, commission_per_share=bs.sim_commission_per_share,
                              commission_per_order=bs.sim_commission_per_order, sell_fee_bps=bs.sim_sell_fee_bps,
                              max_volume_pct=bs.sim_max_volume_pct)
        self.starting_cash = bs.sim_starting_cash if bs.sim_starting_cash is not None else ctx.settings.analytics.starting_capital
        self._next_poll = 0.0
        self._next_snapshot = 0.0
        self.maxlen = ctx.settings.core.bus_maxlen
        self.updates = updates
        self.settings_hash = ctx.settings.hash()
        self.broker_settings_hash = bs.hash()
        self.run_id = ctx.settings.resolved_run_id()
        self.max_gap_ns = int(bs.exit_max_unprotected_s * 1e9)
        # the unit of work in hand (a message, a poll, reconciliation): its events not queued yet (an
        # outbox write queues and commits them with the state they belong to, the final commit the rest)
        self._uow: UnitOfWork | None = None
        self._journal: list[Message] = []
        self._trigger = ""
        self._ledger_queued = False  # ledger records queued since the last flush
        self._closes = 0  # CLOSE events handled by this process (stream retention runs every RETAIN_EVERY)

    # -- state -----------------------------------------------------------------
    @contextlib.contextmanager
    def unit(self, trigger: str, d: Delivery | None = None, *, crash: bool = True) -> Iterator[UnitOfWork]:
        """One unit of work (``Bus.unit_of_work``; ``trigger``: its provenance): what ``commit`` queues in the
        block (state, events, their alerts and ledger records) is committed on leaving it with ``d``'s XACK,
        in one script. No WATCH: the executor is one process (docs/executor.md), so one attempt commits.
        ``crash``: its commit is a ``before_commit``/``after_commit`` crash point (restart tests)."""
        points = ("before_commit", "after_commit") if crash else None
        for uow in self.ctx.bus.unit_of_work(GROUP, d, crash_points=points):
            with uow:
                self._uow, self._journal, self._trigger = uow, [], trigger
                try:
                    yield uow
                finally:
                    self._uow = None
        self.flush_ledger(only_if_queued=True)

    def load(self) -> ExecState:
        """The committed state."""
        raw = self.r.get(self.key)
        if raw:
            return msgspec.json.decode(raw, type=ExecState)
        st = ExecState(mode=self.mode, reconciled=self.external is None)
        if self.mode == "PAPER_SIM":
            st.sim = SimState(cash=self.starting_cash)
        return st

    def broker_for(self, st: ExecState) -> Broker | None:
        if self.external is not None:
            return self.external
        if st.sim is not None:
            return Simulator(st.sim, self.costs)
        return None

    def save_outbox(self, st: ExecState) -> None:
        """Commit the order records before a call leaves the process (the outbox), together with the
        events produced so far by this unit of work: the state written never runs ahead of its events."""
        events, self._journal = self._journal, []
        self._queue(st, events)
        assert self._uow is not None
        self._uow.checkpoint()
        crash_point("after_outbox")
        self.flush_ledger(only_if_queued=True)

    def commit(self, st: ExecState, events: list[Message]) -> None:
        """The end of a unit of work: state, the journal and ``events``, their alerts and ledger records
        (provenance: the unit's trigger), committed when the unit's block ends."""
        events = [*self._journal, *events]
        self._journal = []
        self._queue(st, events)

    def _queue(self, st: ExecState, events: list[Message]) -> None:
        uow = self._uow
        assert uow is not None, "the executor commits only inside a unit of work"
        uow.set(self.key, msgspec.json.encode(st))
        for m in [*events, *alerts_for(events)]:
            uow.emit(stream_for(m), m)
        prov = ledger.Provenance(settings_hash=self.settings_hash, broker_settings_hash=self.broker_settings_hash,
                                 mode=self.mode, run_id=self.run_id, trigger=self._trigger)
        lines = ledger.queue_lines(events, prov)
        if lines:
            uow.rpush(self.ledger_key, *lines)
            self._ledger_queued = True

    def flush_ledger(self, only_if_queued: bool = False) -> None:
        """Append the queued ledger records to their files. ``only_if_queued``: skip the read when this process
        queued none since its last flush (after a unit of work; start-up and every idle pass flush always)."""
        if only_if_queued and not self._ledger_queued:
            return
        self._ledger_queued = False
        ledger.flush(self.r, self.ledger_key, self.ledger_dir, self.mode)

    # -- messages ----------------------------------------------------------------
    def handle(self, msg: Message, d: Delivery | None) -> Committed | list[Emit]:
        """Handle one message in a unit of work: state, events, alerts and ledger records are committed
        together with the message's XACK (a crash before leaves it pending, after it nothing is)."""
        if not isinstance(msg, SessionEvent | BarBatch | EntryIntent | StopIntent | ExitIntent | FlattenRequest):
            return []
        with self.unit(trigger_of(msg), d) as uow:
            st = self.load()
            if isinstance(msg, SessionEvent):
                out = self.on_session(st, msg)
            elif isinstance(msg, BarBatch):
                out = self.on_bars(st, msg)
            elif isinstance(msg, FlattenRequest):
                out = self.on_flatten(st, msg)
            else:
                out = self.on_intent(st, msg)
            self.commit(st, out.events)
        assert uow.result is not None
        if isinstance(msg, SessionEvent) and msg.phase == "CLOSE":  # the executor is one replica: one janitor
            self._closes += 1
            if self._closes % RETAIN_EVERY == 1:  # every 5th CLOSE (the first after start too): a few extra sessions
                core_s = self.ctx.settings.core
                trim_history(self.r, core_s.bus_keep_sessions, core_s.bus_keep_sessions_bars)
        return uow.result

    def gates(self) -> core.Gates:
        """The entry controls now: the trading state (``shared.controls``: REDUCING, the kill switch, env
        ``KILL_SWITCH`` or an unreadable key block entries; HALTED blocks every new order but cancels) and
        the LIVE gate (re-checked, token file re-read). Read at every moment an order would be sent."""
        state = read_state(self.r, env_kill_switch=self.ctx.settings.core.kill_switch).state
        return core.Gates(kill_switch=state != "ACTIVE", kill_switch_unreadable=state == "UNREADABLE",
                          live_gate=live_gate(self.ctx.settings), halted=state == "HALTED")

    def halted(self) -> bool:
        return read_state(self.r).state == "HALTED"

    def start(self, *, reconcile: bool = True) -> None:
        """On process start: flush queued ledger records; with an external broker, start the
        trade-update stream (first, so nothing that happens during reconciliation is missed) and
        refuse entries (``reconciled=False``) until the broker's orders and positions are reconciled."""
        self.flush_ledger()
        if self.external is None:
            return
        if self.updates is not None:
            self.updates.start()
        with self.unit("", crash=False):
            st = self.load()
            st.reconciled = False
            self.commit(st, [])
        if reconcile:
            self.reconcile()

    def stop(self) -> None:
        """On process stop (after the last message): close the trade-update stream."""
        if self.updates is not None:
            self.updates.stop()


# -- process entry points --------------------------------------------------------------
def _token_on_file(settings: Settings) -> str | None:
    return read_token_file(settings.core.live_confirm_token_file)  # unreadable: None, the gate is closed


def live_gate(settings: Settings) -> str:
    """"" unless the mode is LIVE and its gate is closed now (then: why). Re-reads the token file."""
    c = settings.core
    if c.execution_mode != "LIVE":
        return ""
    return live_gate_check(live_trading=c.live_trading, token_on_file=_token_on_file(settings),
                           live_token=c.live_confirm_token.get_secret_value() if c.live_confirm_token else None) or ""


def refusal(settings: Settings, bs: BrokerSettings) -> str | None:
    c = settings.core
    return start_check(
        c.execution_mode, base_url=bs.apca_api_base_url, paper_url=bs.apca_paper_url, allow_local=bs.apca_allow_local_url,
        has_keys=bool(bs.apca_api_key_id and bs.apca_api_secret_key), live_trading=c.live_trading,
        live_token=c.live_confirm_token.get_secret_value() if c.live_confirm_token else None,
        token_on_file=_token_on_file(settings), stream_url=bs.apca_stream_url if bs.broker_trade_stream else None)


def make_broker(settings: Settings, bs: BrokerSettings, r: redis.Redis | None = None) -> Broker | None:
    """The broker adapter of the mode; in ALPACA modes every REST call goes through the limiter shared
    (in Redis) with every other process of the key (``rate_limit``)."""
    if settings.core.execution_mode in ("ALPACA_PAPER", "LIVE"):
        from .alpaca import AlpacaBroker
        from .rate_limit import from_settings

        return metrics.MeteredBroker(AlpacaBroker.from_settings(bs, paper=settings.core.execution_mode == "ALPACA_PAPER",
                                                                limiter=from_settings(r, bs)))
    return None


def make_updates(settings: Settings, bs: BrokerSettings) -> TradeUpdates | None:
    """The trade-update stream in ALPACA modes (``BROKER_TRADE_STREAM``), else None."""
    if settings.core.execution_mode in ("ALPACA_PAPER", "LIVE") and bs.broker_trade_stream:
        from .trade_stream import TradeUpdates

        return TradeUpdates.from_settings(bs, paper=settings.core.execution_mode == "ALPACA_PAPER")
    return None


def build_spec(bs: BrokerSettings, broker: Broker | None = None, updates: TradeUpdates | None = None) -> ServiceSpec:
    """The executor as a ``shared.service`` spec (``broker``/``updates``: injected by tests): ``build`` makes
    the ``Executor``, whose ``start``/``idle``/``stop`` are the service's hooks."""

    def build(ctx: ServiceContext) -> Executor:
        return Executor(ctx, bs, broker if broker is not None else make_broker(ctx.settings, bs, ctx.r),
                        updates if updates is not None else make_updates(ctx.settings, bs))

    return ServiceSpec(name=GROUP, streams=[INTENTS, CLOCK, BARS_1M, BARS_1D, CONTROL], build=build,
                       produces=[ORDERS, REJECTIONS, BROKER, ALERTS])


def refuse_to_start(settings: Settings, reason: str) -> int:
    """A start gate failed: one CRITICAL line, one critical ``refused_to_start`` alert, then idle without
    a heartbeat until stopped (``shared.service.refuse_and_idle``: no restart loop; exit code 2)."""
    c = settings.core
    setup_logging(c.log_level, c.log_format, service=GROUP)
    return refuse_and_idle(GROUP, "refused_to_start", f"executor refused to start {c.execution_mode}",
                           f"refusing to start {c.execution_mode}: {reason}", redis_url=c.redis_url,
                           runbook=RUNBOOK_REFUSED)


def main() -> int:
    try:
        settings = get_settings()
        bs = BrokerSettings()
    except ValidationError:  # one line naming every bad variable, an alert, idle (no restart loop)
        return idle_invalid_settings(GROUP, sections=(*SECTIONS, BrokerSettings))
    reason = refusal(settings, bs)
    if reason:
        return refuse_to_start(settings, reason)
    return run_service(build_spec(bs), settings)
