"""Deterministic artifacts: canonical JSON, atomic writes, crash-safe JSONL, provenance.

Canonical JSON: keys sorted, floats rounded to ``FLOAT_DECIMALS`` places (then shortest
repr, so 1.5 stays ``1.5`` and -0.0 becomes ``0.0``), no NaN/Inf, compact separators,
UTF-8, one trailing newline. Same inputs -> same bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec

log = logging.getLogger(__name__)

FLOAT_DECIMALS = 8

_UMASK = os.umask(0o022)
os.umask(_UMASK)
FILE_MODE = 0o666 & ~_UMASK  # what open() would give: mkstemp's 0600 would hide reports from their readers


def _canon(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite float in artifact: {value!r}")
        r = round(value, FLOAT_DECIMALS)
        return 0.0 if r == 0 else r
    if isinstance(value, dict):
        return {str(k): _canon(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canon(v) for v in value]
    return value


def _canonical_float(text: str) -> float | msgspec.Raw:
    """A JSON number literal (as msgspec writes a float) made what ``canonical_json`` writes: rounded, then
    Python's shortest repr. A literal in positional notation with at most ``FLOAT_DECIMALS`` decimals, at
    least 1e-4 and below 1e16 in size, is already that (rounding does not move it, and there msgspec's
    shortest digits are repr's): its float goes back as it came. Any other one is rounded and written by repr."""
    digits = text[1:] if text[:1] == "-" else text
    dot = digits.find(".")
    if (0 < dot <= 16 and len(digits) - dot <= FLOAT_DECIMALS + 1 and "e" not in digits
            and not digits.startswith("0.0000") and digits != "0.0"):
        return float(text)
    r = round(float(text), FLOAT_DECIMALS)
    return msgspec.Raw(repr(0.0 if r == 0 else r).encode())


_JSON_DEC = msgspec.json.Decoder(float_hook=_canonical_float)
_SORTED_ENC = msgspec.json.Encoder(order="sorted")
_PLAIN_ENC = msgspec.json.Encoder()
_PACK_ENC = msgspec.msgpack.Encoder()
_PLAIN_DEC = msgspec.json.Decoder()
# A number token of msgspec's JSON that the canonical form writes otherwise (an exponent, more than
# FLOAT_DECIMALS decimals, below 1e-4, from 1e16, -0.0): a token after [ , or : and before , ] } or the end
# (a document that is a lone number always takes the hook). A string that holds such a token between those
# characters only costs the hook.
_UNSIMPLE = re.compile(rb"[:,\[](?:-?(?:[0-9]+(?:\.[0-9]+)?[eE][-+]?[0-9]+|[0-9]+\.[0-9]{%d,}|0\.0000[0-9]*"
                       rb"|[0-9]{17,}\.[0-9]+)|-0\.0)(?![^,\]}])" % (FLOAT_DECIMALS + 1))
_NON_FINITE = re.compile(rb"\xcb[\x7f\xff][\xf0-\xff]")  # MessagePack float64 marker, exponent all ones


def to_plain(obj: Any) -> Any:
    """Structs, dataclasses, tuples... -> JSON-ready builtins with canonical floats."""
    return _canon(msgspec.to_builtins(obj))


def canonical_json(obj: Any) -> bytes:
    """The canonical bytes of ``obj`` (a Struct, dict, list...), ending in ``\\n``.

    msgspec writes ``obj``'s JSON, its decoder makes each float canonical (``_canonical_float``) and its encoder
    sorts the keys: the walk's bytes without the walk (tests/test_artifacts.py compares the two). msgspec's JSON
    writes NaN and infinities as null, so ``obj`` is first packed as MessagePack, which keeps them: when the
    packed bytes hold a float64 with an all-ones exponent (or something that looks like one), or msgspec
    cannot encode ``obj``, the walk in Python (``_canonical_json_walk``) decides, and refuses non-finite floats."""
    try:
        packed = _PACK_ENC.encode(obj)
        raw = _PLAIN_ENC.encode(obj)
    except Exception:  # noqa: BLE001 - what msgspec cannot encode, the walk judges (and raises for)
        return _canonical_json_walk(obj)
    if _NON_FINITE.search(packed):
        return _canonical_json_walk(obj)
    dec = _JSON_DEC if raw[:1] not in (b"{", b"[") or _UNSIMPLE.search(raw) else _PLAIN_DEC  # none to change: no hook
    return canonical_json_of(dec.decode(raw))


def _canonical_json_walk(obj: Any) -> bytes:
    text = json.dumps(to_plain(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8") + b"\n"


def canonical_line(obj: Any) -> bytes:
    """One canonical JSON line (same as ``canonical_json``) for JSONL files."""
    return canonical_json(obj)


def decode_for_canonical(data: bytes) -> Any:
    """A JSON document as builtins whose floats are already canonical (``msgspec.Raw`` literals), to nest
    in a value given to ``canonical_json_of``."""
    return _JSON_DEC.decode(data)


def canonical_json_of(value: Any) -> bytes:
    """``canonical_json`` of builtins (dicts with string keys, lists, strings, ints, bools, None) whose floats
    are canonical already (from ``decode_for_canonical``): the same bytes, without the walk in Python. JSON has no NaN or
    Infinity, so there is nothing to refuse; msgspec writes strings as ``json.dumps(ensure_ascii=False)``
    does and sorts keys by code point (tests/test_artifacts.py checks both against ``canonical_json``)."""
    return _SORTED_ENC.encode(value) + b"\n"


class UnsafePath(ValueError):
    """A path built from message data that would leave its root (or is not a plain name)."""


def under(root: str | os.PathLike[str], *parts: str) -> Path:
    """``root / part / ...``, refusing anything that would leave ``root``: the one way to build a
    path from message data (dates, modes, symbols).

    Each part must be a non-empty relative name without ``..``, a NUL byte or a backslash; the joined path,
    resolved (symlinks followed), must stay inside ``root`` resolved. Raises ``UnsafePath``.
    """
    base = Path(root)
    for part in parts:
        text = str(part)
        pieces = text.split("/")
        if (not text or "\x00" in text or "\\" in text or text.startswith("/")
                or any(x in ("", ".", "..") for x in pieces)):
            raise UnsafePath(f"unsafe path component {text!r} under {base}")
    out = base.joinpath(*parts)
    top, real = os.path.realpath(base), os.path.realpath(out)  # what Path.resolve does, without its Path objects
    if real != top and not real.startswith(top if top.endswith(os.sep) else top + os.sep):
        raise UnsafePath(f"{out} leaves {base}")
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Durability:
    """Whether this process fsyncs what it writes (``ARTIFACTS_FSYNC``; ``set_fsync`` at service start)."""

    fsync = True


def set_fsync(on: bool) -> None:
    """The process-wide default of every write here (``ARTIFACTS_FSYNC``: a service sets it at start)."""
    _Durability.fsync = on


@contextlib.contextmanager
def fsync_off() -> Iterator[None]:
    """No fsync by default inside the block (a replay's driver writing its bar store), then as before."""
    before, _Durability.fsync = _Durability.fsync, False
    try:
        yield
    finally:
        _Durability.fsync = before


def fsync_default(fsync: bool | None) -> bool:
    return _Durability.fsync if fsync is None else fsync


def _replace_with(target: Path, data: bytes, fsync: bool = True) -> None:
    """Write ``data`` to a temp file beside ``target``, fsync it (unless told not to), rename it over ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(d: Path) -> None:
    dir_fd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_atomic(path: str | os.PathLike[str], data: bytes, fsync: bool | None = None) -> Path:
    """Write ``data`` to ``path`` atomically: temp file in the same dir, fsync, rename, fsync dir.

    ``fsync=False`` keeps the atomic rename (readers never see a partial file) but skips both
    fsyncs: the file may be lost by a power failure, not by a process crash (replays use it).
    None: the process default (``ARTIFACTS_FSYNC``, ``set_fsync``).
    """
    return write_atomic_many({Path(path): data}, fsync=fsync)[0]


def write_atomic_many(files: dict[Path, bytes], fsync: bool | None = None) -> list[Path]:
    """``write_atomic`` for several files, in the given order, with one fsync per directory.

    Each file is still written to a temp file, fsynced and renamed (a reader never sees a torn
    file); the directories are fsynced once at the end instead of once per file.
    """
    fsync = fsync_default(fsync)
    done = [Path(p) for p in files]
    for target, data in zip(done, files.values(), strict=True):
        _replace_with(target, data, fsync)
    if fsync:
        for d in dict.fromkeys(t.parent for t in done):
            _fsync_dir(d)
    return done


def write_json_artifact(path: str | os.PathLike[str], obj: Any, fsync: bool | None = None) -> Path:
    """Write ``obj`` as canonical JSON, atomically (see ``write_atomic``). Returns the path."""
    return write_atomic(path, canonical_json(obj), fsync=fsync)


def append_jsonl(path: str | os.PathLike[str], records: Iterable[Any], fsync: bool | None = None) -> Path:
    """Append canonical JSON lines and fsync (``fsync``: as ``write_atomic``).

    If the file ends in a torn line (a crash mid-write), a newline is written first so
    the torn fragment stays isolated on its own line and is skipped by ``read_jsonl``.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    payload = b"".join(canonical_line(r) for r in records)
    if not payload:
        return target
    with open(target, "ab+") as fh:
        if fh.tell() > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                log.warning("torn last line in %s; isolating it", target)
                fh.write(b"\n")
        fh.write(payload)
        fh.flush()
        if fsync_default(fsync):
            os.fsync(fh.fileno())
    return target


def read_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Yield the records of a JSONL file, skipping (with a warning) any torn or invalid line."""
    target = Path(path)
    if not target.exists():
        return
    with open(target, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                log.warning("skipping torn/invalid line %d in %s", lineno, target)
                continue
            if isinstance(rec, dict):
                yield rec
            else:
                log.warning("skipping non-object line %d in %s", lineno, target)


@lru_cache(maxsize=1)
def code_version() -> str:
    """The git commit of the running code, or the package version outside a checkout."""
    from shared import __version__

    env = os.environ.get("AVWAP_CODE_VERSION")
    if env:
        return env
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
        return out.stdout.strip() or __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def provenance(settings_hash: str, inputs: dict[str, str], *, code: str | None = None, **extra: str) -> dict[str, str]:
    """Provenance block every artifact carries: code version, settings hash, inputs.

    ``code``: the code version to record (a pure core gets it from its shell); default ``code_version()``.
    """
    prov = {"code_version": code_version() if code is None else code, "settings_hash": settings_hash}
    for k, v in sorted(inputs.items()):
        prov[f"input:{k}"] = v
    prov.update({k: str(v) for k, v in sorted(extra.items())})
    return prov
