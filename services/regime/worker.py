"""Regime worker: on ``SessionEvent(PRE_MARKET, S)`` it labels the market as of the session before S
and returns the ``Regime`` for S on ``avwap:regime`` (docs/regime.md).

It reads the bar store (``BARS_DIR``, the last ``REGIME_HISTORY_BARS`` daily sessions before S),
writes ``<ARTIFACTS_DIR>/regimes/<D>.json`` (D = the as-of date; canonical bytes, so a redelivery or
a second replica rewrites the same file) and returns the message for the bus to commit with the ack.
Each session gets one Regime (the claim ``avwap:state:regime:published`` maps S to the PRE_MARKET
entry that publishes it: a redelivery of that entry returns the same message, a repeated clock
event returns nothing). It is REGIME_UNKNOWN, with a reason, when the bars are missing, stale or
short. Risk and analytics wait for it (with ``REGIME_MODULATION=1``) until the session's OPEN, as
risk waits for the broker snapshot, and then fail closed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shared.artifacts import code_version, provenance, sha256_bytes, write_json_artifact
from shared.bars import BarStore, Panel
from shared.bus import Delivery, Emit
from shared.clock import calendar
from shared.schemas import Message, Regime, SessionEvent
from shared.service import ServiceContext, ServiceSpec, Worker, run_service
from shared.settings import Settings
from shared.streams import CLOCK, REGIME, state_key
from shared.universe import UniverseError, read_universe

from .core import Params, classify

log = logging.getLogger(__name__)

ARTIFACT_SUBDIR = "regimes"
CLAIM_KEY = state_key("regime", "published")  # session -> the PRE_MARKET entry id that publishes its Regime


def params_for(settings: Settings) -> Params:
    return Params.from_settings(settings.regime, settings.scanner.scan_market_symbol)


def artifact_path(artifacts_dir: str | Path, date: str) -> Path:
    return Path(artifacts_dir) / ARTIFACT_SUBDIR / f"{date}.json"


def regime_for(panel: Panel, session: str, settings: Settings, ts: int = 0) -> Regime:
    """The Regime of ``session`` from ``panel`` (daily bars before the session)."""
    asof = calendar().previous_session(session)
    universe = None
    ufile = settings.scanner.scan_universe_file
    problem = ""
    if ufile:
        try:
            universe = list(read_universe(ufile))
        except UniverseError as exc:
            universe, problem = [], str(exc)
    digest = sha256_bytes(np.ascontiguousarray(panel.close, dtype=np.float64).tobytes()
                          + "\n".join(panel.dates).encode() + b"\0" + "\n".join(panel.symbols).encode())[:16]
    prov = provenance(settings.hash(), {"bars": digest, "bars_through": panel.dates[-1] if panel.dates else ""},
                      code=code_version(), **({"universe_error": problem} if problem else {}))
    return classify(panel.close, panel.dates, panel.symbols, asof, session, universe, params_for(settings), ts=ts,
                    provenance=prov)


class RegimeWorker(Worker):
    """One Regime per PRE_MARKET (labelled then: unlike the scan, ahead at CLOSE it saved no wall time and
    cost CPU, docs/performance.md)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.settings = ctx.settings
        self.store = BarStore(ctx.settings.core.bars_dir)

    def handle(self, msg: Message, d: Delivery) -> list[Emit]:
        if not isinstance(msg, SessionEvent) or msg.phase != "PRE_MARKET":
            return []
        r, mine = self.ctx.r, d.entry_id
        r.hsetnx(CLAIM_KEY, msg.trade_date, mine)
        owner = r.hget(CLAIM_KEY, msg.trade_date)
        if owner is not None and owner.decode() != mine:
            log.info("regime: %s already published for PRE_MARKET entry %s; nothing to do", msg.trade_date, owner.decode())
            return []  # a repeated clock event gives no second Regime (a redelivery of the same entry does)
        panel = self.store.daily_panel(before=msg.trade_date, lookback=self.settings.regime.regime_history_bars)
        reg = regime_for(panel, msg.trade_date, self.settings, ts=msg.ts)
        write_json_artifact(artifact_path(self.settings.core.artifacts_dir, reg.date), reg)
        log.info("regime: %s (as of %s) %s by %s: %s", reg.session, reg.date, reg.label, reg.rule, reg.reason)
        return [(REGIME, reg)]


SPEC = ServiceSpec(name="regime", streams=[CLOCK], build=RegimeWorker, produces=[REGIME])


def main() -> int:
    return run_service(SPEC)
