"""The warped clock: Debian's libfaketime under every process of the rehearsal (Redis included).

How libfaketime (0.9.10) is used, and why:

- ``FAKETIME_TIMESTAMP_FILE`` holds ``@<start> x<speed>``: the clock starts at ``<start>`` and runs
  ``<speed>`` times faster; sleeps, poll/select/epoll timeouts and Redis's own timers scale with it.
  ``FAKETIME`` is NOT set in the children (an env spec would win over the file), so a process re-reads
  the file every ``FAKETIME_CACHE_DURATION`` (1 s): rewriting it jumps every clock forward (``jump_to``:
  the rehearsal skips the idle nights this way).
- All processes share one anchor: the ``faketime`` wrapper creates a shared-memory segment
  (``FAKETIME_SHARED``) in which the first process records the real start; with
  ``FAKETIME_DONT_RESET=1`` an ``@`` spec does not re-anchor per process. Without this each process
  would start its clock at ``<start>`` when it started, and a restarted service would live in the past.
  The wrapper runs ``cat`` on a pipe for as long as the rehearsal runs (the keeper).
- redis-server links jemalloc, whose start-up calls ``clock_gettime`` before libfaketime is ready (it
  hangs). Preloading glibc's ``libc_malloc_debug.so.0`` ahead of libfaketime gives Redis glibc's
  allocator and avoids the recursion (``redis_preload``).

- ``semclock.c`` (compiled at start with the system C compiler into the clock directory, preloaded
  before libfaketime): 0.9.10 does not wrap ``sem_clockwait``, through which CPython >= 3.11 waits on
  every lock with a timeout (``Event.wait``, ``queue.get``), so such a wait never ended; and its
  ``sem_timedwait`` scales the wrong way. The shim converts both to a real-time wait.
- ``NO_FAKE_STAT=1``: libfaketime would otherwise take its cross-process semaphore on every
  ``stat()`` to fake file times, and the processes deadlocked on it within minutes; file times stay
  real (no project code compares a file time with the clock).

The supervisor itself runs on the real clock; it reads the warped time from Redis (``TIME``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

LIBDIRS = ("/usr/lib/x86_64-linux-gnu/faketime", "/usr/lib/aarch64-linux-gnu/faketime", "/usr/lib/faketime")
MALLOC_DEBUG = ("/usr/lib/x86_64-linux-gnu/libc_malloc_debug.so.0", "/usr/lib/aarch64-linux-gnu/libc_malloc_debug.so.0",
                "/lib/x86_64-linux-gnu/libc_malloc_debug.so.0")
INSTALL_HINT = "apt-get update && apt-get install -y faketime gcc  (as root; Debian/Ubuntu)"
SHIM_SOURCE = Path(__file__).with_name("semclock.c")


class WarpError(RuntimeError):
    pass


def find_libfaketime() -> str | None:
    for d in LIBDIRS:
        p = Path(d) / "libfaketime.so.1"
        if p.exists():
            return str(p)
    return None


def require_faketime() -> str:
    lib = find_libfaketime()
    if lib is None or shutil.which("faketime") is None or shutil.which("cc") is None:
        raise WarpError(f"the rehearsal needs libfaketime and a C compiler: {INSTALL_HINT}")
    return lib


def build_shim(workdir: Path) -> str:
    """Compile ``semclock.c`` into ``workdir`` (once per rehearsal; a second or so)."""
    out = workdir / "semclock.so"
    res = subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(out), str(SHIM_SOURCE), "-ldl"],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise WarpError(f"could not build the sem_clockwait shim: {res.stderr.strip()[:500]}")
    return str(out)


def spec(start: datetime, speed: float) -> str:
    """The libfaketime spec ``@YYYY-MM-DD HH:MM:SS xSPEED`` (UTC; the children run with TZ=UTC)."""
    return f"@{start.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')} x{speed:g}"


@dataclass
class Warp:
    """One warped clock for a set of processes. ``start`` is an aware datetime."""

    start: datetime
    speed: float
    workdir: Path
    _keeper: subprocess.Popen | None = None
    lib: str = ""
    shim: str = ""

    @property
    def spec_file(self) -> Path:
        return self.workdir / "faketime.spec"

    def __enter__(self) -> Warp:
        self.lib = require_faketime()
        # absolute: a process that changes directory (redis-server chdirs to its --dir) must still find
        # the spec file and the shim, or libfaketime silently falls back to the real clock
        self.workdir = self.workdir.resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.shim = build_shim(self.workdir)
        self._anchor = self.start
        self.spec_file.write_text(spec(self.start, self.speed) + "\n")
        self._keeper = subprocess.Popen(["faketime", "-f", spec(self.start, self.speed), "cat"], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shm = f"/dev/shm/faketime_shm_{self._keeper.pid}"
        deadline = time.monotonic() + 10
        while not Path(shm).exists():  # the wrapper creates it before it starts the keeper
            if time.monotonic() > deadline or self._keeper.poll() is not None:
                raise WarpError("faketime did not create its shared memory segment")
            time.sleep(0.01)
        time.sleep(0.05)  # the keeper's libfaketime records the shared anchor at its start
        return self

    def __exit__(self, *exc: object) -> None:
        if self._keeper is not None:
            if self._keeper.stdin:
                self._keeper.stdin.close()
            try:
                self._keeper.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._keeper.kill()
                self._keeper.wait()

    def env(self) -> dict[str, str]:
        """What a child needs to live on the warped clock."""
        assert self._keeper is not None, "enter the Warp first"
        pid = self._keeper.pid
        return {"LD_PRELOAD": f"{self.shim}:{self.lib}", "FAKETIME_SHARED": f"/faketime_sem_{pid} /faketime_shm_{pid}",
                "FAKETIME_TIMESTAMP_FILE": str(self.spec_file), "FAKETIME_DONT_RESET": "1",
                "FAKETIME_CACHE_DURATION": "1", "NO_FAKE_STAT": "1", "TZ": "UTC"}

    def redis_env(self) -> dict[str, str]:
        env = self.env()
        pre = next((p for p in MALLOC_DEBUG if Path(p).exists()), None)
        if pre is None:
            raise WarpError("glibc's libc_malloc_debug.so.0 is missing (redis-server cannot run under libfaketime "
                            "with jemalloc without it)")
        env["LD_PRELOAD"] = f"{pre}:{self.lib}"
        return env

    def jump(self, seconds: float) -> None:
        """Move every clock ``seconds`` forward (each process sees it within ~2 s real)."""
        from datetime import timedelta

        self._anchor = self._anchor + timedelta(seconds=int(seconds))
        self._write()

    def retime(self, now: datetime, target: datetime, speed: float) -> None:
        """Every clock, now at ``now`` (read from a warped process), moves to ``target`` and runs at ``speed``
        from there: the anchor is chosen so that anchor + elapsed * speed = target, elapsed being the
        real time since the shared start, (now - anchor) / old speed."""
        from datetime import timedelta

        elapsed = (now - self._anchor).total_seconds() / self.speed
        self._anchor = target - timedelta(seconds=round(elapsed * speed))
        self.speed = speed
        self._write()

    def _write(self) -> None:
        tmp = self.spec_file.with_suffix(".tmp")
        tmp.write_text(spec(self._anchor, self.speed) + "\n")
        os.replace(tmp, self.spec_file)
