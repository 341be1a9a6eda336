"""One spelling of the entry reason codes: the gate table, the wire's closed set, the executor's
codes, and risk's state written before the Phase C codes were upper case (upcast on load)."""

from __future__ import annotations

import msgspec
import pytest

from services.executor import model as exec_model
from services.risk.gates import CODES, GATES
from services.risk.state import RiskState, decode_state, encode_state
from services.risk.telemetry import DecisionRecord
from shared.schemas import EXECUTOR_CODES, LEGACY_CODES, REJECTION_CODES, RISK_CODES

D = "2018-12-03"


def test_the_gate_table_is_the_wires_closed_set_and_upper_case() -> None:
    assert CODES == RISK_CODES and len(GATES) == len(set(CODES))
    assert all(c == c.upper() for c in REJECTION_CODES)
    assert set(LEGACY_CODES.values()) <= set(RISK_CODES) and not set(LEGACY_CODES) & set(REJECTION_CODES)
    executor = {v for k, v in vars(exec_model).items() if k.startswith("R_") and isinstance(v, str)}
    assert executor <= set(REJECTION_CODES) and set(EXECUTOR_CODES) <= executor


def _record(reasons: list[str]) -> DecisionRecord:
    return DecisionRecord(ord=0, session=D, trade_date=D, candidate_id="cd-1", symbol="AAPL", batch_id="cb",
                          outcome="rejection", message_id="rj-1", reasons=reasons, decision_ts=1, ny_day=D,  # type: ignore[arg-type]
                          enforcement="shadow")


def test_a_state_written_with_lower_case_codes_is_upcast_on_load() -> None:
    st = RiskState(session=D, decided={D: {"cd-1": _record(["PHASE_C_LIVE_DATE_NOT_PERMITTED", "SYMBOL_NOT_ALLOWLISTED"])}})
    new = encode_state(st)
    old = new.replace(b'"PHASE_C_LIVE_DATE_NOT_PERMITTED"', b'"phase_c_live_date_not_permitted"')
    assert old != new
    back = decode_state(old)
    assert back.decided[D]["cd-1"].reasons == ["PHASE_C_LIVE_DATE_NOT_PERMITTED", "SYMBOL_NOT_ALLOWLISTED"]
    assert encode_state(back) == new


def test_a_state_with_a_code_that_never_was_one_still_fails() -> None:
    raw = encode_state(RiskState(session=D, decided={D: {"cd-1": _record(["SYMBOL_NOT_ALLOWLISTED"])}}))
    with pytest.raises(msgspec.ValidationError):
        decode_state(raw.replace(b'"SYMBOL_NOT_ALLOWLISTED"', b'"NOT_A_CODE"'))
