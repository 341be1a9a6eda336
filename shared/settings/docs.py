"""Render ``docs/configuration.md`` from the settings classes: ``python -m shared.settings.docs``."""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution, entry_points

from pydantic_settings import BaseSettings

from . import SECTIONS
from .base import env_text

# Sections that live outside shared/ (e.g. the executor's broker settings, which hold secrets only
# it reads) register themselves as entry points of this group in pyproject.toml.
ENTRY_POINT_GROUP = "avwap.settings"

HEADER = """# Configuration

Every setting is read from the environment (case-insensitive), typed and defaulted.
This file is generated from the settings classes: `python -m shared.settings.docs > docs/configuration.md`
(a test fails when it is out of date). Secrets are read only from the environment and never logged.

Booleans are `1`/`0` or `true`/`false` (any case), nothing else; numbers must be finite (`nan`/`inf`
are refused) and inside the range shown. A `list[str]` setting is comma-separated text
(`ALLOWLIST=AAPL,MSFT`; spaces around items and empty items are ignored). A service whose
environment does not validate refuses to start: one log line naming each bad variable and a
`settings_invalid` alert, then it idles without a heartbeat until it is fixed and restarted (no
restart loop); the CLI prints the same line and exits 2.
"""


def registered_sections() -> list[type[BaseSettings]]:
    """The sections registered in the ``avwap.settings`` entry-point group, by entry-point name.

    Entry points are metadata of the installed package: without it (a bare checkout) this raises
    instead of silently rendering a shorter document.
    """
    try:
        distribution("avwap")
    except PackageNotFoundError as exc:
        raise RuntimeError("the avwap package is not installed (`make venv` or `pip install -e .`): settings "
                           f"sections outside shared/ are found through its {ENTRY_POINT_GROUP!r} entry points") from exc
    out: list[type[BaseSettings]] = []
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, BaseSettings)):
            raise TypeError(f"entry point {ep.name} = {ep.value} is not a settings class")
        out.append(cls)
    return out


def _sections() -> list[type[BaseSettings]]:
    return [*SECTIONS, *registered_sections()]


_BOUNDS = (("gt", "> "), ("ge", ">= "), ("lt", "< "), ("le", "<= "))


def _range(field: object) -> str:
    """`` Range: >= 1, <= 100.`` from the field's numeric constraints ("" when it has none)."""
    parts = []
    for item in getattr(field, "metadata", []):
        for attr, sign in _BOUNDS:
            value = getattr(item, attr, None)
            if value is not None:
                parts.append(f"{sign}{value:g}" if isinstance(value, float) else f"{sign}{value}")
    return f" Range: {', '.join(parts)}." if parts else ""


def render() -> str:
    lines = [HEADER]
    for cls in _sections():
        lines.append(f"\n## {cls.__name__} (`{cls.__module__}`)\n")
        if cls.__doc__:
            lines.append(cls.__doc__.strip().splitlines()[0] + "\n")
        lines.append("| variable | type | default | meaning |")
        lines.append("| --- | --- | --- | --- |")
        for name, field in cls.model_fields.items():
            env = name.upper()
            typ = "list[str]" if field.annotation == list[str] else getattr(field.annotation, "__name__", str(field.annotation))
            typ = typ.replace("|", "\\|")
            default = env_text(field.default)  # a list setting: as the environment spells it
            if default is None:
                shown = "unset"
            elif default == "":
                shown = '""'
            else:
                shown = f"`{default}`"
            desc = ((field.description or "") + _range(field)).replace("|", "\\|")
            lines.append(f"| `{env}` | {typ} | {shown} | {desc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
