"""Serve the dashboard: settings, the refusal without a token, uvicorn (docs/dashboard.md)."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from shared.logs import setup_logging
from shared.service import StreamIO, idle_invalid_settings, refuse_and_idle
from shared.settings import SECTIONS, Settings, get_settings
from shared.streams import ALERTS

from .app import create_app
from .readers import read_only
from .settings import DashboardSettings

NAME = "dashboard"
# reads streams without a consumer group (XINFO, XRANGE); writes only the refusal alert
STREAM_IO = StreamIO(consumes=(), produces=(ALERTS,))
log = logging.getLogger(__name__)


def make_server(settings: Settings, ds: DashboardSettings, redis_url: str) -> uvicorn.Server:
    """A uvicorn server of the dashboard over ``redis_url`` and the settings' artifact directories
    (access log off: it would record every poll)."""
    c = settings.core
    app = create_app(read_only(redis_url), Path(c.artifacts_dir), Path(c.ledger_dir), Path(c.bars_dir), ds,
                     env_kill=c.kill_switch)
    config = uvicorn.Config(app, host=ds.dashboard_host, port=ds.dashboard_port, access_log=False,
                            log_level="warning", lifespan="off")
    return uvicorn.Server(config)


def serve(settings: Settings, ds: DashboardSettings, redis_url: str, stop: threading.Event | None = None) -> int:
    """Serve until SIGTERM/SIGINT (uvicorn's handlers) or ``stop``; refuses (idles, exit 2) as
    ``DashboardSettings.refusal`` says."""
    reason = ds.refusal()
    if reason:
        return refuse_and_idle(NAME, "refused_to_start", "dashboard refused to start", reason,
                               redis_url=redis_url, runbook="dashboard", stop=stop)
    server = make_server(settings, ds, redis_url)
    auth = "token required" if ds.dashboard_token else "no token (DASHBOARD_LOCAL=1, this machine only)"
    print(f"avwap dashboard: http://{ds.dashboard_host}:{server.config.port}/ ({auth})", flush=True)
    if stop is not None:
        threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True).start()
    server.run()
    return 0


def main() -> int:
    try:
        settings = get_settings()
        ds = DashboardSettings()
    except ValidationError:
        return idle_invalid_settings(NAME, sections=(*SECTIONS, DashboardSettings))
    setup_logging(settings.core.log_level, settings.core.log_format, service=NAME)
    if not settings.core.redis_url:
        return refuse_and_idle(NAME, "refused_to_start", "dashboard refused to start",
                               "REDIS_URL is not set (the dashboard reads a running system's Redis)", redis_url=None)
    return serve(settings, ds, settings.core.redis_url)
