"""The sweep's table, ranking, heat map and walk-forward stitching (pure over job results, plus writers).

One row per finished point (and per walk-forward window run): ``window``, ``point``,
``settings_hash``, ``start``, ``end``, each swept parameter, each headline metric and the
``effective_settings_hash`` the services recorded. Rows are sorted by (window, point) and floats
are rounded to 8 decimals, so the table's bytes depend only on the results, never on which worker
finished first.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from services.analytics.runreport import HEADLINE_KEYS
from shared.artifacts import write_atomic_many


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return round(v, 8) if math.isfinite(v) else None
    return v


def row_of(result: Mapping[str, Any], window: str, point: int, params: Mapping[str, Any], start: str,
           end: str) -> dict[str, Any]:
    row: dict[str, Any] = {"window": window, "point": int(point), "settings_hash": result["settings_hash"],
                           "start": start, "end": end}
    row.update({f"param:{k}": v for k, v in sorted(params.items())})
    row.update({k: _round(result["metrics"].get(k)) for k in HEADLINE_KEYS})
    row["effective_settings_hash"] = result.get("effective_settings_hash", "")
    return row


def sort_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(r) for r in sorted(rows, key=lambda r: (str(r["window"]), int(r["point"])))]


def table_bytes(rows: Sequence[Mapping[str, Any]]) -> tuple[bytes, bytes]:
    """(parquet, csv) bytes of the sorted rows."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    frame = pd.DataFrame(sort_rows(rows))
    csv = frame.to_csv(index=False, lineterminator="\n").encode()
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buf, compression="zstd")
    return buf.getvalue(), csv


def write_table(out: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    pq_bytes, csv = table_bytes(rows)
    write_atomic_many({out / "results.parquet": pq_bytes, out / "results.csv": csv}, fsync=False)


def read_rows(out: Path) -> list[dict[str, Any]]:
    """The rows of an earlier run's ``results.parquet`` (empty when there is none)."""
    import pandas as pd

    p = out / "results.parquet"
    if not p.exists():
        return []
    frame = pd.read_parquet(p)
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
            for r in frame.to_dict("records")]


def rank(rows: Sequence[Mapping[str, Any]], metric: str) -> list[dict[str, Any]]:
    """Best first by ``metric`` (None last); ties by point number."""
    return [dict(r) for r in sorted(rows, key=lambda r: (r.get(metric) is None, -(r.get(metric) or 0.0), int(r["point"])))]


def heatmap_png(rows: Sequence[Mapping[str, Any]], x: str, y: str, metric: str) -> bytes:
    """The metric over two parameters (the mean over the other parameters), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    xs = sorted({r[f"param:{x}"] for r in rows})
    ys = sorted({r[f"param:{y}"] for r in rows})
    cells: dict[tuple[Any, Any], list[float]] = {}
    for r in rows:
        if r.get(metric) is not None:
            cells.setdefault((r[f"param:{x}"], r[f"param:{y}"]), []).append(float(r[metric]))
    grid = np.full((len(ys), len(xs)), np.nan)
    for (a, b), vals in cells.items():
        grid[ys.index(b), xs.index(a)] = sum(vals) / len(vals)
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(xs), 1.2 + 0.7 * len(ys)), dpi=80)
    ax.imshow(grid, cmap="RdYlGn", aspect="auto", origin="lower")
    for i in range(len(ys)):
        for j in range(len(xs)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(xs)))
    ax.set_xticklabels([str(v) for v in xs])
    ax.set_yticks(range(len(ys)))
    ax.set_yticklabels([str(v) for v in ys])
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(f"{metric} (mean over other parameters)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def stitch(segments: Sequence[Sequence[Sequence[Any]]], capital: float) -> list[tuple[str, float]]:
    """Chain equity segments (each ``[[date, equity], ...]``, its first point the base) into one curve
    from ``capital``: each segment's daily returns applied in turn; a date already covered is skipped."""
    out: list[tuple[str, float]] = []
    value = capital
    last = ""
    for seg in segments:
        if not seg:
            continue
        if not out:
            out.append((str(seg[0][0]), value))
            last = str(seg[0][0])
        for (_, e0), (d, e1) in zip(seg, seg[1:], strict=False):
            if str(d) <= last:
                continue
            value *= float(e1) / float(e0) if e0 else 1.0
            out.append((str(d), value))
            last = str(d)
    return out


def curve_csv(curve: Sequence[tuple[str, float]]) -> bytes:
    return ("date,equity\n" + "".join(f"{d},{round(v, 4)!r}\n" for d, v in curve)).encode()


def walkforward_png(oos: Sequence[tuple[str, float]], ins: Sequence[tuple[str, float]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dates = sorted({d for d, _ in oos} | {d for d, _ in ins})
    pos = {d: i for i, d in enumerate(dates)}
    fig, ax = plt.subplots(figsize=(9, 3.2), dpi=80)
    ax.plot([pos[d] for d, _ in ins], [v for _, v in ins], color="#7f8c8d", linestyle="--", label="in-sample (train)")
    ax.plot([pos[d] for d, _ in oos], [v for _, v in oos], color="#27ae60", linewidth=1.6, label="out-of-sample (test)")
    ticks = sorted({0, len(dates) - 1, *range(0, len(dates), max(1, len(dates) // 6))}) if dates else []
    ax.set_xticks(ticks)
    ax.set_xticklabels([dates[i] for i in ticks], fontsize=7)
    ax.set_title("Walk-forward: stitched equity of each window's best point")
    ax.set_ylabel("equity ($)")
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
