"""Universe files: one ``SYMBOL[,SECTOR]`` per line; blank lines and ``#`` comments ignored."""

from __future__ import annotations

import os
from pathlib import Path


class UniverseError(ValueError):
    """A universe file that cannot be used (unreadable, empty, or a malformed line)."""


def parse_universe(text: str, source: str = "universe") -> dict[str, str]:
    """Symbol -> sector ("" when absent), symbols upper-cased; a repeated symbol keeps its first sector."""
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = [p.strip() for p in line.split(",")]
        sym = parts[0].upper()
        if not sym or len(parts) > 2 or any(c.isspace() for c in sym):
            raise UniverseError(f"{source}:{n}: expected SYMBOL[,SECTOR], got {raw!r}")
        out.setdefault(sym, parts[1] if len(parts) == 2 else "")
    if not out:
        raise UniverseError(f"{source}: no symbols")
    return dict(sorted(out.items()))


def read_universe(path: str | os.PathLike[str]) -> dict[str, str]:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise UniverseError(f"cannot read universe file {p}: {exc}") from exc
    return parse_universe(text, source=str(p))
