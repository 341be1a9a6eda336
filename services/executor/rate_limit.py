"""One broker REST rate limit for every process that calls Alpaca (feed, backfill, executor, universe build).

Alpaca allows **200 requests every minute per API key** and answers HTTP 429 beyond it (Alpaca docs,
``content/api-references/trading-api/_index.md`` "Rate Limit"; the market-data endpoints list ``429 -
Too many requests`` the same way, ``market-data-api/stock-pricing-data/historical.md``). Alpaca's
responses carry ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` ("the UNIX
epoch in seconds when the quota is reset", ``broker-api/_index.md``); HTTP's ``Retry-After`` (seconds)
is honoured too when a proxy or the API sends it.

The limit is per key, and several processes share one key, so the count lives in Redis: a sliding
window log (a sorted set of grant times under ``avwap:ratelimit:alpaca:<sha256(key id)[:16]>``) checked
and appended in one Lua script, so no 60-second window ever holds more than BROKER_RATE_LIMIT_PER_MIN
grants across all processes. A 429 sets a shared pause (``…:pause``, the epoch until which every caller
waits) from Retry-After / X-RateLimit-Reset, else (no header, or a reset already past) an exponential backoff (1 s doubling, capped at
BROKER_RATE_LIMIT_BACKOFF_MAX_S); the request is then retried, at most BROKER_RATE_LIMIT_RETRIES times,
after which the 429 is returned to the caller (alpaca-py raises its APIError; the caller's own backoff
takes over). If Redis does not answer, the limiter falls back to the same window kept in this process
(logged once; Redis is tried again after REDIS_RETRY_S): requests go on, and a 429 still backs off.

Use: ``limiter.install(client)`` on any alpaca-py REST client (``StockHistoricalDataClient``,
``TradingClient``): every request of that client then goes through ``limiter.acquire``.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import redis

from shared import metrics

log = logging.getLogger(__name__)

ALPACA_LIMIT_PER_MIN = 200  # documented: 200 requests every minute per API key
KEY_PREFIX = "avwap:ratelimit:alpaca"
REDIS_RETRY_S = 10.0  # after a Redis error, the in-process window is used this long before Redis is tried again

# KEYS: window zset, pause key. ARGV: now (s), window (s), limit, member.
# Returns {seconds to wait, requests left in the window} as strings ("0": granted and recorded).
_ACQUIRE = """
local now = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local pause = tonumber(redis.call('GET', KEYS[2]) or '0')
if pause > now then return {tostring(pause - now), '0'} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
  return {'0', tostring(limit - redis.call('ZCARD', KEYS[1]))}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {tostring(tonumber(oldest[2]) + window - now), '0'}
"""

# KEYS: pause key. ARGV: until (epoch s), ttl ms. Only ever extends the pause.
_PAUSE = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > cur then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
return redis.call('GET', KEYS[1])
"""


def key_for(key_id: str) -> str:
    """The Redis key of one API key's window (the key id itself is never stored)."""
    return f"{KEY_PREFIX}:{hashlib.sha256(key_id.encode()).hexdigest()[:16]}"


