"""Typed settings from the environment (pydantic-settings), one section per concern.

``load_settings()`` reads every section; ``settings_hash`` fingerprints the non-secret
values for artifact provenance. ``docs/configuration.md`` is generated from these
classes (``python -m shared.settings.docs``) and a test keeps it current.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import BaseModel, PrivateAttr, SecretStr, ValidationError

from shared.ids import stable_id

from .analytics import AnalyticsSettings
from .base import fingerprint
from .core import EXECUTION_MODES, CoreSettings, ExecutionMode
from .exits import ExitsSettings
from .regime import RegimeSettings
from .risk import RiskSettings
from .scanner import ScannerSettings

SECTIONS = (CoreSettings, ScannerSettings, RiskSettings, ExitsSettings, AnalyticsSettings, RegimeSettings)


class Settings(BaseModel, frozen=True):
    core: CoreSettings
    scanner: ScannerSettings
    risk: RiskSettings
    exits: ExitsSettings
    analytics: AnalyticsSettings
    regime: RegimeSettings

    def public_dict(self) -> dict[str, object]:
        """Every non-secret value (secrets show as set/unset only)."""
        out: dict[str, object] = {}
        for name in type(self).model_fields:
            section = getattr(self, name)
            for key in type(section).model_fields:
                value = getattr(section, key)
                if isinstance(value, SecretStr):
                    value = "<set>" if value.get_secret_value() else "<unset>"
                out[key] = value
        return dict(sorted(out.items()))

    _hash: str | None = PrivateAttr(None)

    def hash(self) -> str:
        """Fingerprint of the strategy-relevant settings (paths and secrets excluded); computed once
        per (frozen) settings object, since every artifact's provenance asks for it."""
        if self._hash is None:
            skip = {"redis_url", "artifacts_dir", "ledger_dir", "log_level", "log_format", "consumer_name",
                    "slack_bot_token", "slack_app_token", "live_confirm_token", "slack_base_url", "bars_dir", "run_id", "artifacts_fsync",
                    "bus_keep_sessions", "bus_keep_sessions_bars", "analytics_keep_sessions"}
            self._hash = fingerprint({k: v for k, v in self.public_dict().items() if k not in skip})
        return self._hash

    def resolved_run_id(self) -> str:
        """``RUN_ID``, else ``run-<hash of the execution mode and the settings hash>`` (deterministic)."""
        return self.core.run_id.strip() or stable_id("run", self.core.execution_mode, self.hash(), length=16)


def load_settings(**overrides: object) -> Settings:
    """Read every section from the environment; ``overrides`` are field=value pairs."""
    parts = {}
    for cls, name in zip(SECTIONS, ("core", "scanner", "risk", "exits", "analytics", "regime"), strict=True):
        mine = {k: v for k, v in overrides.items() if k in cls.model_fields}
        parts[name] = cls(**mine)
    unknown = set(overrides) - {k for cls in SECTIONS for k in cls.model_fields}
    if unknown:
        raise ValueError(f"unknown settings: {sorted(unknown)}")
    return Settings(**parts)


def settings_problems(sections: tuple[type[BaseModel], ...] = SECTIONS) -> list[str]:
    """Every invalid variable of every section, one ``NAME='value': why`` each (secret values hidden).

    Empty when the environment validates. Used to report a ``ValidationError`` in one line.
    """
    out: list[str] = []
    for cls in sections:
        try:
            cls()
        except ValidationError as exc:
            secret = {k for k, f in cls.model_fields.items() if "SecretStr" in str(f.annotation)}
            for err in exc.errors():
                field = ".".join(str(x) for x in err["loc"])
                shown = "=<secret>" if field.split(".")[0] in secret else f"={err.get('input')!r}"
                out.append(f"{field.upper()}{shown}: {err['msg']}")
    return out


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once (shells only; cores take values as arguments)."""
    return load_settings()


__all__ = [
    "AnalyticsSettings", "CoreSettings", "EXECUTION_MODES", "ExecutionMode", "ExitsSettings", "RiskSettings",
    "RegimeSettings", "ScannerSettings", "Settings", "SECTIONS", "get_settings", "load_settings", "settings_problems",
]
