"""Circuit breakers on live equity: the pure core (no Redis, no clock).

Three breakers, each off unless configured (``BREAKER_*`` settings, docs/runbook.md "Circuit breakers"):

- ``daily_loss``: mark-to-market equity has fallen from the session's opening equity (the first
  equity seen for the session: its pre-market snapshot) by ``BREAKER_DAILY_LOSS_PCT`` percent or
  ``BREAKER_DAILY_LOSS_USD`` dollars;
- ``drawdown``: equity is ``BREAKER_MAX_DRAWDOWN_PCT`` percent or more below its high-water mark;
- ``consecutive_stops``: ``BREAKER_MAX_CONSECUTIVE_STOPS`` positions in a row were closed by their
  stop at a loss (a position closed any other way, or by a stop at a profit, resets the count).

Equity is marked and the breakers evaluated on every broker snapshot (the broker's equity, cash and
positions are the truth) and on every bar batch (cash + held shares at the bar's close); a fill moves
cash and shares from the first bar after it (or the snapshot that includes it), so the figures are the
same whichever of a fill and its bar a consumer reads first (replay = live, one replica = two). An equity that is not a positive finite number trips the equity breakers (fail closed).
A tripped breaker stays tripped until ``rearm``; re-arming starts its measurement again from the
current figures (daily loss from the current equity, the high-water mark at the current equity,
the stop-out count at zero).
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from shared.schemas import BarBatch, BrokerSnapshot, OrderEvent
from shared.schemas.controls import BreakerName
from shared.settings.analytics import AnalyticsSettings

KEEP_EVENT_IDS = 500


class BreakerConfig(msgspec.Struct, frozen=True, kw_only=True):
    daily_loss_pct: float | None = None
    daily_loss_usd: float | None = None
    max_drawdown_pct: float | None = None
    max_consecutive_stops: int | None = None
    trip_state: Literal["REDUCING", "HALTED"] = "REDUCING"

    def configured(self) -> list[BreakerName]:
        out: list[BreakerName] = []
        if self.daily_loss_pct is not None or self.daily_loss_usd is not None:
            out.append("daily_loss")
        if self.max_drawdown_pct is not None:
            out.append("drawdown")
        if self.max_consecutive_stops is not None:
            out.append("consecutive_stops")
        return out

    @classmethod
    def from_settings(cls, a: AnalyticsSettings) -> BreakerConfig:
        return cls(daily_loss_pct=a.breaker_daily_loss_pct, daily_loss_usd=a.breaker_daily_loss_usd,
                   max_drawdown_pct=a.breaker_max_drawdown_pct,
                   max_consecutive_stops=a.breaker_max_consecutive_stops, trip_state=a.breaker_trip_state)


class Trip(msgspec.Struct, frozen=True, kw_only=True):
    breaker: BreakerName
    ts: int
    reason: str
    figures: dict[str, float] = {}


class Holding(msgspec.Struct, kw_only=True):
    qty: int
    avg: float
    last: float


class Fill(msgspec.Struct, frozen=True, kw_only=True):
    """A fill as the breakers keep it until it is applied."""

    event_id: str
    symbol: str
    side: str
    kind: str
    qty: int
    price: float
    fees: float = 0.0
    ts: int


class BreakerBook(msgspec.Struct, kw_only=True):
    """Everything the breakers know (the ``avwap:control:breakers`` key)."""

    v: int = 1
    session: str = ""
    open_equity: float | None = None
    equity: float | None = None
    cash: float | None = None
    hwm: float | None = None
    holdings: dict[str, Holding] = {}
    consecutive_stops: int = 0
    tripped: dict[str, Trip] = {}
    last_ts: int = 0
    seen: list[str] = []  # ids of the fills already recorded (redelivery, two replicas)
    deferred: list[Fill] = []  # fills not applied yet (applied at the next bar after them, or a snapshot)
    snap_ts: int = 0  # the last broker snapshot's ts: fills at or before it are in its figures
    closed_avg: dict[str, float] = {}  # average entry of positions a snapshot closed (late stop fills)


_DEC = msgspec.json.Decoder(BreakerBook)


def decode_book(raw: bytes | str | None) -> BreakerBook | None:
    """The stored book (absent: a new one); None when it does not decode."""
    if raw is None:
        return BreakerBook()
    try:
        return _DEC.decode(raw)
    except msgspec.DecodeError:
        return None


def encode_book(book: BreakerBook) -> bytes:
    return msgspec.json.encode(book)


def tripped_names(raw: bytes | str | None) -> list[str]:
    """Names of the tripped breakers in a stored book (``book_unreadable`` when it does not decode)."""
    book = decode_book(raw)
    return ["book_unreadable"] if book is None else sorted(book.tripped)


def _ok(x: float | None) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def _new_session(book: BreakerBook, session: str, equity: float | None) -> None:
    if session and session > book.session:
        book.session = session
        book.open_equity = equity if _ok(equity) else None


def _mark(book: BreakerBook) -> None:
    if book.cash is None:
        return
    book.equity = round(book.cash + sum(h.qty * h.last for h in book.holdings.values()), 4)


def _apply_fill(book: BreakerBook, ev: Fill) -> None:
    """Cash and shares; a position closed by its stop below its average entry counts a stop-out."""
    h = book.holdings.get(ev.symbol)
    if ev.side == "buy":
        if h is None:
            book.holdings[ev.symbol] = Holding(qty=ev.qty, avg=ev.price, last=ev.price)
        else:
            h.avg = (h.avg * h.qty + ev.price * ev.qty) / (h.qty + ev.qty)
            h.qty += ev.qty
        if book.cash is not None:
            book.cash -= ev.qty * ev.price + ev.fees
        return
    if book.cash is not None:
        book.cash += ev.qty * ev.price - ev.fees
    if h is None:
        return
    h.qty -= ev.qty
    if h.qty <= 0:
        del book.holdings[ev.symbol]
        _count_close(book, ev, h.avg)


def _count_close(book: BreakerBook, ev: Fill, avg: float) -> None:
    loss_stop = ev.kind == "stop" and ev.price < avg
    book.consecutive_stops = book.consecutive_stops + 1 if loss_stop else 0


def _settle(book: BreakerBook, through_ts: int, *, inclusive: bool) -> None:
    """Apply the deferred fills up to ``through_ts`` (exclusive for a bar, inclusive for a snapshot), in
    (ts, id) order: the same book whatever order the fills and the bars arrived in."""
    due = [f for f in book.deferred if f.ts < through_ts or (inclusive and f.ts == through_ts)]
    if not due:
        return
    book.deferred = [f for f in book.deferred if f not in due]
    for f in sorted(due, key=lambda f: (f.ts, f.event_id)):
        _apply_fill(book, f)


def on_snapshot(book: BreakerBook, snap: BrokerSnapshot, cfg: BreakerConfig) -> list[Trip]:
    """The broker's figures replace the marks (new session: its opening equity). Deferred fills the
    snapshot includes (ts <= its ts) are applied first (stop-out counting), then overwritten."""
    _settle(book, snap.ts, inclusive=True)
    _new_session(book, snap.trade_date, snap.equity)
    for sym, h in book.holdings.items():  # positions the snapshot no longer holds: their average, for late fills
        if sym not in {p.symbol for p in snap.positions if p.qty}:
            book.closed_avg[sym] = h.avg
    book.cash = snap.cash
    book.holdings = {p.symbol: Holding(qty=p.qty, avg=p.avg_entry_price, last=p.current_price or p.avg_entry_price)
                     for p in snap.positions if p.qty}
    book.equity = snap.equity
    book.snap_ts = max(book.snap_ts, snap.ts)
    book.closed_avg = dict(list({k: v for k, v in book.closed_avg.items() if k not in book.holdings}.items())[-200:])
    if book.open_equity is None and _ok(snap.equity) and book.session == snap.trade_date:
        book.open_equity = snap.equity
    return evaluate(book, cfg, snap.ts)


def on_bars(book: BreakerBook, batch: BarBatch, cfg: BreakerConfig) -> list[Trip]:
    """Fills before the bar are applied, then held symbols are marked at their bar's close, then the
    breakers are evaluated (equity is evaluated on bars and snapshots only, never mid-bar)."""
    if not batch.bars:
        return []
    ts = max(b.ts for b in batch.bars)
    _settle(book, ts, inclusive=False)
    for b in batch.bars:
        h = book.holdings.get(b.symbol)
        if h is not None:
            h.last = b.close
    _mark(book)
    _new_session(book, batch.trade_date, book.equity)
    return evaluate(book, cfg, ts)


def on_fill(book: BreakerBook, ev: OrderEvent, cfg: BreakerConfig) -> list[Trip]:
    """A fill is recorded and applied at the next bar after it (or the snapshot that includes it), so the
    figures do not depend on whether the fill or its bar arrived first. A fill an earlier snapshot already
    includes changes no figure, but its stop-out still counts."""
    del cfg
    if ev.event not in ("filled", "partially_filled") or ev.fill_qty <= 0 or ev.fill_price is None:
        return []
    if ev.event_id in book.seen:
        return []
    book.seen = [*book.seen[-(KEEP_EVENT_IDS - 1):], ev.event_id]
    f = Fill(event_id=ev.event_id, symbol=ev.symbol, side=ev.side, kind=ev.kind, qty=int(ev.fill_qty),
             price=float(ev.fill_price), fees=float(ev.fees), ts=ev.ts)
    if ev.ts <= book.snap_ts:
        if f.side == "sell" and f.symbol in book.closed_avg and f.symbol not in book.holdings:
            _count_close(book, f, book.closed_avg[f.symbol])
        return []
    book.deferred.append(f)
    return []


def evaluate(book: BreakerBook, cfg: BreakerConfig, ts: int) -> list[Trip]:
    """New trips of the configured breakers (a tripped one is not tripped again)."""
    book.last_ts = max(book.last_ts, ts)
    names = cfg.configured()
    eq = book.equity
    out: list[Trip] = []
    if eq is not None and _ok(eq):
        book.hwm = eq if book.hwm is None else max(book.hwm, eq)

    def trip(name: BreakerName, reason: str, figures: dict[str, float]) -> None:
        if name in names and name not in book.tripped:
            t = Trip(breaker=name, ts=ts, reason=reason, figures={k: round(v, 4) for k, v in figures.items()})
            book.tripped[name] = t
            out.append(t)

    if eq is not None and not _ok(eq):
        for name in ("daily_loss", "drawdown"):
            trip(name, "equity is not a positive finite number (fail closed)", {"equity": eq if math.isfinite(eq) else -1.0})  # type: ignore[arg-type]
    elif eq is not None:
        base = book.open_equity
        if _ok(base):
            assert base is not None
            loss = base - eq
            pct = 100.0 * loss / base
            if (cfg.daily_loss_pct is not None and pct >= cfg.daily_loss_pct) or \
                    (cfg.daily_loss_usd is not None and loss >= cfg.daily_loss_usd):
                limit = f"{cfg.daily_loss_pct}%" if cfg.daily_loss_pct is not None else ""
                limit += (" / " if limit and cfg.daily_loss_usd is not None else "") + \
                    (f"${cfg.daily_loss_usd}" if cfg.daily_loss_usd is not None else "")
                trip("daily_loss", f"equity {eq:.2f} is {loss:.2f} ({pct:.2f}%) below the session's opening "
                     f"equity {base:.2f} (limit {limit})",
                     {"equity": eq, "open_equity": base, "loss": loss, "loss_pct": pct})
        if cfg.max_drawdown_pct is not None and _ok(book.hwm):
            assert book.hwm is not None
            dd = 100.0 * (book.hwm - eq) / book.hwm
            if dd >= cfg.max_drawdown_pct:
                trip("drawdown", f"equity {eq:.2f} is {dd:.2f}% below its high-water mark {book.hwm:.2f} "
                     f"(limit {cfg.max_drawdown_pct}%)", {"equity": eq, "high_water_mark": book.hwm, "drawdown_pct": dd})
    if cfg.max_consecutive_stops is not None and book.consecutive_stops >= cfg.max_consecutive_stops:
        trip("consecutive_stops", f"{book.consecutive_stops} positions in a row stopped out at a loss "
             f"(limit {cfg.max_consecutive_stops})", {"consecutive_stops": float(book.consecutive_stops)})
    return out


def rearm(book: BreakerBook, name: BreakerName) -> bool:
    """Clear a trip and restart its measurement from the current figures (False: it was not tripped)."""
    if name not in book.tripped:
        return False
    del book.tripped[name]
    if name == "daily_loss" and _ok(book.equity):
        book.open_equity = book.equity
    elif name == "drawdown" and _ok(book.equity):
        book.hwm = book.equity
    elif name == "consecutive_stops":
        book.consecutive_stops = 0
    return True


def status(book: BreakerBook | None, cfg: BreakerConfig) -> dict[str, object]:
    """A plain summary for the CLI and Slack (figures rounded)."""
    if book is None:
        return {"readable": False}
    dd = None
    if book.equity is not None and _ok(book.hwm):
        dd = round(100.0 * (book.hwm - book.equity) / book.hwm, 4)  # type: ignore[operator]
    day = None
    if book.equity is not None and _ok(book.open_equity):
        day = round(100.0 * (book.open_equity - book.equity) / book.open_equity, 4)  # type: ignore[operator]
    return {
        "readable": True, "configured": cfg.configured(), "trip_state": cfg.trip_state, "session": book.session,
        "equity": book.equity, "open_equity": book.open_equity, "high_water_mark": book.hwm,
        "daily_loss_pct": day, "drawdown_pct": dd, "consecutive_stops": book.consecutive_stops,
        "tripped": {k: {"ts": t.ts, "reason": t.reason, "figures": dict(t.figures)} for k, t in sorted(book.tripped.items())},
        "limits": {"daily_loss_pct": cfg.daily_loss_pct, "daily_loss_usd": cfg.daily_loss_usd,
                   "max_drawdown_pct": cfg.max_drawdown_pct, "max_consecutive_stops": cfg.max_consecutive_stops},
    }
