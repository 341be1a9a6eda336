"""``avwap demo``: the main job on embedded defaults (no Redis URL, no broker keys, no internet)."""

from __future__ import annotations

import time
from pathlib import Path

import redis
import typer

from avwap.common import fail, job_redis
from avwap.procs import ServiceProcs
from shared.bus import Bus
from shared.ids import stable_id
from shared.schemas import Candidate, CandidateBatch, decode
from shared.streams import CANDIDATES, INTENTS, ORDERS, REJECTIONS, state_key

app = typer.Typer()


def demo_candidate() -> CandidateBatch:
    c = Candidate(candidate_id=stable_id("cd", "2018-12-03", "AAPL"), scan_date="2018-12-03", symbol="AAPL",
                  price=184.82, anchor="SWING_LOW", anchor_date="2018-11-20", avwap=180.10, entry_level=180.10,
                  entry_dist_pct=2.62, stop_loss=178.20, target_r1=190.0, target_r2=195.0, trend_score=12.5,
                  avwap_slope=0.8, score=95.0, setups=["RECLAIM"])
    return CandidateBatch(batch_id=stable_id("cb", "2018-12-03", [c.candidate_id]), scan_date="2018-12-03",
                          market_gate_ok=True, candidates=[c], universe_size=1)


def _wait(r: redis.Redis, stream: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        entries = r.xrange(stream, count=1)
        if entries:
            return entries[0][1]
        time.sleep(0.05)
    fail(f"nothing arrived on {stream} within {timeout:.0f}s")


def run_skeleton_demo(out_dir: Path) -> None:
    with job_redis() as url:
        r = redis.Redis.from_url(url)
        procs = ServiceProcs(url, env={"EXECUTION_MODE": "DRY_RUN", "LEDGER_DIR": str(out_dir / "ledger"),
                                       "ARTIFACTS_DIR": str(out_dir / "artifacts"), "BUS_BLOCK_MS": "200"},
                             log_dir=out_dir / "logs")
        try:
            procs.start_all()
            procs.wait_ready()
            typer.echo("1. five services up: scanner, risk, executor, exits, analytics")
            batch = demo_candidate()
            from avwap.commands.risk import session_prelude
            from services.scanner.session import publish_batch_once

            # The demo's batch claims the session, so the scanner publishes no second batch on PRE_MARKET.
            publish_batch_once(r, [(CANDIDATES, batch)], owner="demo")
            Bus(r).publish_many(session_prelude(batch.scan_date))  # PRE_MARKET + a fresh broker snapshot of the day
            c = batch.candidates[0]
            typer.echo(f"2. scanner -> {CANDIDATES}: {c.symbol} entry {c.entry_level} stop {c.stop_loss}")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not (r.xlen(INTENTS) or r.xlen(REJECTIONS)):
                time.sleep(0.05)
            if r.xlen(REJECTIONS):
                rej = decode(r.xrange(REJECTIONS, count=1)[0][1][b"data"])
                typer.echo(f"3. risk -> {REJECTIONS}: {rej.reasons}")  # type: ignore[attr-defined]
                return
            intent = decode(_wait(r, INTENTS)[b"data"])
            typer.echo(f"3. risk -> {INTENTS}: buy {intent.qty} {intent.symbol} (risk/share {intent.risk_per_share})")  # type: ignore[attr-defined]
            ev = decode(_wait(r, ORDERS)[b"data"])
            typer.echo(f"4. executor (DRY_RUN) -> {ORDERS}: {ev.event} {ev.client_order_id} ({ev.reason})")  # type: ignore[attr-defined]
            deadline = time.monotonic() + 20
            seen = state_key("exits", "stats")
            while time.monotonic() < deadline and not r.hget(seen, "handled:order_event"):
                time.sleep(0.05)
            n = int(r.hget(seen, "handled:order_event") or 0)
            typer.echo(f"5. exits consumed the order event ({n} seen; DRY_RUN holds no shares, so no stop)")
            ledger = out_dir / "ledger" / "analytics" / f"{c.scan_date}.jsonl"
            while time.monotonic() < deadline and not (ledger.exists() and ledger.read_text().count("\n") >= 2):
                time.sleep(0.05)
            n = ledger.read_text().count("\n") if ledger.exists() else 0
            typer.echo(f"6. analytics ledger {ledger}: {n} records")
        finally:
            codes = procs.stop_all()
            typer.echo(f"7. services stopped: {codes}")


SAMPLE = Path(__file__).resolve().parents[2] / "data" / "sample" / "daily_2017_2018.csv.gz"
DEMO_ENV = {
    # The sample has no SPY: the market gate uses the equal-weight universe proxy (docs/scanner.md).
    "SCAN_MARKET_GATE": "universe_proxy",
}


@app.command("demo")
def demo(
    out: Path = typer.Option(Path("out/demo"), help="Output directory (artifacts, ledgers, logs, report)."),
    start: str = typer.Option("2018-01-02", "--from", help="First session."),
    end: str = typer.Option("2018-12-31", "--to", help="Last session."),
    hops: bool = typer.Option(False, help="Instead: push one candidate through the five services, hop by hop."),
    serve: bool = typer.Option(False, "--serve", help="Then serve the dashboard on the finished replay "
                               "(http://127.0.0.1:DASHBOARD_PORT/, this machine only) until Ctrl-C."),
) -> None:
    """Replay the bundled sample (36 symbols, 2018) through the five services in PAPER_SIM.

    Needs no configuration: an embedded Redis, no broker keys, no internet. Ends with the
    summary and the path of the HTML report.
    """
    if hops:
        run_skeleton_demo(out)
        return
    from avwap.replay_run import run_replay_cli

    run_replay_cli(bars=SAMPLE, intraday=None, start=start, end=end, mode="PAPER_SIM", out=out, equity=100_000.0,
                   replicas=1, env=DEMO_ENV, then=(lambda url, _res: serve_replay(url, out)) if serve else None)


def serve_replay(redis_url: str, out: Path) -> None:
    """The dashboard over a finished replay's Redis and ``out``: no token, loopback only; no service
    is expected to be alive (the replay stopped them), so heartbeats are shown, not required."""
    from services.dashboard.server import serve
    from services.dashboard.settings import DashboardSettings
    from shared.settings import load_settings

    settings = load_settings(redis_url=redis_url, artifacts_dir=str(out / "artifacts"), ledger_dir=str(out / "ledger"),
                             bars_dir=str(out / "bars"))
    ds = DashboardSettings(dashboard_local=True, dashboard_host="127.0.0.1", dashboard_token=None, dashboard_services="")
    typer.echo("dashboard on the finished replay; Ctrl-C stops it (and the replay's Redis)")
    serve(settings, ds, redis_url)
