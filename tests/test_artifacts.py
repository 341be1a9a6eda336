"""Canonical JSON byte-stability, atomic writes, crash-safe JSONL, ids."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.artifacts import (
    append_jsonl,
    canonical_json,
    canonical_json_of,
    decode_for_canonical,
    read_jsonl,
    write_json_artifact,
)
from shared.ids import client_order_id, stable_id
from shared.schemas import Alert


def test_canonical_json_is_byte_stable_and_sorted() -> None:
    a = {"b": 1.0, "a": [0.1 + 0.2, -0.0, 1e-12], "c": {"z": 1, "y": "é"}}
    b = {"c": {"y": "é", "z": 1}, "a": [0.30000000000000004, 0.0, 0.0], "b": 1.0}
    assert canonical_json(a) == canonical_json(b)
    assert canonical_json(a) == '{"a":[0.3,0.0,0.0],"b":1.0,"c":{"y":"é","z":1}}\n'.encode()


def test_canonical_json_rejects_nan() -> None:
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_structs_serialize_canonically() -> None:
    al = Alert(alert_id="x", severity="info", kind="k", source="s", title="t")
    data = canonical_json(al)
    assert data.endswith(b"\n")
    assert list(json.loads(data)) == sorted(json.loads(data))


def test_write_atomic_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "d" / "x.json"
    write_json_artifact(p, {"a": 1})
    write_json_artifact(p, {"a": 2})
    assert p.read_bytes() == b'{"a":2}\n'
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_torn_last_line_is_skipped_and_isolated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    p = tmp_path / "l.jsonl"
    append_jsonl(p, [{"n": 1}])
    with open(p, "ab") as fh:
        fh.write(b'{"n": 2, "tor')  # crash mid-write
    assert [r["n"] for r in read_jsonl(p)] == [1]
    append_jsonl(p, [{"n": 3}])
    assert [r["n"] for r in read_jsonl(p)] == [1, 3]
    assert "torn" in caplog.text


def test_stable_ids() -> None:
    assert stable_id("in", "a", 1, 2.5) == stable_id("in", "a", 1, 2.5)
    assert stable_id("in", "a", 1) != stable_id("in", "a", 2)
    coid = client_order_id("in-123")
    assert coid == client_order_id("in-123") and len(coid) <= 48


def test_write_atomic_many_writes_every_file_and_leaves_no_temp(tmp_path) -> None:
    from shared.artifacts import write_atomic_many

    files = {tmp_path / "a" / "x.csv": b"1\n", tmp_path / "a" / "x.json": b"{}\n", tmp_path / "b" / "y.json": b"[]\n"}
    assert write_atomic_many(files) == list(files)
    for p, data in files.items():
        assert p.read_bytes() == data
    write_atomic_many({tmp_path / "a" / "x.json": b'{"v":2}\n'})  # replaced whole
    assert (tmp_path / "a" / "x.json").read_bytes() == b'{"v":2}\n'
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_artifacts_fsync_is_the_process_default_and_fsync_off_restores_it(tmp_path, monkeypatch) -> None:
    """ARTIFACTS_FSYNC (``set_fsync`` at service start) decides whether a write fsyncs by default; an explicit
    ``fsync=`` wins; ``fsync_off`` turns it off for a block only. The bytes and the atomic rename are the same."""
    import os

    from shared import artifacts
    from shared.bars import BarStore
    from shared.schemas import BarRow

    calls: list[int] = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(fd) or real(fd))
    bar = BarRow(symbol="AAA", ts=1_514_926_800_000_000_000, open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0)
    try:
        artifacts.write_atomic(tmp_path / "a.json", b"x")
        artifacts.append_jsonl(tmp_path / "l.jsonl", [{"a": 1}])
        assert len(calls) == 3  # file + directory, and the appended file
        artifacts.set_fsync(False)
        calls.clear()
        artifacts.write_atomic(tmp_path / "a.json", b"y")
        artifacts.append_jsonl(tmp_path / "l.jsonl", [{"a": 2}])
        BarStore(tmp_path / "bars").append("1d", [bar])
        assert calls == [] and (tmp_path / "a.json").read_bytes() == b"y"
        artifacts.write_atomic(tmp_path / "a.json", b"z", fsync=True)
        assert len(calls) == 2
        artifacts.set_fsync(True)
        calls.clear()
        with artifacts.fsync_off():
            BarStore(tmp_path / "bars").append("1d", [bar])
        assert calls == []
        BarStore(tmp_path / "bars").append("1d", [bar])
        assert len(calls) == 1
    finally:
        artifacts.set_fsync(True)


_KEYS = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6)
_FLOATS = st.one_of(st.floats(allow_nan=False, allow_infinity=False),
                    st.floats(min_value=-1e-3, max_value=1e-3, allow_nan=False),  # where repr switches to e-notation
                    st.floats(min_value=1e14, max_value=1e18),  # where repr switches at 1e16
                    st.decimals(places=8, min_value=-10**9, max_value=10**9, allow_nan=False).map(float),
                    st.sampled_from([0.0, -0.0, 1e16, 1e-5, 1e-4, 0.0001, 0.00009999, 5e-9, 4.9999999e-9, 1.2345678949,
                                     1e22, 123456789.123456789, 12345678.12345678, 9999999999999998.0,
                                     1234567890123456.7, 0.30000000000000004, 2.675, 1.000000005]))
_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**63, max_value=2**63 - 1), _FLOATS, _KEYS)
_DOCS = st.recursive(_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(_KEYS, inner, max_size=4)), max_leaves=25)


@settings(max_examples=400, deadline=None)
@given(_DOCS)
def test_the_canonical_bytes_of_stored_json_are_canonical_json_s(doc: object) -> None:
    """``canonical_json_of(decode_for_canonical(b))`` (analytics' ledger lines, without the walk in Python) is
    ``canonical_json(json.loads(b))`` byte for byte: floats rounded and written as repr, strings escaped as
    json.dumps escapes them, keys sorted by code point."""
    data = json.dumps(doc, ensure_ascii=False).encode()
    assert canonical_json_of(decode_for_canonical(data)) == canonical_json(json.loads(data))
    nested = {"key": "k", "record": decode_for_canonical(data)}
    assert canonical_json_of(nested) == canonical_json({"key": "k", "record": json.loads(data)})


class _Rec(msgspec.Struct, frozen=True):
    name: str
    values: dict[str, float]
    items: tuple[float | None, ...] = ()
    when: int = 0


_RECS = st.builds(_Rec, name=_KEYS, values=st.dictionaries(_KEYS, _FLOATS, max_size=4),
                  items=st.lists(st.one_of(st.none(), _FLOATS), max_size=3).map(tuple), when=st.integers(0, 2**62))


@settings(max_examples=400, deadline=None)
@given(st.one_of(_DOCS, _RECS, st.lists(_RECS, max_size=3), st.dictionaries(_KEYS, _RECS, max_size=3)))
def test_canonical_json_through_msgspec_is_the_walks_bytes(obj: object) -> None:
    """``canonical_json`` (msgspec's JSON, floats made canonical by its decoder, keys sorted by its encoder) gives
    the bytes of the walk in Python, for documents, Structs, tuples and None alike."""
    from shared.artifacts import _canonical_json_walk

    assert canonical_json(obj) == _canonical_json_walk(obj)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_canonical_json_still_refuses_a_non_finite_float(bad: float) -> None:
    with pytest.raises(ValueError, match="non-finite"):
        canonical_json(_Rec(name="x", values={"a": bad}))
    with pytest.raises(ValueError, match="non-finite"):
        canonical_json({"deep": [1.0, None, {"x": bad}]})
