"""Risk modulation by the market regime (pure; docs/regime.md). Used by risk's sizing and by
analytics' decisions, so both apply the same table and the same drawdown curve.

``effect(table, regime, drawdown)`` gives the multipliers on risk per trade and on the gross
exposure cap and the cap on new entries per day for one session:

- the row of the regime's label; REGIME_UNKNOWN (or no regime at all) takes the most
  conservative value of every column (the minimum over the four labels);
- times the drawdown multiplier of the portfolio's drawdown from its high-water mark:
  1 up to ``dd_start_pct``, falling linearly to ``dd_floor`` at ``dd_full_pct``, ``dd_floor`` beyond;
  an unknown drawdown takes the floor (fail closed).
"""

from __future__ import annotations

import math

import msgspec

from shared.schemas import Regime
from shared.settings.regime import RegimeSettings

LABELS = ("RISK_ON", "NEUTRAL", "RISK_OFF", "STRESSED")
UNKNOWN = "REGIME_UNKNOWN"
# reason codes on a decision the modulation changed
REGIME_UNKNOWN, REGIME_ENTRY_CAP, REGIME_THROTTLED = "REGIME_UNKNOWN", "REGIME_ENTRY_CAP", "REGIME_THROTTLED"


class Row(msgspec.Struct, frozen=True, kw_only=True):
    risk_mult: float
    gross_mult: float
    max_entries: int


class Table(msgspec.Struct, frozen=True, kw_only=True):
    """The modulation table and the drawdown curve (built by a shell from ``RegimeSettings``)."""

    rows: dict[str, Row]
    dd_start_pct: float = 3.0
    dd_full_pct: float = 10.0
    dd_floor: float = 0.25

    @classmethod
    def from_settings(cls, rs: RegimeSettings) -> Table:
        def row(name: str) -> Row:
            return Row(risk_mult=getattr(rs, f"regime_risk_mult_{name}"), gross_mult=getattr(rs, f"regime_gross_mult_{name}"),
                       max_entries=getattr(rs, f"regime_max_entries_{name}"))

        return cls(rows={lab: row(lab.lower()) for lab in LABELS}, dd_start_pct=rs.regime_dd_throttle_start_pct,
                   dd_full_pct=rs.regime_dd_throttle_full_pct, dd_floor=rs.regime_dd_throttle_floor)

    def conservative(self) -> Row:
        rows = list(self.rows.values())
        return Row(risk_mult=min(r.risk_mult for r in rows), gross_mult=min(r.gross_mult for r in rows),
                   max_entries=min(r.max_entries for r in rows))


class Effect(msgspec.Struct, frozen=True, kw_only=True):
    label: str  # the label applied (REGIME_UNKNOWN when the regime was missing or unknown)
    regime_id: str
    risk_mult: float  # row x drawdown multiplier
    gross_mult: float
    max_entries: int
    dd_mult: float
    unknown: bool


def drawdown_multiplier(drawdown_pct: float | None, start: float, full: float, floor: float) -> float:
    """The documented curve: 1 up to ``start`` %, linear to ``floor`` at ``full`` %, ``floor`` beyond (None: floor)."""
    if drawdown_pct is None or not math.isfinite(drawdown_pct):
        return floor
    dd = abs(drawdown_pct)
    if dd <= start:
        return 1.0
    if dd >= full or full <= start:
        return floor
    return round(1.0 - (1.0 - floor) * (dd - start) / (full - start), 6)


def effect(table: Table, regime: Regime | None, drawdown_pct: float | None) -> Effect:
    """The modulation of one session (pure)."""
    unknown = regime is None or regime.label not in table.rows
    row = table.conservative() if unknown else table.rows[regime.label]  # type: ignore[union-attr]
    dd = drawdown_multiplier(drawdown_pct, table.dd_start_pct, table.dd_full_pct, table.dd_floor)
    return Effect(label=UNKNOWN if unknown else regime.label, regime_id=regime.regime_id if regime else "",  # type: ignore[union-attr]
                  risk_mult=round(row.risk_mult * dd, 6), gross_mult=round(row.gross_mult * dd, 6),
                  max_entries=row.max_entries, dd_mult=dd, unknown=unknown)


def changed_codes(eff: Effect, *, throttled: bool = False, capped: bool = False) -> list[str]:
    """The codes of a decision the modulation changed (empty when it did not)."""
    if not (throttled or capped):
        return []
    codes = [REGIME_UNKNOWN] if eff.unknown else []
    if capped:
        codes.append(REGIME_ENTRY_CAP)
    if throttled:
        codes.append(REGIME_THROTTLED)
    return codes
