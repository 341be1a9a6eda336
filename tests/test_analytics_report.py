"""The daily report's sections, from hand-written artifacts: decisions, reconciliation, provenance footer."""

from __future__ import annotations

import re
from pathlib import Path

from services.analytics.report import build_report
from shared.artifacts import code_version, sha256_bytes, write_json_artifact
from shared.schemas import (
    DailyRejections,
    DailyTrades,
    Mismatch,
    PortfolioDecision,
    PortfolioDecisionBatch,
    PortfolioSnapshot,
    PositionMark,
    Reconciliation,
    Rejection,
)

D = "2018-10-02"


def artifacts(root: Path, recon_status: str = "mismatch") -> None:
    write_json_artifact(root / "portfolio_snapshots" / "2018-10-01.json", PortfolioSnapshot(
        snapshot_id="ps-1", date="2018-10-01", capital=1e5, cash=1e5, equity=1e5, gross_exposure=0, net_exposure=0,
        positions=[], realized_pnl=0, unrealized_pnl=0, provenance={"settings_hash": "abc123"}))
    write_json_artifact(root / "portfolio_snapshots" / f"{D}.json", PortfolioSnapshot(
        snapshot_id="ps-2", date=D, capital=1e5, cash=77_000.0, equity=100_500.0, gross_exposure=23_500.0,
        net_exposure=23_500.0, realized_pnl=0.0, unrealized_pnl=500.0, drawdown=0.0, max_drawdown=0.01,
        positions=[PositionMark(symbol="AAPL", qty=100, avg_entry_price=230.0, mark=235.0, market_value=23_500.0,
                                unrealized_pnl=500.0, stop_price=226.5)],
        provenance={"settings_hash": "abc123", "input:broker_snapshot": "bs-2"}))
    write_json_artifact(root / "portfolio_decisions" / f"{D}.json", PortfolioDecisionBatch(
        batch_id="pdb-2", date=D, snapshot_id="ps-1", decisions=[
            PortfolioDecision(decision_id="pd-a", symbol="JPM", candidate_id="c1", decision="ALLOW",
                              reason_codes=["ALLOW_WITHIN_LIMITS"]),
            PortfolioDecision(decision_id="pd-b", symbol="AAPL", candidate_id="c2", decision="BLOCK",
                              reason_codes=["LIMIT_SYMBOL_CONCENTRATION", "LIMIT_GROSS_EXPOSURE"])]))
    mismatches = [Mismatch(type="MISSING_POSITION", symbol="MSFT", key="internal", expected="0", actual="5"),
                  Mismatch(type="UNKNOWN_ORDER", symbol="XOM", key="not-ours", detail="buy limit 5 new")]
    write_json_artifact(root / "reconciliation" / f"{D}.json", Reconciliation(
        recon_id="rc-2", date=D, snapshot_id="bs-2", status=recon_status,
        mismatches=mismatches if recon_status == "mismatch" else [], positions_internal=1, positions_broker=2,
        open_orders=1))
    write_json_artifact(root / "trades" / f"{D}.json", DailyTrades(date=D, trades=[]))
    write_json_artifact(root / "rejections" / f"{D}.json", DailyRejections(date=D, rejections=[
        Rejection(rejection_id="rj-1", source="risk", symbol="AAPL", trade_date=D, reasons=["DECISION_BLOCK"],
                  detail="portfolio: LIMIT_SYMBOL_CONCENTRATION")]))


def section(md: str, title: str) -> list[list[str]]:
    """The table rows (cells) of the Markdown section whose heading starts with ``title``."""
    m = re.search(rf"^## {re.escape(title)}.*?$(.*?)(?=^## |^---$|\Z)", md, re.M | re.S)
    assert m, title
    rows = [line for line in m.group(1).splitlines() if line.startswith("|") and not line.startswith("|---")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows[1:]]  # without the header row


