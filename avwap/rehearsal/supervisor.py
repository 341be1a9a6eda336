"""A process supervisor that applies compose's restart policy to local processes.

``restart: unless-stopped`` / ``always`` restart a process whenever it exits unless the supervisor
stopped it; ``on-failure[:N]`` restarts it on a non-zero exit (at most N times); ``no`` never. Like
Docker, a restart waits a delay that doubles from 100 ms (capped at 60 s) and resets once the process
has run 10 s. Every start and exit is recorded (wall time, exit code) for the rehearsal's report.
Each process leads its own process group, the local stand-in for a container: a kill, a stop or the
exit of the main process ends every process of the group (the rq worker pool's children included).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

FIRST_DELAY_S = 0.1
MAX_DELAY_S = 60.0
RESET_AFTER_S = 10.0


@dataclass
class Managed:
    name: str
    cmd: list[str]
    env: dict[str, str]
    restart: str
    cwd: Path
    log: Path
    proc: subprocess.Popen | None = None
    stopped: bool = False
    starts: int = 0
    exits: list[tuple[float, int]] = field(default_factory=list)  # (wall time, exit code)
    delay: float = 0.0
    due: float = 0.0
    started_at: float = 0.0

    def wants_restart(self, code: int) -> bool:
        if self.stopped:
            return False
        policy, _, limit = self.restart.partition(":")
        if policy in ("always", "unless-stopped"):
            return True
        if policy == "on-failure":
            return code != 0 and (not limit or len(self.exits) <= int(limit))
        return False


def _kill_group(pgid: int) -> None:
    """SIGKILL what is left of a process group (each managed process leads its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class Supervisor:
    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: dict[str, Managed] = {}
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="supervisor")

    def add(self, name: str, cmd: list[str], env: dict[str, str], restart: str, cwd: Path) -> Managed:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        m = Managed(name=name, cmd=cmd, env=env, restart=restart, cwd=cwd, log=self.log_dir / f"{name}.log")
        with self.lock:
            self.procs[name] = m
        return m

    def start(self, name: str) -> None:
        with self.lock:
            self._spawn(self.procs[name])
        if not self._thread.is_alive():
            self._thread.start()

    def _spawn(self, m: Managed) -> None:
        out = open(m.log, "ab")  # noqa: SIM115 - the child holds it
        try:
            m.proc = subprocess.Popen(m.cmd, cwd=m.cwd, env=m.env, stdout=out, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        finally:
            out.close()
        m.starts += 1
        m.started_at = time.monotonic()
        m.stopped = False

    def _watch(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            with self.lock:
                for m in list(self.procs.values()):
                    if m.proc is None:
                        continue
                    code = m.proc.poll()
                    if code is not None and m.due == 0.0:
                        m.exits.append((time.time(), code))
                        _kill_group(m.proc.pid)  # a container's processes end with its main process
                        if m.wants_restart(code):
                            ran = now - m.started_at
                            m.delay = FIRST_DELAY_S if ran >= RESET_AFTER_S or m.delay == 0 else min(m.delay * 2, MAX_DELAY_S)
                            m.due = now + m.delay
                        else:
                            m.proc = None
                    elif m.due and now >= m.due:
                        m.due = 0.0
                        self._spawn(m)
            self._stop.wait(0.05)

    def pid(self, name: str) -> int | None:
        m = self.procs[name]
        return m.proc.pid if m.proc is not None and m.proc.poll() is None else None

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal the process as `docker kill -s SIG` would (the restart policy then applies)."""
        with self.lock:
            m = self.procs[name]
            if m.proc is not None and m.proc.poll() is None:
                if sig == signal.SIGKILL:  # `docker kill`: every process of the container
                    _kill_group(m.proc.pid)
                else:
                    m.proc.send_signal(sig)

    def stop(self, name: str, timeout: float = 20.0) -> int | None:
        """`docker stop`: SIGTERM, SIGKILL after ``timeout``; no restart afterwards."""
        with self.lock:
            m = self.procs[name]
            m.stopped = True
            m.due = 0.0
            proc = m.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        _kill_group(proc.pid)
        return code

    def stop_all(self, order: list[str] | None = None, timeout: float = 20.0) -> dict[str, int | None]:
        names = order or list(reversed(self.procs))
        codes = {}
        for n in names:
            with self.lock:
                self.procs[n].stopped = True
        for n in names:
            codes[n] = self.stop(n, timeout)
        self._stop.set()
        return codes

    def restarts(self) -> dict[str, int]:
        return {n: max(m.starts - 1, 0) for n, m in self.procs.items()}
