"""Prometheus metrics every service shares (docs/dashboard.md, "Metrics").

Each service process serves its own registry at ``http://METRICS_ADDR:METRICS_PORT/metrics``
when ``METRICS_PORT`` is set (compose sets it; 0, the default, serves nothing). Counters and
histograms are fed by small hooks: the bus (messages handled / failed / dead-lettered per
stream, handler latency, lost races, heartbeats), each self-committing worker and the executor
(what they published: decisions by reason code, orders by status, stop moves), the broker
wrapper (latency and errors by code) and the feed (last bar). Values that live in Redis
(pending and lag per group, DLQ size, positions without a live stop) are read at scrape time
by a collector, so a scrape always shows the state, never a stale copy.

Metric names are part of the operator contract: ``monitoring/grafana-dashboard.json`` and the
alert examples in docs/dashboard.md use them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from shared.schemas import EntryIntent, ExitEvent, Message, OrderEvent, Rejection, type_name_of

log = logging.getLogger(__name__)

REGISTRY = CollectorRegistry(auto_describe=True)

HANDLED = Counter("avwap_messages_handled_total", "Messages a consumer group handled, per stream and message type.",
                  ["group", "stream", "type"], registry=REGISTRY)
FAILED = Counter("avwap_messages_failed_total", "Handler failures (each delivery that raised), per stream.",
                 ["group", "stream"], registry=REGISTRY)
DEAD_LETTERED = Counter("avwap_messages_dead_lettered_total", "Entries this group moved to the DLQ, per source stream.",
                        ["group", "stream"], registry=REGISTRY)
HANDLER_SECONDS = Histogram("avwap_handler_seconds", "Handler latency per stream (seconds).", ["group", "stream"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
                            registry=REGISTRY)
LOST_RACES = Counter("avwap_lost_races_total", "Entries another consumer committed first (outputs dropped).",
                     ["group"], registry=REGISTRY)
HEARTBEAT = Gauge("avwap_heartbeat_timestamp_seconds", "Wall time of the consumer's last heartbeat (set as it "
                  "writes its heartbeat key).", ["group", "consumer"], registry=REGISTRY)
PUBLISHED = Counter("avwap_messages_published_total", "Messages a service published, per stream and type.",
                    ["service", "stream", "type"], registry=REGISTRY)
DECISIONS = Counter("avwap_decisions_total", "Entry decisions: outcome intent (reason '') or rejection, one count "
                    "per reason code.", ["service", "outcome", "reason"], registry=REGISTRY)
ORDER_EVENTS = Counter("avwap_order_events_total", "Order events the executor published, by status and order kind.",
                       ["status", "kind"], registry=REGISTRY)
EXIT_EVENTS = Counter("avwap_exit_events_total", "Exit events by kind (STOP_RATCHET, STOP_REPLACED: stop moves).",
                      ["kind"], registry=REGISTRY)
BROKER_SECONDS = Histogram("avwap_broker_request_seconds", "Broker API call latency (seconds), per call.", ["call"],
                           buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=REGISTRY)
BROKER_ERRORS = Counter("avwap_broker_errors_total", "Broker API calls that failed, by call and error code.",
                        ["call", "code"], registry=REGISTRY)
RATE_BUDGET = Gauge("avwap_broker_rate_limit_remaining", "Broker requests left in the current rate-limit window "
                    "(set by the executor's rate limiter).", registry=REGISTRY)
FEED_LAST_BAR = Gauge("avwap_feed_last_bar_timestamp_seconds", "Event time of the last bar the feed published.",
                      ["tf"], registry=REGISTRY)
FEED_LAST_BAR_AGE = Gauge("avwap_feed_last_bar_age_seconds", "Wall seconds since the end of the last bar published.",
                          ["tf"], registry=REGISTRY)

_feed_last: dict[str, float] = {}


def serve(port: int, addr: str = "127.0.0.1") -> Any:
    """Serve ``REGISTRY`` on ``addr:port`` in a daemon thread (0: do nothing). Returns the server or None."""
    if not port:
        return None
    try:
        server, _thread = start_http_server(port, addr=addr, registry=REGISTRY)
    except OSError as exc:  # a busy port must not stop the service: it runs without metrics, loudly
        log.error("metrics endpoint not started on %s:%d: %s", addr, port, exc)
        return None
    log.info("metrics on http://%s:%d/metrics", addr, port)
    return server


# -- hooks the bus calls ----------------------------------------------------------------------------

_children: dict[tuple, Any] = {}  # labelled children by (metric, labels...): the per-message hooks skip labels()


def _child(metric: Any, *labels: str) -> Any:
    key = (id(metric), *labels)
    c = _children.get(key)
    if c is None:
        c = _children[key] = metric.labels(*labels)
    return c


def handled(group: str, stream: str, msg: Message, seconds: float) -> None:
    _child(HANDLED, group, stream, type_name_of(msg)).inc()
    _child(HANDLER_SECONDS, group, stream).observe(seconds)


def failed(group: str, stream: str, seconds: float) -> None:
    _child(FAILED, group, stream).inc()
    _child(HANDLER_SECONDS, group, stream).observe(seconds)


def dead_lettered(group: str, stream: str) -> None:
    DEAD_LETTERED.labels(group, stream).inc()


def lost_races(group: str, n: int) -> None:
    LOST_RACES.labels(group).inc(n)


def heartbeat(group: str, consumer: str, at: float) -> None:
    HEARTBEAT.labels(group, consumer).set(at)


def published(service: str, emits: Iterable[tuple[str, Message]]) -> None:
    """Count what ``service`` published (after its commit): per stream and type, plus decisions by
    reason code (intents and rejections), order events by status, exit events by kind."""
    for stream, m in emits:
        _child(PUBLISHED, service, stream, type_name_of(m)).inc()
        if isinstance(m, EntryIntent):
            _child(DECISIONS, service, "intent", "").inc()
        elif isinstance(m, Rejection):
            for reason in m.reasons or ["UNSPECIFIED"]:
                _child(DECISIONS, service, "rejection", reason).inc()
        elif isinstance(m, OrderEvent):
            _child(ORDER_EVENTS, m.event, m.kind).inc()
        elif isinstance(m, ExitEvent):
            _child(EXIT_EVENTS, m.kind).inc()


# -- the broker and the feed ---------------------------------------------------------------------------

class MeteredBroker:
    """Wraps a broker: every method call is timed (``avwap_broker_request_seconds{call}``) and a
    failure counted by its stable ``code`` (a ``BrokerError``'s, else the exception's class name)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                BROKER_ERRORS.labels(name, str(getattr(exc, "code", "") or type(exc).__name__)).inc()
                raise
            finally:
                BROKER_SECONDS.labels(name).observe(time.perf_counter() - t0)

        return call


