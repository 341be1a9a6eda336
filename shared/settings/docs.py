"""Render ``docs/configuration.md`` from the settings classes: ``python -m shared.settings.docs``."""

from __future__ import annotations

import importlib
import sys

from pydantic_settings import BaseSettings

from . import SECTIONS

# Sections that live outside shared/ (the executor's broker settings hold secrets only it reads).
EXTRA_SECTIONS = ("services.executor.settings:BrokerSettings",)

HEADER = """# Configuration

Every setting is read from the environment (case-insensitive), typed and defaulted.
This file is generated from the settings classes: `python -m shared.settings.docs > docs/configuration.md`
(a test fails when it is out of date). Secrets are read only from the environment and never logged.
"""


def _sections() -> list[type[BaseSettings]]:
    out: list[type[BaseSettings]] = list(SECTIONS)
    for spec in EXTRA_SECTIONS:
        mod, _, name = spec.partition(":")
        try:
            out.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            continue
    return out


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
            typ = getattr(field.annotation, "__name__", str(field.annotation)).replace("|", "\\|")
            default = field.default
            if default is None:
                shown = "unset"
            elif default == "":
                shown = '""'
            else:
                shown = f"`{default}`"
            desc = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{env}` | {typ} | {shown} | {desc} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