def retry_after_s(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from a 429's headers: ``Retry-After`` (seconds or an HTTP date), else
    ``X-RateLimit-Reset`` (UNIX epoch seconds, Alpaca's header); None when neither is usable."""
    h = {k.lower(): v for k, v in headers.items()}
    ra = h.get("retry-after")
    if ra:
        try:
            return max(0.0, float(ra))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(ra).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = h.get("x-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset) - now)
        except ValueError:
            return None
    return None


class RateLimiter:
    """The shared limit of one API key (see the module docstring). ``clock``/``sleep``: tests inject them."""

    def __init__(self, r: redis.Redis | None, key_id: str, *, per_minute: int = 190, window_s: float = 60.0,
                 retries: int = 5, backoff_max_s: float = 60.0, clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        if per_minute < 1:
            raise ValueError("per_minute must be >= 1")
        self.r = r
        self.key = key_for(key_id)
        self.pause_key = f"{self.key}:pause"
        self.limit, self.window = per_minute, window_s
        self.retries, self.backoff_max = retries, backoff_max_s
        self.clock, self.sleep = clock, sleep
        self._ids = itertools.count()
        self._local: deque[float] = deque()
        self._local_pause = 0.0
        self._lock = threading.Lock()
        self._warned = False
        self._redis_down_until = 0.0
        self.waited_s = 0.0  # total time this instance spent waiting (logs, tests)
        self.throttled = 0  # 429s seen

    # -- the window -------------------------------------------------------------------------
    def _try(self, now: float) -> float:
        """Seconds to wait before a grant (0: granted now and counted)."""
        if self.r is not None and now >= self._redis_down_until:
            try:
                member = f"{now:.6f}:{os.getpid()}:{id(self)}:{next(self._ids)}"
                wait, left = self.r.eval(_ACQUIRE, 2, self.key, self.pause_key, repr(now), repr(self.window),
                                         self.limit, member)
                metrics.RATE_BUDGET.set(float(left))
                return float(wait)
            except (redis.RedisError, OSError) as exc:
                self._redis_down_until = now + REDIS_RETRY_S  # not on every request: Redis is retried later
                if not self._warned:
                    log.warning("rate limit: Redis unavailable (%s); limiting in this process only", exc)
                    self._warned = True
        with self._lock:
            if self._local_pause > now:
                return self._local_pause - now
            while self._local and self._local[0] <= now - self.window:
                self._local.popleft()
            if len(self._local) < self.limit:
                self._local.append(now)
                metrics.RATE_BUDGET.set(self.limit - len(self._local))
                return 0.0
            return self._local[0] + self.window - now

    def acquire(self) -> float:
        """Block until a request may go out (and count it); returns the seconds waited."""
        waited = 0.0
        while True:
            wait = self._try(self.clock())
            if wait <= 0:
                self.waited_s += waited
                return waited
            wait = min(wait, self.window) + 0.001
            self.sleep(wait)
            waited += wait

    def pause(self, seconds: float) -> None:
        """Every caller of this key waits ``seconds`` from now (a 429); only ever extends a pause."""
        until = self.clock() + seconds
        with self._lock:
            self._local_pause = max(self._local_pause, until)
        if self.r is not None:
            try:
                self.r.eval(_PAUSE, 1, self.pause_key, repr(until), int(seconds * 1000) + 1000)
            except (redis.RedisError, OSError) as exc:
                log.warning("rate limit: could not share the pause (%s)", exc)

    # -- HTTP ---------------------------------------------------------------------------------
    def request(self, send: Callable[..., Any], method: str, url: str, **kw: Any) -> Any:
        """``send(method, url, **kw)`` under the limit; a 429 pauses every caller and is retried."""
        backoff = 1.0
        for attempt in range(self.retries + 1):
            self.acquire()
            resp = send(method, url, **kw)
            if getattr(resp, "status_code", None) != 429 or attempt == self.retries:
                return resp
            self.throttled += 1
            wait = retry_after_s(resp.headers, self.clock())
            if not wait:  # no usable header (or a reset already past): back off anyway
                wait, backoff = backoff, min(backoff * 2, self.backoff_max)
            wait = min(wait, self.backoff_max)
            log.warning("broker answered 429 (rate limit); every caller pauses %.1fs (retry %d/%d)",
                        wait, attempt + 1, self.retries)
            self.pause(wait)
        return resp

    def install(self, client: Any) -> Any:
        """Route every request of an alpaca-py REST client (``client._session``) through the limiter;
        alpaca-py's own 429 retry is turned off (this one is shared and honours the headers)."""
        session = client._session  # noqa: SLF001 - alpaca-py's requests.Session
        send = session.request
        session.request = lambda method, url, **kw: self.request(send, method, url, **kw)
        client._retry_codes = [c for c in getattr(client, "_retry_codes", []) if c != 429]  # noqa: SLF001
        return client


def from_settings(r: redis.Redis | None, bs: Any) -> RateLimiter | None:
    """The limiter of the configured key (``BrokerSettings``), None without a key id."""
    key = bs.apca_api_key_id.get_secret_value() if bs.apca_api_key_id else ""
    if not key:
        return None
    return RateLimiter(r, key, per_minute=bs.broker_rate_limit_per_min, retries=bs.broker_rate_limit_retries,
                       backoff_max_s=bs.broker_rate_limit_backoff_max_s)