def feed_published(tf: str, bar_end_s: float) -> None:
    """The feed published a bar batch whose last bar ends at ``bar_end_s`` (epoch seconds; the feed
    publishes in event-time order, so the latest call is the last bar)."""
    _feed_last[tf] = bar_end_s
    FEED_LAST_BAR.labels(tf).set(_feed_last[tf])
    FEED_LAST_BAR_AGE.labels(tf).set_function(lambda tf=tf: time.time() - _feed_last[tf])


# -- what lives in Redis, read at scrape time ----------------------------------------------------------

def _s(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


ScrapeGauge = tuple[str, Callable[[redis.Redis], float]]
SCRAPE_GAUGES: dict[str, ScrapeGauge] = {}  # name -> (help, function of Redis), read at each scrape


def scrape_gauge(name: str, help_: str, fn: Callable[[redis.Redis], float]) -> None:
    """A service-specific gauge computed from Redis at scrape time (e.g. exits' unprotected positions)."""
    SCRAPE_GAUGES[name] = (help_, fn)


class RedisCollector(Collector):
    """Pending and lag of ``group`` on each of its ``streams``, the DLQ size, and every
    ``SCRAPE_GAUGES`` gauge; a few small reads per scrape. A Redis error yields
    ``avwap_redis_up 0`` instead of failing the scrape."""

    def __init__(self, r: redis.Redis, group: str, streams: Sequence[str], dlq: str) -> None:
        self.r, self.group, self.streams, self.dlq = r, group, list(streams), dlq

    def describe(self) -> list:
        return []

    def collect(self) -> Iterable[GaugeMetricFamily]:
        up = GaugeMetricFamily("avwap_redis_up", "1 when this service's scrape-time Redis reads succeeded.")
        pending = GaugeMetricFamily("avwap_stream_pending", "Entries delivered to the group and not yet acked.",
                                    labels=["group", "stream"])
        lag = GaugeMetricFamily("avwap_stream_lag", "Entries on the stream not yet delivered to the group.",
                                labels=["group", "stream"])
        dlq = GaugeMetricFamily("avwap_dlq_size", "Entries in the dead-letter stream.")
        extras = []
        try:
            for stream in self.streams:
                for g in self.r.xinfo_groups(stream) if self.r.exists(stream) else []:
                    if _s(g["name"]) == self.group:
                        pending.add_metric([self.group, stream], float(g["pending"]))
                        lag.add_metric([self.group, stream], float(g.get("lag") or 0))
            dlq.add_metric([], float(self.r.xlen(self.dlq)))
            for name, (help_, fn) in sorted(SCRAPE_GAUGES.items()):
                fam = GaugeMetricFamily(name, help_)
                fam.add_metric([], float(fn(self.r)))
                extras.append(fam)
            up.add_metric([], 1.0)
        except redis.RedisError as exc:
            log.warning("metrics: Redis read failed at scrape: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        yield from (up, pending, lag, dlq, *extras)


def watch_redis(r: redis.Redis, group: str, streams: Sequence[str], dlq: str) -> RedisCollector:
    """Register the scrape-time Redis collector of a service (once per process)."""
    col = RedisCollector(r, group, streams, dlq)
    REGISTRY.register(col)
    return col
