"""The shared broker REST limit on real Redis: one window across instances and processes, 429 pauses."""

from __future__ import annotations

import multiprocessing

import pytest
import redis

from services.executor.rate_limit import RateLimiter, key_for, retry_after_s


class FakeTime:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def test_two_callers_of_one_key_share_one_window(real_redis) -> None:
    ft = FakeTime()
    a, b = (RateLimiter(real_redis, "PKSHARED", per_minute=5, clock=ft.clock, sleep=ft.sleep) for _ in range(2))
    other = RateLimiter(real_redis, "PKOTHER", per_minute=5, clock=ft.clock, sleep=ft.sleep)
    grants = []
    for i in range(12):
        (a if i % 2 else b).acquire()
        grants.append(ft.t)
    assert grants[:5] == [grants[0]] * 5  # a burst of 5 at once, then one per freed slot
    assert all(grants[i + 5] - grants[i] >= 60.0 for i in range(len(grants) - 5))  # never 6 in 60 s
    assert grants[-1] - grants[0] < 130  # and no slower than the window requires
    assert other.acquire() == 0.0  # another key has its own window
    assert "PKSHARED" not in key_for("PKSHARED") and key_for("PKSHARED") == a.key


class Recording(RateLimiter):
    """Records the time each grant was counted at (the ``now`` the window saw)."""

    grants: list[float]

    def _try(self, now: float) -> float:
        wait = super()._try(now)
        if wait <= 0:
            self.grants.append(now)
        return wait


def _worker(url: str, n: int, out: str) -> None:
    r = redis.Redis.from_url(url)
    lim = Recording(r, "PKPROCS", per_minute=10, window_s=1.0)
    lim.grants = []
    for _ in range(n):
        lim.acquire()
    r.rpush(out, *map(repr, lim.grants))


def test_processes_sharing_a_key_stay_under_the_limit(redis_url: str, real_redis) -> None:
    """Three real processes, 10 requests each, limit 10 per (shortened) 1 s window: 30 grants over >= 2 s,
    no 1 s window with more than 10."""
    real_redis.delete("grants")
    ctx = multiprocessing.get_context("spawn")  # no fork of a parent with live threads (stand-ins, pools)
    procs = [ctx.Process(target=_worker, args=(redis_url, 10, "grants")) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(20)
        assert p.exitcode == 0
    t = sorted(float(x) for x in real_redis.lrange("grants", 0, -1))
    assert len(t) == 30
    assert all(t[i + 10] - t[i] >= 0.99 for i in range(len(t) - 10))
    assert t[-1] - t[0] >= 1.98


def test_retry_after_headers() -> None:
    assert retry_after_s({"Retry-After": "7"}, 100.0) == 7.0
    assert retry_after_s({"X-RateLimit-Reset": "130"}, 100.0) == 30.0  # Alpaca: UNIX epoch seconds
    assert retry_after_s({"x-ratelimit-reset": "90"}, 100.0) == 0.0
    assert retry_after_s({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 1445412470.0) == 10.0
    assert retry_after_s({}, 100.0) is None and retry_after_s({"X-RateLimit-Reset": "soon"}, 1.0) is None


@pytest.mark.parametrize(("headers", "waits"), [
    ({"X-RateLimit-Limit": "200", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1000004"}, [4.0, 1.0]),  # then past: backoff
    ({"Retry-After": "3"}, [3.0, 3.0]),
    ({}, [1.0, 2.0]),  # no header: exponential backoff
])
def test_a_429_pauses_every_caller_then_the_request_is_retried(real_redis, headers, waits) -> None:
    """The real alpaca-py data client against the stand-in answering 429 twice: the limiter pauses as
    the headers say (every caller of the key waits too), retries, and the bars come back."""
    from services.executor.feed import AlpacaData
    from shared.clock import calendar
    from shared.schemas import BarRow
    from standins.alpaca_data import AlpacaDataStandIn

    ft = FakeTime()
    lim = RateLimiter(real_redis, "PK429", clock=ft.clock, sleep=ft.sleep)
    peer = RateLimiter(real_redis, "PK429", clock=ft.clock, sleep=ft.sleep)
    _, close = calendar().open_close_ns("2019-02-11")
    row = BarRow(symbol="AAPL", ts=close, open=1.0, high=2.0, low=0.5, close=1.5, volume=100.0)
    with AlpacaDataStandIn([], [row]) as standin:
        src = AlpacaData("PK429", "SECRET", url=standin.url, feed="iex", timeout_s=2.0, limiter=lim)
        standin.throttle_next, standin.throttle_headers = 2, headers

        pauses = []
        orig = lim.pause

        def spy(s: float) -> None:
            pauses.append(s)
            orig(s)
            assert peer._try(ft.clock()) > 0  # the other caller is paused too  # noqa: SLF001

        lim.pause = spy  # type: ignore[method-assign]
        got = src.bars(["AAPL"], "1d", close - 86400 * 10**9, close)
    assert [b.close for b in got] == [1.5]
    assert lim.throttled == 2 and len(standin.requests) == 3
    assert pauses == pytest.approx(waits, abs=0.01)
    assert ft.sleeps[0] == pytest.approx(waits[0], abs=0.01)  # the request waited the pause out


def test_after_the_retries_the_429_reaches_the_caller(real_redis) -> None:
    from alpaca.common.exceptions import APIError

    from services.executor.feed import AlpacaData
    from standins.alpaca_data import AlpacaDataStandIn

    ft = FakeTime()
    lim = RateLimiter(real_redis, "PKGIVEUP", retries=2, clock=ft.clock, sleep=ft.sleep)
    with AlpacaDataStandIn([], []) as standin:
        src = AlpacaData("PKGIVEUP", "SECRET", url=standin.url, feed="iex", timeout_s=2.0, limiter=lim)
        standin.throttle_next = 5
        with pytest.raises(APIError):
            src.bars(["AAPL"], "1d", 0, 86400 * 10**9)
    assert len(standin.requests) == 3 and lim.throttled == 2


def test_without_redis_the_limit_holds_in_process() -> None:
    ft = FakeTime()
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    down = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    lim = RateLimiter(down, "PKLOCAL", per_minute=3,
                      clock=ft.clock, sleep=ft.sleep)
    grants = []
    for _ in range(6):
        lim.acquire()
        grants.append(ft.t)
    assert grants[3] - grants[0] >= 60.0 and grants[:3] == [grants[0]] * 3


@pytest.mark.parametrize("with_redis", [True, False])
def test_the_budget_gauge_shows_the_requests_left_in_the_window(real_redis, with_redis: bool) -> None:
    from shared import metrics

    ft = FakeTime()
    lim = RateLimiter(real_redis if with_redis else None, "PKGAUGE", per_minute=4, clock=ft.clock, sleep=ft.sleep)
    left = []
    for _ in range(4):
        lim.acquire()
        left.append(metrics.RATE_BUDGET._value.get())
    assert left == [3.0, 2.0, 1.0, 0.0]
    ft.t += 61.0  # the window has passed: the next grant sees a fresh budget
    lim.acquire()
    assert metrics.RATE_BUDGET._value.get() == 3.0
