"""The rehearsal's droplet: the market data it plays, the credentials of its stand-ins, and the env files
every compose service reads (with the timings raised to the speed-up)."""

from __future__ import annotations

from pathlib import Path

from avwap.procs import ROOT

REFERENCE = ROOT / "data" / "reference"
DAILY_HISTORY = REFERENCE / "sp500_daily_2015_2018.csv.gz"
DAILY_BRIDGE = REFERENCE / "daily_2019-01-02_2019-02-15_intraday_symbols.csv.gz"
INTRADAY = REFERENCE / "intraday_1min_2019-02-11_15.csv.gz"

KEY, SECRET, SLACK_TOKEN = "PKREHEARSAL0000000000", "rehearsal-secret-not-a-real-key", "xoxb-rehearsal-token"
REDIS_PASSWORD = "rehearsal-redis-password"  # compose's Redis requires one (.env), as on a droplet


def rehearsal_symbols() -> list[str]:
    import pandas as pd

    return sorted(set(pd.read_csv(DAILY_BRIDGE, usecols=["symbol"])["symbol"]))


def write_daily(path: Path, symbols: list[str], before: str | None = None, through: str | None = None) -> Path:
    """The daily history of ``symbols`` (the 2015-2018 file, then the 2019 bridge), optionally only the
    sessions before ``before`` / through ``through``, as one CSV."""
    import pandas as pd

    frame = pd.concat([pd.read_csv(p) for p in (DAILY_HISTORY, DAILY_BRIDGE)])
    keep = frame["symbol"].isin(symbols)
    if before:
        keep &= frame["date"] < before
    if through:
        keep &= frame["date"] <= through
    frame[keep].sort_values(["symbol", "date"]).to_csv(path, index=False)
    return path


def timing_env(speed: float) -> dict[str, str]:
    """Intervals and timeouts given in (warped) seconds, raised with the speed-up so that each keeps
    roughly the wall length an operator would give it on a droplet (a 10 s broker timeout at x300 would
    be 33 ms of real time). Documented in docs/rehearsal.md; the production defaults are unchanged."""
    s = speed
    return {"BUS_BLOCK_MS": str(int(max(1000, 0.25 * s * 1000))), "BUS_CLAIM_IDLE_MS": str(int(max(30_000, 3 * s * 1000))),
            "HEARTBEAT_TTL_S": str(int(max(30, 4 * s))), "HEARTBEAT_GRACE_S": str(int(max(90, 12 * s))),
            "HEARTBEAT_CHECK_S": str(int(max(15, 1 * s))), "ANALYTICS_LOCK_TIMEOUT_S": str(int(max(120, 60 * s)))}


def broker_timing_env(speed: float) -> dict[str, str]:
    s = speed
    return {"BROKER_TIMEOUT_S": str(int(max(10, 10 * s))), "BROKER_POLL_S": str(int(max(2, 0.5 * s))),
            "BROKER_POLL_STREAMING_S": str(int(max(30, 2 * s))), "BROKER_SNAPSHOT_INTERVAL_S": str(int(max(60, 4 * s))),
            "BROKER_STREAM_BACKOFF_MIN_S": str(int(max(1, 0.2 * s))), "BROKER_STREAM_BACKOFF_MAX_S": str(int(max(30, 2 * s))),
            "FEED_POLL_S": str(int(max(5, 0.04 * s))), "FEED_MINUTE_DELAY_S": "3",
            "FEED_BACKOFF_MAX_S": str(int(max(60, 4 * s)))}


def _write_env(path: Path, env: dict[str, str], note: str) -> None:
    path.write_text(f"# {note}\n" + "".join(f"{k}={v}\n" for k, v in env.items()))


def write_env(project: Path, urls: dict[str, str], speed: float, extra_env: dict[str, str]) -> None:
    """The droplet's env files: ``.env`` (every service), ``.env.broker``, ``.env.dashboard``, ``.env.slack``."""
    env = {"REDIS_PASSWORD": REDIS_PASSWORD, "EXECUTION_MODE": "ALPACA_PAPER", "SCAN_UNIVERSE_FILE": str(project / "universe.txt"),
           "SCAN_MARKET_GATE": "universe_proxy", "RUN_ID": "rehearsal", **timing_env(speed), **extra_env}
    _write_env(project / ".env", env, "the rehearsal's droplet: settings every service reads")
    from standins.broker_process import client_env

    _write_env(project / ".env.broker", {**client_env(KEY, SECRET, urls), **broker_timing_env(speed)},
               "broker keys and endpoints: the executor and the feed only")
    _write_env(project / ".env.dashboard", {"DASHBOARD_TOKEN": "rehearsal-dashboard-token"},
               "the dashboard's token: the dashboard only")
    _write_env(project / ".env.slack", {"SLACK_BOT_TOKEN": SLACK_TOKEN, "SLACK_CHANNEL": "#avwap",
                                        "SLACK_BASE_URL": urls["slack"]}, "Slack: the notifier only")
