"""Start-up gates: which mode may start, against which endpoint. Pure (values in, verdict out)."""

from __future__ import annotations

from urllib.parse import urlparse

from shared.live_token import token_status

from .settings import ALPACA_LIVE_URL, ALPACA_PAPER_URL

MODES = ("DRY_RUN", "PAPER_SIM", "ALPACA_PAPER", "LIVE")


def _host(url: str) -> str:
    return (urlparse(url).hostname or "").lower()


def is_local(url: str) -> bool:
    return _host(url) in ("127.0.0.1", "localhost", "::1")


def start_check(mode: str, *, base_url: str, paper_url: str = ALPACA_PAPER_URL, allow_local: bool = False,
                has_keys: bool, live_trading: bool, live_token: str | None, token_on_file: str | None,
                stream_url: str | None = None) -> str | None:
    """None when ``mode`` may start; else the one-line reason it must not. ``stream_url`` (the
    trade-update websocket, when set explicitly) must be on the trading endpoint's host."""
    if mode not in MODES:
        return f"unknown EXECUTION_MODE {mode!r}"
    if mode in ("DRY_RUN", "PAPER_SIM"):
        return None
    if not has_keys:
        return f"{mode} needs APCA_API_KEY_ID and APCA_API_SECRET_KEY"
    local = allow_local and is_local(base_url)
    if not local and urlparse(base_url).scheme != "https":
        return f"{mode} must use an https:// endpoint, not {base_url}"
    if stream_url and not (allow_local and is_local(stream_url)) and urlparse(stream_url).scheme != "wss":
        return f"APCA_STREAM_URL must be wss://, not {stream_url}"
    paper = _host(base_url) == _host(paper_url)
    if stream_url and _host(stream_url) != _host(base_url) and not (allow_local and is_local(stream_url)):
        return f"APCA_STREAM_URL {stream_url} is not on the trading endpoint's host {_host(base_url)}"
    if mode == "ALPACA_PAPER" and not (paper or local):
        return f"ALPACA_PAPER must use the paper endpoint {paper_url}, not {base_url}"
    if mode == "LIVE":
        if paper:
            return f"LIVE must not use the paper endpoint {base_url}"
        if not (local or _host(base_url) == _host(ALPACA_LIVE_URL)):
            return f"LIVE must use the live endpoint {ALPACA_LIVE_URL}, not {base_url}"
        return live_gate_check(live_trading=live_trading, live_token=live_token, token_on_file=token_on_file)
    return None


def live_gate_check(*, live_trading: bool, live_token: str | None, token_on_file: str | None) -> str | None:
    """The LIVE gate alone (checked at start, and again before every LIVE entry is sent): None when open."""
    if not live_trading:
        return "LIVE gate closed: LIVE_TRADING is not 1"
    status = token_status(live_token, token_on_file)
    if status == "file_missing":
        return "LIVE gate closed: no confirmation token on file (LIVE_CONFIRM_TOKEN_FILE)"
    if status != "ok":
        return "LIVE gate closed: LIVE_CONFIRM_TOKEN does not match the token on file"
    return None
