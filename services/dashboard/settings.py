"""Dashboard settings (read only by the dashboard; docs/dashboard.md)."""

from __future__ import annotations

import ipaddress

from pydantic import Field, SecretStr

from shared.settings.base import CommaList, Section


class DashboardSettings(Section):
    """The operator's dashboard: where it listens, its access token, what counts as unhealthy."""

    dashboard_host: str = Field("127.0.0.1", description="Address the dashboard listens on (compose publishes it on "
                                "127.0.0.1 of the host only).")
    dashboard_port: int = Field(8050, ge=1, le=65535, description="Port of the dashboard.")
    dashboard_token: SecretStr | None = Field(None, description="Access token (secret): HTTP basic auth with any user "
                                              "name and this password, or `Authorization: Bearer <token>`. Without "
                                              "one the dashboard refuses to start unless DASHBOARD_LOCAL=1.")
    dashboard_local: bool = Field(False, description="Serve without a token. Allowed only when DASHBOARD_HOST is a "
                                  "loopback address (a person on this machine; `avwap demo --serve` sets it).")
    dashboard_refresh_s: float = Field(5.0, gt=0, description="Seconds between the pages' background refreshes.")
    dashboard_services: CommaList = Field(["scanner", "risk", "executor", "exits", "analytics"], description="Comma-separated consumer "
                                    "groups that must have a live heartbeat; a missing one raises the banner.")
    dashboard_max_lag: int = Field(1000, ge=0, description="Unread entries of a group on a stream above which the "
                                   "Now page reports the group as lagging.")
    dashboard_feed_max_age_s: int = Field(0, ge=0, description="Seconds after which the feed's last bar counts as "
                                          "stale during a session (0: not checked, e.g. a replay).")
    dashboard_benchmark: str = Field("SPY", description="Benchmark symbol of the History page; when the bar store "
                                     "lacks it, the equal-weight universe is used (and labelled so).")

    def services(self) -> list[str]:
        return list(self.dashboard_services)

    def refusal(self) -> str | None:
        """Why the dashboard must not start with these settings (None: it may)."""
        if self.dashboard_token is not None and self.dashboard_token.get_secret_value():
            return None
        if not self.dashboard_local:
            return "DASHBOARD_TOKEN is not set (set it, or DASHBOARD_LOCAL=1 to serve this machine only)"
        try:
            loopback = ipaddress.ip_address(self.dashboard_host).is_loopback
        except ValueError:
            loopback = self.dashboard_host == "localhost"
        if not loopback:
            return f"DASHBOARD_LOCAL=1 serves without a token, so only on a loopback address, not {self.dashboard_host}"
        return None
