"""``avwap universe build``: SCAN_UNIVERSE_FILE from the broker's asset list and the scan's liquidity rules."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import typer

from avwap.common import broker_settings_or_fail, fail
from shared.settings import get_settings

app = typer.Typer()
universe_app = typer.Typer(help="The scan universe: built from the broker's assets and the bars.", no_args_is_help=True)
app.add_typer(universe_app, name="universe")


def render(symbols: list[str], sectors: dict[str, str], header: list[str]) -> str:
    """The universe file (``shared.universe`` format): ``#`` header lines, then ``SYMBOL[,SECTOR]`` sorted."""
    lines = [f"# {h}" for h in header]
    lines += [f"{s},{sectors[s]}" if sectors.get(s) else s for s in sorted(symbols)]
    return "\n".join(lines) + "\n"


@universe_app.command("build")
def build(
    out: Path | None = typer.Option(None, "--out", help="File to write (default SCAN_UNIVERSE_FILE)."),
    bars_dir: Path | None = typer.Option(None, "--bars-dir", help="Bar store root (default BARS_DIR)."),
    min_price: float | None = typer.Option(None, "--min-price", help="Minimum last close (default UNIVERSE_MIN_PRICE, "
                                           "else SCAN_MIN_PRICE)."),
    min_dollar_volume: float | None = typer.Option(None, "--min-dollar-volume", help="Minimum average dollar volume "
                                                   "(default UNIVERSE_MIN_AVG_DOLLAR_VOLUME, else SCAN_MIN_AVG_DOLLAR_VOLUME)."),
    sectors: Path | None = typer.Option(None, "--sectors", exists=True, dir_okay=False,
                                        help="A SYMBOL,SECTOR file whose sectors are carried over (the broker has none)."),
    through: str | None = typer.Option(None, "--through", help="Last session of the bars used (YYYY-MM-DD); default: "
                                       "the last closed session."),
) -> None:
    """List the broker's active, tradable US equities on UNIVERSE_EXCHANGES (alpaca-py get_all_assets), screen
    them on their last SCAN_AVG_LEN sessions, backfill the full history of the ones that pass, keep those the
    scan's price and liquidity filters accept on it, and write them. Same assets and bars: same file."""
    from services.executor.assets import tradable_symbols
    from services.executor.backfill import backfill, history_start
    from services.executor.feed import data_source
    from services.scanner.core import liquidity
    from shared.bars import BarStore
    from shared.clock import ReplayClock, WallClock, calendar
    from shared.redis_conn import connect
    from shared.universe import UniverseError, read_universe

    settings = get_settings()
    bs = broker_settings_or_fail("universe build")
    target = out or (Path(settings.scanner.scan_universe_file) if settings.scanner.scan_universe_file else None)
    if target is None:
        fail("no output file: pass --out FILE or set SCAN_UNIVERSE_FILE")
    try:
        carried = read_universe(sectors) if sectors else {}
    except UniverseError as exc:
        fail(str(exc))
    sc = settings.scanner
    p = sc.model_copy(update={
        "scan_min_price": min_price if min_price is not None else (sc.universe_min_price if sc.universe_min_price is not None else sc.scan_min_price),
        "scan_min_avg_dollar_volume": min_dollar_volume if min_dollar_volume is not None else (
            sc.universe_min_avg_dollar_volume if sc.universe_min_avg_dollar_volume is not None else sc.scan_min_avg_dollar_volume)})
    r = connect(settings.core.redis_url) if settings.core.redis_url else None
    exchanges = list(sc.universe_exchanges)
    assets, listed = tradable_symbols(bs, r, exchanges)
    typer.echo(f"assets: {listed} active US equities listed, {len(assets)} tradable on {','.join(exchanges)}")
    if not assets:
        fail("the broker listed no tradable asset on those exchanges")
    source = data_source(bs, r)
    store = BarStore(bars_dir if bars_dir is not None else settings.core.bars_dir)
    cal, now = calendar(), WallClock().now_ns()
    if through is not None:
        if not cal.is_session(through) or cal.open_close_ns(through)[1] > now:
            fail(f"--through must be a closed NYSE session (YYYY-MM-DD), not {through!r}")
        now = cal.open_close_ns(through)[1] + 1
    clock = ReplayClock(now)  # one "now" for the whole build: the same inputs give the same file
    progress = sys.stderr.isatty()
    # 1. screen every asset on its last SCAN_AVG_LEN sessions (a scratch store, removed after)
    scratch = Path(store.root) / ".universe-screen"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        tmp = BarStore(scratch)
        backfill(source, tmp, assets, history_start(cal, now, p.scan_avg_len + 1), bs=bs, clock=clock, progress=progress)
        dates = tmp.dates("1d")
        if not dates:
            fail("the market-data API returned no daily bars for the assets")
        screen = liquidity(tmp.daily_panel(through=dates[-1]), assets, dates[-1],
                           p.model_copy(update={"scan_min_history": 1}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    passed = sorted(s for s, code in screen.items() if not code)
    typer.echo(f"screen: {len(passed)} of {len(assets)} pass price >= {p.scan_min_price:g} and average dollar volume "
               f">= {p.scan_min_avg_dollar_volume:g} over {p.scan_avg_len} sessions")
    # 2. the full history of those, then the scan's own rules on it
    start = history_start(cal, now, sc.scan_history_bars + 10)
    backfill(source, store, passed, start, bs=bs, clock=clock, progress=progress)
    last = dates[-1]
    final = liquidity(store.daily_panel(symbols=passed, through=last, lookback=sc.scan_history_bars), passed, last, p)
    keep = sorted(s for s, code in final.items() if not code)
    dropped: dict[str, int] = {}
    for code in [*screen.values(), *final.values()]:
        if code:
            dropped[code] = dropped.get(code, 0) + 1
    header = [f"avwap universe build: {len(keep)} symbols of {len(assets)} active, tradable US equities on "
              f"{','.join(exchanges)}", f"bars through {last}; min price {p.scan_min_price:g}; min average dollar "
              f"volume {p.scan_min_avg_dollar_volume:g} over {p.scan_avg_len} sessions; min history "
              f"{p.scan_min_history} sessions", "dropped: " + (", ".join(f"{k} {v}" for k, v in sorted(dropped.items())) or "none")]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmpf = target.with_name(f".{target.name}.tmp")
    tmpf.write_text(render(keep, dict(carried), header))
    os.replace(tmpf, target)
    typer.echo(f"wrote {target}: {len(keep)} symbols ({header[2]})")
