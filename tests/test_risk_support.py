"""Builders shared by the risk tests (messages of one session, a reducer driver)."""

from __future__ import annotations

from collections.abc import Iterable

from services.risk.core import Controls, Limits, RiskState, step
from shared.clock import dt_to_ns, ny_datetime
from shared.ids import stable_id
from shared.schemas import (
    BrokerPosition,
    BrokerSnapshot,
    Candidate,
    CandidateBatch,
    EntryIntent,
    Message,
    PortfolioDecision,
    PortfolioDecisionBatch,
    Rejection,
    SessionEvent,
)

D = "2018-12-03"


def ts_at(d: str, hhmm: str) -> int:
    return dt_to_ns(ny_datetime(d, hhmm))


def session(d: str = D, phase: str = "PRE_MARKET", hhmm: str | None = None) -> SessionEvent:
    times = {"PRE_MARKET": "08:30", "OPEN": "09:30", "WINDOW_OPEN": "09:35", "CLOSE": "16:00"}
    return SessionEvent(trade_date=d, phase=phase, ts=ts_at(d, hhmm or times[phase]))


def cand(symbol: str = "AAPL", entry: float = 100.0, stop: float = 98.0, score: float = 90.0, d: str = D,
         direction: str = "LONG") -> Candidate:
    return Candidate(candidate_id=stable_id("cd", d, symbol), scan_date=d, symbol=symbol, direction=direction, price=entry + 1,
                     anchor="SWING_LOW", anchor_date="2018-11-20", avwap=entry, entry_level=entry, entry_dist_pct=1.0,
                     stop_loss=stop, target_r1=entry + 5, target_r2=entry + 8, trend_score=10.0, avwap_slope=0.5,
                     score=score)


def batch(cands: Iterable[Candidate], d: str = D) -> CandidateBatch:
    cs = list(cands)
    return CandidateBatch(batch_id=stable_id("cb", d, [c.candidate_id for c in cs]), scan_date=d, market_gate_ok=True,
                          candidates=cs, universe_size=len(cs))


def snapshot(d: str = D, equity: float = 100_000.0, cash: float | None = None, positions: Iterable[BrokerPosition] = (),
             hhmm: str = "08:30", reconciled: bool = True, ts: int | None = None) -> BrokerSnapshot:
    t = ts if ts is not None else ts_at(d, hhmm)
    return BrokerSnapshot(snapshot_id=stable_id("bs", d, t), mode="PAPER_SIM", trade_date=d, ts=t, equity=equity,
                          cash=equity if cash is None else cash, buying_power=equity, positions=list(positions),
                          reconciled=reconciled, reason="pre_market")


def position(symbol: str, qty: int, price: float) -> BrokerPosition:
    return BrokerPosition(symbol=symbol, qty=qty, avg_entry_price=price, market_value=qty * price, current_price=price)


def decisions(cb: CandidateBatch, verdicts: dict[str, str] | None = None, d: str | None = None,
              link: bool = True, provenance: dict[str, str] | None = None) -> PortfolioDecisionBatch:
    verdicts = verdicts or {}
    ds = []
    for c in cb.candidates:
        v = verdicts.get(c.symbol, "ALLOW")
        ds.append(PortfolioDecision(decision_id=stable_id("pd", c.candidate_id), symbol=c.symbol, candidate_id=c.candidate_id,
                                    decision=v, reason_codes=["ALLOW_WITHIN_LIMITS" if v == "ALLOW" else "LIMIT_GROSS_EXPOSURE"]))
    date = d or cb.scan_date
    return PortfolioDecisionBatch(batch_id=stable_id("pdb", date, cb.batch_id), date=date, decisions=ds,
                                  candidates_batch_id=cb.batch_id if link else "",
                                  provenance={"decision_artifact": f"portfolio_decisions/{date}.json", "run_id": "run-1"}
                                  if provenance is None else provenance)


def run(msgs: Iterable[Message], controls: Controls | None = None, limits: Limits | None = None,
        state: RiskState | None = None) -> tuple[RiskState, list[tuple[str, Message]]]:
    st = state or RiskState()
    emits: list[tuple[str, Message]] = []
    for i, m in enumerate(msgs):
        res = step(st, m, controls or Controls(), limits or Limits(), entry_ms=1000 + i)
        st = res.state
        emits.extend(res.emits)
    return st, emits


def intents(emits: list[tuple[str, Message]]) -> list[EntryIntent]:
    return [m for _, m in emits if isinstance(m, EntryIntent)]


def rejections(emits: list[tuple[str, Message]]) -> list[Rejection]:
    return [m for _, m in emits if isinstance(m, Rejection)]
