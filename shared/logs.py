"""Logging setup (structlog over stdlib) with secret redaction."""

from __future__ import annotations

import logging
import os
import re
import sys

import structlog

_SECRET_ENV = re.compile(r"(KEY|SECRET|TOKEN|PASSWORD)", re.I)


_URL_PASSWORD = re.compile(r"^[a-z][a-z0-9+.-]*://[^:/@]*:([^@]+)@", re.I)


def secret_values() -> list[str]:
    """Values of secret-named variables, and the password of any URL in the environment (REDIS_URL)."""
    out = [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 6]
    for v in os.environ.values():
        m = _URL_PASSWORD.match(v)
        if m and len(m.group(1)) >= 3:
            out.append(m.group(1))
    return sorted(set(out), key=len, reverse=True)


def redact(text: str, secrets: list[str] | None = None) -> str:
    """Replace any secret value from the environment by ``***`` (``secrets``: ``secret_values()`` when the
    caller redacts several texts at once)."""
    for value in secret_values() if secrets is None else secrets:
        text = text.replace(value, "***")
    return text


class _RedactFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg)
        if clean != msg:
            record.msg, record.args = clean, None
        return True


def _redact_processor(_logger: object, _name: str, event_dict: dict[str, object]) -> dict[str, object]:
    return {k: redact(v) if isinstance(v, str) else v for k, v in event_dict.items()}


def setup_logging(level: str = "INFO", fmt: str = "console", service: str = "avwap") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RedactFilter())
    handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    renderer = structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_processor,
            renderer,
        ],
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> structlog.typing.FilteringBoundLogger:
    return structlog.get_logger(name)
