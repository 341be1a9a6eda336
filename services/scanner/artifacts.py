"""The scan's files under ``<ARTIFACTS_DIR>/candidates/``, and the answer to "why not X?".

- ``D.json``: the ``CandidateBatch`` for session D (canonical JSON).
- ``D.rejects.json``: every universe symbol that is not a candidate -> the first filter it
  failed and the values that failed; counts per outcome; provenance (which also records the
  sha256 of the CSV).
- ``D.csv``: the old ``daily_candidates.csv`` columns, one row per candidate, best first.

All three are pure functions of the scan result (byte-identical on rerun) and written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from shared.artifacts import canonical_json, sha256_bytes, to_plain, under, write_atomic_many
from shared.schemas import CandidateBatch

from .core import SETUPS, ScanResult

SUBDIR = "candidates"
CSV_COLUMNS = ("SchemaVersion", "ScanDate", "Symbol", "Direction", "TrendTier", "Price", "Entry_Level",
               "Entry_DistPct", "Stop_Loss", "Target_R1", "Target_R2", "TrendScore", "Sector", "Anchor",
               "AVWAP_Slope", *(f"Setup_{s.title()}" for s in SETUPS))


def paths(root: str | Path, scan_date: str) -> dict[str, Path]:
    return {"batch": under(root, SUBDIR, f"{scan_date}.json"), "rejects": under(root, SUBDIR, f"{scan_date}.rejects.json"),
            "csv": under(root, SUBDIR, f"{scan_date}.csv")}


def csv_bytes(batch: CandidateBatch) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for c in batch.candidates:
        w.writerow([batch.v, batch.scan_date, c.symbol, c.direction, c.trend_tier, f"{c.price:.4f}",
                    f"{c.entry_level:.4f}", f"{c.entry_dist_pct:.4f}", f"{c.stop_loss:.4f}", f"{c.target_r1:.4f}",
                    f"{c.target_r2:.4f}", f"{c.trend_score:.4f}", c.sector, c.anchor, f"{c.avwap_slope:.4f}",
                    *(int(s in c.setups) for s in SETUPS)])
    return buf.getvalue().encode()


def artifact_bytes(result: ScanResult) -> dict[str, bytes]:
    """name -> bytes of the three artifacts."""
    csv_b = csv_bytes(result.batch)
    rejects = dict(result.rejects)
    rejects["provenance"] = {**result.batch.provenance, "output:csv_sha256": sha256_bytes(csv_b)}
    return {"batch": canonical_json(result.batch), "rejects": canonical_json(rejects), "csv": csv_b}


def write_artifacts(root: str | Path, result: ScanResult, files: dict[str, bytes] | None = None) -> dict[str, Path]:
    """Write the three files atomically (the batch last, so a batch file always has its companions);
    ``files``: their bytes when rendered already (``artifact_bytes(result)``)."""
    files = files if files is not None else artifact_bytes(result)
    out = paths(root, result.batch.scan_date)
    write_atomic_many({out[name]: files[name] for name in ("csv", "rejects", "batch")})
    return out


def explain(root: str | Path, symbol: str, scan_date: str) -> tuple[bool, str]:
    """(found, one-paragraph answer) to "why was SYMBOL (not) a candidate on scan_date?"."""
    p = paths(root, scan_date)
    if not p["batch"].exists():
        return False, f"no scan artifacts for {scan_date} under {Path(root) / SUBDIR}"
    sym = symbol.upper()
    batch = json.loads(p["batch"].read_bytes())
    for c in batch["candidates"]:
        if c["symbol"] == sym:
            return True, (f"{sym} IS a candidate on {scan_date}: rank {c['rank']}, score {c['score']}, anchor "
                          f"{c['anchor']} ({c['anchor_date']}), entry {c['entry_level']}, stop {c['stop_loss']}, "
                          f"setups {','.join(c['setups']) or '-'}")
    rejects = json.loads(p["rejects"].read_bytes()) if p["rejects"].exists() else {"rejects": {}}
    r = rejects["rejects"].get(sym)
    if r is None:
        return False, (f"{sym} was not in the {scan_date} universe ({batch['universe_size']} symbols: those with a "
                       f"daily bar in the history window, or the universe file)")
    vals = json.dumps(to_plain(r["values"]), sort_keys=True)
    gate = "" if batch["market_gate_ok"] else f"; market gate closed ({batch['market_gate_reason']})"
    hint = ""
    if r["code"] == "STOP_NOT_BELOW_ENTRY":
        v = r["values"]
        hint = (f" (its stop {v.get('stop_loss')} is at or above its entry {v.get('entry_level')}: a long with no "
                "room between entry and stop cannot be traded)")
    return True, f"{sym} was not a candidate on {scan_date}: {r['code']} {vals}{gate}{hint}"
