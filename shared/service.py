"""The imperative shell every service shares: settings, logging, Redis, the consumer loop.

A service provides a name (its consumer group), its input streams, and a ``build``
function that returns the message handler. ``run_service`` does the rest and returns
the process exit code (0 on SIGTERM/SIGINT after finishing the message in hand).

Invalid settings never become a restart loop: ``run_service`` logs one line naming every
invalid variable, raises a critical ``settings_invalid`` alert when Redis answers, and idles
without a heartbeat (health checks report the service unhealthy) until it is stopped.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import redis
from pydantic import BaseModel, ValidationError
from pydantic_settings import EnvSettingsSource

from shared import metrics
from shared.alerts import AlertPublisher
from shared.artifacts import set_fsync
from shared.bus import Bus, Committed, Delivery, Emit, Handler
from shared.clock import Clock, WallClock
from shared.consumer import Consumer
from shared.intake import session_problem
from shared.logs import redact, setup_logging
from shared.redis_conn import connect, embedded_redis, redact_url
from shared.schemas import Message
from shared.settings import CoreSettings, Settings, get_settings, settings_problems
from shared.streams import DLQ

SETTINGS_INVALID_EXIT = 2  # returned by a service stopped while idling on invalid settings
NO_REDIS_URL = ("REDIS_URL is not set: a single service must join the system's Redis (e.g. "
                "REDIS_URL=redis://:PASSWORD@127.0.0.1:6379/0); only whole-system jobs (avwap demo, avwap replay) "
                "start an embedded one")

log = logging.getLogger(__name__)


@dataclass
class ServiceContext:
    """What a worker gets: settings, Redis, the bus, a clock, and an alert publisher."""

    name: str
    settings: Settings
    r: redis.Redis
    bus: Bus
    clock: Clock
    alerts: AlertPublisher


@dataclass(frozen=True)
class StreamIO:
    """The streams a process reads and writes, declared next to its code (the compose graph test reads
    every service's declaration to check that each consumed stream has a producer in compose)."""

    consumes: tuple[str, ...] = ()
    produces: tuple[str, ...] = ()


class Worker:
    """What a stateful service's ``build`` makes: its handler and its hooks, one object, so the hooks
    share the worker's state as attributes (no module globals, nothing kept on the context).

    ``handle``: one message (the consumer calls the worker); ``start``: after the groups exist, before
    the first read (its outputs are published); ``idle``: on every empty read and at least once per
    ``BUS_BLOCK_MS`` while busy; ``stop``: once after the loop ends (SIGTERM/SIGINT), to release what
    ``start`` opened (threads, connections).
    """

    def handle(self, msg: Message, d: Delivery) -> Iterable[Emit] | Committed | None:
        raise NotImplementedError

    def __call__(self, msg: Message, d: Delivery) -> Iterable[Emit] | Committed | None:
        return self.handle(msg, d)

    def start(self) -> Iterable[Emit] | None:
        return None

    def idle(self) -> Iterable[Emit] | None:
        return None

    def stop(self) -> None:
        return None


@dataclass(frozen=True)
class ServiceSpec:
    """``build`` makes the handler: a ``Worker`` (its ``start``/``idle``/``stop`` are the hooks) or a
    function (a stateless service without hooks)."""

    name: str
    streams: Sequence[str]
    build: Callable[[ServiceContext], Handler]
    produces: Sequence[str] = ()  # the streams its handlers and hooks publish on
    exclusive: bool = False  # one active consumer at a time (the group's lease; the others stand by)

    @property
    def io(self) -> StreamIO:
        return StreamIO(consumes=tuple(self.streams), produces=tuple(self.produces))


@contextlib.contextmanager
def redis_url_for(settings: Settings) -> Iterator[str]:
    """REDIS_URL when set, else an embedded Redis for the life of the block."""
    if settings.core.redis_url:
        yield settings.core.redis_url
        return
    with embedded_redis() as emb:
        print(f"avwap: REDIS_URL not set; using an embedded {emb.kind} at {emb.url}", file=sys.stderr)
        yield emb.url


def make_context(name: str, settings: Settings, r: redis.Redis, clock: Clock | None = None) -> ServiceContext:
    bus = Bus(r, maxlen=settings.core.bus_maxlen)
    return ServiceContext(name=name, settings=settings, r=r, bus=bus, clock=clock or WallClock(),
                          alerts=AlertPublisher(bus, source=name))


def make_consumer(spec: ServiceSpec, ctx: ServiceContext, consumer_name: str | None = None) -> Consumer:
    """The consumer of ``spec`` (its handler, ``consumer.handler``, is what ``spec.build`` made)."""
    core = ctx.settings.core
    handler = spec.build(ctx)
    on_idle: Callable[[], Iterable[Emit] | None] | None = handler.idle if isinstance(handler, Worker) else None
    horizon = core.message_date_horizon_days

    def check(msg: Message) -> str | None:
        return session_problem(msg, ctx.clock.now_ns() if horizon else None, horizon)

    return Consumer(
        ctx.r, spec.name, spec.streams, handler,
        name=consumer_name or core.consumer_name, max_deliveries=core.bus_max_deliveries,
        block_ms=core.bus_block_ms, count=core.bus_batch, claim_idle_ms=core.bus_claim_idle_ms,
        heartbeat_ttl_s=core.heartbeat_ttl_s, maxlen=core.bus_maxlen, on_idle=on_idle,
        max_payload_bytes=core.bus_max_payload_bytes, check=check, exclusive=spec.exclusive,
    )


def wait_for_redis(r: redis.Redis, stop: threading.Event, url: str, name: str) -> bool:
    """Ping until Redis answers (backoff 0.1 s doubling to 5 s); False if ``stop`` came first."""
    backoff = 0.1
    while not stop.is_set():
        try:
            r.ping()
            return True
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            log.warning("%s: waiting for Redis at %s (%s); retrying in %.1fs", name, redact_url(url), exc, backoff)
        if stop.wait(backoff):
            break
        backoff = min(backoff * 2, 5.0)
    return False


def pinned_client(r: redis.Redis, stop: threading.Event, url: str, name: str) -> redis.Redis | None:
    """Once Redis answers, a client of ``r``'s pool that keeps one connection for its commands (redis-py's
    ``single_connection_client``: no pool checkout per command, ~30 % less client CPU a round trip). After a
    Redis restart its next command fails once and the one after reconnects (docs/bus.md). Pipelines still take
    their own connection from the pool. None if ``stop`` came first. Only the thread that consumes may use it:
    a command of another thread would wait behind a blocking read. Keep ``r`` referenced while it is used: a
    client made by ``from_url`` closes its pool when it is collected."""
    while wait_for_redis(r, stop, url, name):
        try:
            return r.client()
        except (redis.ConnectionError, redis.TimeoutError) as exc:  # gone again between the ping and now
            log.warning("%s: Redis at %s went away (%s); waiting again", name, redact_url(url), exc)
    return None


def _stop_on_signals(stop: threading.Event | None = None) -> threading.Event:
    """``stop`` (a new event when None), set by SIGTERM and SIGINT when called on the main thread."""
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
    return stop


def refuse_and_idle(name: str, kind: str, title: str, reason: str, *, redis_url: str | None, runbook: str = "",
                    stop: threading.Event | None = None) -> int:
    """A service that must not start: one CRITICAL line, one critical alert, then idle until stopped.

    The alert (``kind``, ``title``, ``reason`` as text) goes to ``avwap:alerts`` if ``redis_url`` is
    set and answers. The process then runs no consumer and keeps no heartbeat (``avwap health
    <name>`` fails, so the container shows unhealthy, and nothing is consumed) until SIGTERM/SIGINT
    (or ``stop``), and returns ``SETTINGS_INVALID_EXIT``. Exiting at once would only make
    ``restart: unless-stopped`` loop: the environment of a process cannot change, so the fix is a
    corrected environment and a restart.
    """
    log.critical("%s not started: %s. Fix the environment and restart %s (idle until stopped, no heartbeat).",
                 name, reason, name)
    if redis_url:
        try:
            r = connect(redis_url, socket_connect_timeout=2, socket_timeout=2)
            AlertPublisher(Bus(r), source=name).alert(kind, title, severity="critical", text=reason, runbook=runbook,
                                                      ts=time.time_ns(), dedup=f"{kind}:{name}:{reason}")
        except (redis.RedisError, OSError) as exc:
            log.warning("%s: could not publish the %s alert: %s", name, kind, redact(str(exc)))
    _stop_on_signals(stop).wait()
    return SETTINGS_INVALID_EXIT


def idle_invalid_settings(name: str, stop: threading.Event | None = None,
                          sections: tuple[type[BaseModel], ...] | None = None) -> int:
    """The environment does not validate: ``refuse_and_idle`` with every invalid variable named
    (secret values hidden) and a ``settings_invalid`` alert. ``sections``: the ones to check
    (default: the shared ones; a service adds its own, e.g. the executor's broker settings)."""
    raw = EnvSettingsSource(CoreSettings)()  # the raw values, without validation
    fmt = raw.get("log_format") if raw.get("log_format") in ("console", "json") else "console"
    setup_logging("INFO", str(fmt), service=name)
    problems = settings_problems(sections) if sections is not None else settings_problems()
    reason = "invalid settings: " + ("; ".join(problems) or "the settings did not validate")
    url = raw.get("redis_url")
    return refuse_and_idle(name, "settings_invalid", f"{name}: invalid settings, not started", reason,
                           redis_url=str(url) if url else None, runbook="invalid-settings", stop=stop)


def run_service(spec: ServiceSpec, settings: Settings | None = None) -> int:
    """Run one service until SIGTERM/SIGINT; returns 0. Waits (never crashes) while Redis is down.

    Settings that do not validate, or no ``REDIS_URL``: refuse and idle (no restart loop).
    """
    if settings is None:
        try:
            settings = get_settings()
        except ValidationError:
            return idle_invalid_settings(spec.name)
    setup_logging(settings.core.log_level, settings.core.log_format, service=spec.name)
    set_fsync(settings.core.artifacts_fsync)
    if not settings.core.redis_url:  # an embedded Redis would be private: this service could talk to nobody
        return refuse_and_idle(spec.name, "settings_invalid", f"{spec.name}: REDIS_URL not set, not started",
                               NO_REDIS_URL, redis_url=None, runbook="invalid-settings")
    url = settings.core.redis_url
    stop = _stop_on_signals()
    base = connect(url)  # owns the pool for the process's life; the metrics thread's client
    r = pinned_client(base, stop, url, spec.name)
    if r is None:
        log.info("%s stopped before Redis was reachable", spec.name)
        return 0
    ctx = make_context(spec.name, settings, r)
    consumer = make_consumer(spec, ctx)
    consumer.install_signal_handlers()
    if stop.is_set():
        return 0
    consumer.ensure_groups()
    if settings.core.metrics_port:
        metrics.watch_redis(base, spec.name, spec.streams, DLQ)  # read on the metrics server's thread
        metrics.serve(settings.core.metrics_port, settings.core.metrics_addr)
    worker = consumer.handler if isinstance(consumer.handler, Worker) else None
    if worker is not None:
        ctx.bus.publish_many(list(worker.start() or []))
    log.info("%s started as %s on %s", spec.name, consumer.name, ", ".join(spec.streams))
    gc.freeze()  # what start-up built lives as long as the process: the collector no longer walks it
    try:
        stats = consumer.run(install_signals=False)
    finally:
        if worker is not None:
            worker.stop()
    log.info("%s stopped: handled=%d failed=%d dlq=%d lost_races=%d", spec.name, stats.handled, stats.failed,
             stats.dead_lettered, stats.lost_races)
    return 0
