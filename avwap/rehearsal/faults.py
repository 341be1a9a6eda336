"""The faults a rehearsal seeds (``avwap rehearse --faults``): what each is, when it is due, and the
deterministic plan of one session. ``run.Rehearsal`` seeds them as warped time passes."""

from __future__ import annotations

from dataclasses import dataclass

from shared.clock import NS, dt_to_ns, ny_datetime, ny_time


@dataclass(frozen=True)
class Fault:
    at: str  # NY time "HH:MM" on ``session``
    session: str
    action: str  # kill:<service> | restart:redis | refuse:<seconds> | silence:<seconds>

    def ts(self) -> int:
        return dt_to_ns(ny_datetime(self.session, self.at))


def fault_plan(session: str, services: list[str]) -> list[Fault]:
    """The seeded faults of one session: SIGKILL of each service in turn (every 20 minutes from 10:02),
    then a Redis restart, the broker refusing connections for 10 minutes, the trade-updates websocket
    silent for 20 minutes. Deterministic: the same plan for the same services."""
    plan = []
    t = dt_to_ns(ny_datetime(session, "10:02"))
    for s in services:
        plan.append(Fault(ny_time(t), session, f"kill:{s}"))
        t += 20 * 60 * NS
    plan.append(Fault(ny_time(t), session, "restart:redis"))
    plan.append(Fault(ny_time(t + 20 * 60 * NS), session, "refuse:600"))
    plan.append(Fault(ny_time(t + 50 * 60 * NS), session, "silence:1200"))
    return plan
