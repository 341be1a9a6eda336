"""No look-ahead, byte-identical reruns, the bar store and a file give the same bytes, shards merge
to the unsharded bytes; the bench's pandas reference agrees with the vectorized scan on real data."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import pytest

from services.scanner import shards
from services.scanner.artifacts import artifact_bytes
from services.scanner.core import scan, symbol_results
from services.scanner.session import last_session_before, scan_for, store_panel
from shared.bars import BarStore, LoadResult, Panel, load_bars
from shared.settings import load_settings
from tests.conftest import DAILY_FILE, ROOT

SETTINGS = load_settings(scan_market_gate="universe_proxy")
D = "2018-10-01"


@pytest.fixture(scope="module")
def real() -> LoadResult:
    return load_bars(DAILY_FILE)


def file_scan(frame, d: str = D, settings=SETTINGS) -> dict[str, bytes]:  # noqa: ANN001
    pan = Panel.from_frame(frame, before=d, lookback=settings.scanner.scan_history_bars)
    return artifact_bytes(scan_for(pan, d, settings))


def test_no_look_ahead_bars_on_or_after_d_change_nothing(real: LoadResult) -> None:
    full = file_scan(real.frame)
    assert b'"candidates":[{' in full["batch"]  # a real, non-empty batch
    through_d = real.frame[real.frame["trade_date"] <= D]  # the truncation: nothing after D
    assert file_scan(through_d) == full
    before_d = real.frame[real.frame["trade_date"] < D]
    assert file_scan(before_d) == full
    bent = real.frame.copy()  # D's own bars and everything later, changed wildly: still the same scan
    later = bent["trade_date"] >= D
    bent.loc[later, ["open", "high", "low", "close"]] *= 3.0
    bent.loc[later, "volume"] = 1.0
    assert file_scan(bent) == full


def test_rerun_is_byte_identical(real: LoadResult) -> None:
    assert file_scan(real.frame) == file_scan(real.frame)


def test_the_bar_store_gives_the_bytes_of_the_file(real: LoadResult, tmp_path: Path) -> None:
    store = BarStore(tmp_path / "bars")
    part = real.frame[(real.frame["trade_date"] >= "2017-06-01") & (real.frame["trade_date"] < "2018-10-05")]
    store.import_result(LoadResult(tf="1d", frame=part))
    for d in ("2018-09-04", D):
        from_store = artifact_bytes(scan_for(store_panel(store, d, SETTINGS), d, SETTINGS))
        assert from_store == file_scan(part, d)


def test_settings_outside_the_scanner_section_do_not_change_the_artifacts(real: LoadResult) -> None:
    other = load_settings(scan_market_gate="universe_proxy", execution_mode="PAPER_SIM", account_equity=5e5,
                          scan_shard_timeout_s=5, scan_rq_queue="other")
    assert file_scan(real.frame, settings=other) == file_scan(real.frame)
    changed = load_settings(scan_market_gate="universe_proxy", scan_top_n=10)
    assert file_scan(real.frame, settings=changed)["batch"] != file_scan(real.frame)["batch"]


@pytest.mark.parametrize("n", [2, 3, 7, 470])
def test_shards_merge_to_the_unsharded_bytes(real: LoadResult, n: int) -> None:
    p = SETTINGS.scanner
    pan = Panel.from_frame(real.frame, before=D, lookback=p.scan_history_bars)
    last = last_session_before(D)
    whole = scan(pan, None, {}, D, last, p)
    parts = shards.split(pan.symbols, n)
    assert len(parts) == min(n, len(pan.symbols)) and sorted(sum(parts, [])) == pan.symbols
    results = []
    for part in parts:  # through the job's own encoding, as an rq worker runs it
        payload = shards.encode_payload(pan, part, {}, D, last, p)
        results.extend(shards._RESULTS.decode(base64.b64decode(shards.run_shard(payload))))
    merged = scan(pan, None, {}, D, last, p, results=results)
    assert artifact_bytes(merged) == artifact_bytes(whole)
    assert symbol_results(pan.select(parts[0]), parts[0], {}, D, last, p) == results[:len(parts[0])]


def test_the_pandas_reference_agrees_with_the_scan_on_real_data(real: LoadResult) -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from scan_reference import reference_scan

    p = load_settings(scan_market_gate="off").scanner
    for d in ("2016-06-01", D):
        pan = Panel.from_frame(real.frame, before=d, lookback=p.scan_history_bars)
        last = last_session_before(d)
        res = scan(pan, None, {}, d, last, p)
        ref, codes = reference_scan(real.frame, d, last, p)
        assert [(c.symbol, c.anchor, c.anchor_date) for c in res.batch.candidates] == [
            (c.symbol, c.anchor, c.anchor_date) for c in ref]
        assert len(ref) == p.scan_top_n
        mine = {s: r["code"] for s, r in res.rejects["rejects"].items()} | {c.symbol: "CANDIDATE" for c in res.batch.candidates}
        assert mine == codes
        for a, b in zip(res.batch.candidates, ref, strict=True):
            assert a.avwap == pytest.approx(b.avwap, abs=6e-5) and a.stop_loss == pytest.approx(b.stop, abs=6e-5)
            assert a.score == pytest.approx(b.score, abs=6e-5) and a.band_sigma == pytest.approx(b.sigma, abs=6e-5)


def test_column_blocks_on_threads_equal_one_block(real: LoadResult) -> None:
    from dataclasses import fields

    import numpy as np

    from services.scanner.compute import compute, compute_blocks

    p = SETTINGS.scanner
    pan = Panel.from_frame(real.frame, before=D, lookback=p.scan_history_bars)
    arrs = (pan.open, pan.high, pan.low, pan.close, pan.volume)
    whole = compute(*arrs, pan.dates, p)
    for chunk in (2, 37, 129):  # 478 columns: the last block of 478 % 37 = 34, of 478 % 129 = 91 columns
        got = compute_blocks(*arrs, pan.dates, p, chunk=chunk, threads=2)
        for f in fields(whole):
            np.testing.assert_array_equal(getattr(got, f.name), getattr(whole, f.name), err_msg=f"{chunk} {f.name}")
    one = compute_blocks(*arrs, pan.dates, p, chunk=477)  # would leave a 1-column block: merged into the previous
    np.testing.assert_array_equal(one.avwap, whole.avwap)