def test_decisions_and_reconciliation_sections(tmp_path: Path) -> None:
    artifacts(tmp_path)
    out = build_report(tmp_path, D)
    md = (out / "report.md").read_text()
    assert section(md, "Decisions") == [["JPM", "ALLOW", "ALLOW_WITHIN_LIMITS"],
                                        ["AAPL", "BLOCK", "LIMIT_SYMBOL_CONCENTRATION, LIMIT_GROSS_EXPOSURE"]]
    assert "## Reconciliation: mismatch" in md
    assert section(md, "Reconciliation") == [["MISSING_POSITION", "MSFT", "0", "5", "internal"],
                                             ["UNKNOWN_ORDER", "XOM", "", "", "not-ours"]]
    assert section(md, "Open positions") == [["AAPL", "100", "230.00", "235.00", "226.50", "500.00"]]
    assert section(md, "Rejections") == [["AAPL", "risk", "DECISION_BLOCK", "portfolio: LIMIT_SYMBOL_CONCENTRATION"]]
    html = (out / "report.html").read_text()
    assert "<h2>Reconciliation: mismatch</h2>" in html
    assert "<tr><td>AAPL</td><td>BLOCK</td><td>LIMIT_SYMBOL_CONCENTRATION, LIMIT_GROSS_EXPOSURE</td></tr>" in html
    assert "<tr><td>UNKNOWN_ORDER</td><td>XOM</td><td></td><td></td><td>not-ours</td></tr>" in html


def test_footer_names_code_settings_and_inputs(tmp_path: Path) -> None:
    artifacts(tmp_path)
    out = build_report(tmp_path, D)
    md = (out / "report.md").read_text()
    footer = md.split("\n---\n", 1)[1]
    trades_sha = sha256_bytes((tmp_path / "trades" / f"{D}.json").read_bytes())[:16]
    for part in (f"code_version `{code_version()}`", "settings_hash `abc123`", "input:portfolio_snapshot `ps-2`",
                 "input:portfolio_decisions `pdb-2`", "input:reconciliation `rc-2`", f"input:trades `{trades_sha}`"):
        assert part in footer, part
    assert "<footer>" in (out / "report.html").read_text() and "ps-2" in (out / "report.html").read_text()


def test_reconciliation_ok_or_not_run(tmp_path: Path) -> None:
    artifacts(tmp_path, recon_status="ok")
    md = (build_report(tmp_path, D) / "report.md").read_text()
    assert "## Reconciliation: ok" in md and section(md, "Reconciliation") == []
    (tmp_path / "reconciliation" / f"{D}.json").unlink()
    (tmp_path / "portfolio_decisions" / f"{D}.json").unlink()
    md = (build_report(tmp_path, D) / "report.md").read_text()
    assert "## Reconciliation: not run" in md and section(md, "Decisions") == []


def test_summary_counts_every_closed_trade_of_the_run_not_only_the_last_day(tmp_path: Path) -> None:
    """A day's trades file holds its open trades and the trades closed that day; the run summary unions them."""
    from services.analytics.report import summarize

    def t(tid: str, status: str, pnl: float, closed: str = "") -> dict:
        return {"trade_id": tid, "status": status, "realized_pnl": pnl, "r_multiple": pnl / 100, "closed_date": closed}

    days = {
        "2018-03-01": [t("tr-a", "closed", 250.0, "2018-03-01"), t("tr-b", "open", 0.0)],
        "2018-03-02": [t("tr-b", "open", 0.0)],
        "2018-03-05": [t("tr-b", "closed", -120.0, "2018-03-05"), t("tr-c", "open", 0.0)],
        "2018-03-06": [t("tr-c", "open", 0.0)],
    }
    for d, trades in days.items():
        write_json_artifact(tmp_path / "trades" / f"{d}.json", {"date": d, "v": 1, "trades": trades})
    s = summarize(tmp_path)
    assert (s["trades"], s["wins"], s["losses"]) == (2, 1, 1)
    assert s["realized_pnl"] == 130.0 and s["win_rate"] == 0.5 and s["avg_r"] == 0.65
