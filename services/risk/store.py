"""Risk's state in Redis: a root key and an append-only record log (shell).

Three maps of ``RiskState`` only ever grow between two prunes: the decisions of each session
(``decided``), the analytics decisions received per date (``shadow``) and analytics' decision batches
(``decision_batches``). Their values are frozen and a key is never written twice, so a step can only
append to them, or drop whole dates when a new session prunes the state (``core._prune``). In a busy
period they are ~98 % of a ~430 KB state, which was encoded and written whole on every message.

So they are stored apart:

- the root, ``avwap:state:risk:state``: the state with those maps emptied (the dates of ``decided`` and
  ``shadow`` kept as empty maps, for their order and because an empty map is state too), its revision
  first and ``records``, the number of log entries that belong to it, second;
- the log, ``avwap:state:risk:records`` (a list): one entry per record, ``[kind, date, key, record]``
  (kind ``d`` decided, ``s`` shadow, ``b`` decision batch), in the order the core added them, so each
  map comes back in its own order (``find_decisions`` takes the first match).

A commit appends the step's new records (``added``) and writes the root; when a step dropped records
(a prune), or the log cannot be trusted, it rewrites the log whole (``all_entries``). A log whose
length is not the root's ``records`` (the root was lost, or written before this layout, when the maps
were inside it) is not read, and the next commit rewrites it from the state.
"""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from typing import Literal

import msgspec
import redis

from shared.schemas import PortfolioDecisionBatch
from shared.streams import state_key

from .state import RiskState, decode_state, decode_upcasting
from .telemetry import DecisionRecord, ShadowRecord

STATE_KEY = state_key("risk", "state")
LOG_KEY = state_key("risk", "records")

Kind = Literal["d", "s", "b"]
_ENTRY = msgspec.json.Decoder(tuple[Kind, str, str, msgspec.Raw])
_ENC = msgspec.json.Encoder()
_DECODERS = {"d": msgspec.json.Decoder(DecisionRecord), "s": msgspec.json.Decoder(ShadowRecord),
             "b": msgspec.json.Decoder(PortfolioDecisionBatch)}


class Marks(msgspec.Struct, frozen=True):
    """How far each append-only map reached before a step: per date of ``decided`` and ``shadow`` the
    count and last key, and the same for ``decision_batches``."""

    decided: dict[str, tuple[int, str]]
    shadow: dict[str, tuple[int, str]]
    batches: tuple[int, str]


def _last(d: dict) -> str:
    return next(reversed(d), "") if d else ""


def marks(st: RiskState) -> Marks:
    return Marks(decided={k: (len(v), _last(v)) for k, v in st.decided.items()},
                 shadow={k: (len(v), _last(v)) for k, v in st.shadow.items()},
                 batches=(len(st.decision_batches), _last(st.decision_batches)))


def _entry(kind: str, date: str, key: str, value: object) -> bytes:
    return _ENC.encode((kind, date, key, value))


def _grown(before: tuple[int, str], now: dict) -> Iterator[str] | None:
    """The keys ``now`` added after ``before`` (None: it did not only grow)."""
    n, last = before
    if len(now) < n:
        return None
    if n and next(islice(now, n - 1, None)) != last:
        return None
    return islice(now, n, None)


def added(before: Marks, st: RiskState) -> list[bytes] | None:
    """The log entries of the records ``st`` gained since ``before``, in the order they were added; None when
    a map lost records or a date (a prune: the log is rewritten whole)."""
    out: list[bytes] = []
    keys = _grown(before.batches, st.decision_batches)
    if keys is None:
        return None
    for k in keys:
        b = st.decision_batches[k]
        out.append(_entry("b", b.date, k, b))
    for kind, was, now in (("d", before.decided, st.decided), ("s", before.shadow, st.shadow)):
        if any(date not in now for date in was):
            return None
        for date, recs in now.items():
            keys = _grown(was.get(date, (0, "")), recs)
            if keys is None:
                return None
            out += [_entry(kind, date, k, recs[k]) for k in keys]
    return out


def all_entries(st: RiskState) -> list[bytes]:
    """Every record of ``st`` as log entries (each map in its own order)."""
    out = [_entry("b", b.date, k, b) for k, b in st.decision_batches.items()]
    for kind, m in (("d", st.decided), ("s", st.shadow)):
        out += [_entry(kind, date, k, rec) for date, recs in m.items() for k, rec in recs.items()]
    return out


def root_of(st: RiskState) -> RiskState:
    """The root to store for ``st`` (a shallow copy without the records; ``st.records`` says how many log
    entries it has)."""
    return msgspec.structs.replace(st, decided={d: {} for d in st.decided}, shadow={d: {} for d in st.shadow},
                                   decision_batches={})


def holds_records(root: RiskState) -> bool:
    """Whether a stored root carries records itself (written before the log existed)."""
    return bool(root.decision_batches) or any(root.decided.values()) or any(root.shadow.values())


def assemble(root: RiskState, log: list[bytes]) -> RiskState:
    """``root`` with the records of ``log`` put back, in place."""
    for item in log:
        kind, date, key, raw = _ENTRY.decode(item)
        rec = decode_upcasting(_DECODERS[kind], raw)
        if kind == "b":
            root.decision_batches[key] = rec  # type: ignore[assignment]
        elif kind == "d":
            root.decided.setdefault(date, {})[key] = rec  # type: ignore[assignment]
        else:
            root.shadow.setdefault(date, {})[key] = rec  # type: ignore[assignment]
    return root


def from_stored(blob: bytes | None, log: list[bytes] | None) -> tuple[RiskState, bool]:
    """The state of a stored root and log, and whether the log in Redis is this state's (False: the next
    commit rewrites it). A log that does not belong to the root is ignored."""
    root = decode_state(blob)
    log = log or []
    if not blob or holds_records(root) or root.records != len(log):
        return root, False
    return assemble(root, log), True


def load_state(r: redis.Redis) -> tuple[bytes, RiskState]:
    """(root bytes, whole state) as stored now, read in one transaction."""
    pipe = r.pipeline(transaction=True)
    pipe.get(STATE_KEY)
    pipe.lrange(LOG_KEY, 0, -1)
    blob, log = pipe.execute()
    return blob or b"", from_stored(blob, log)[0]
