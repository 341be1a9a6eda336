"""Core settings: Redis, bus, paths, modes, logging, alerts."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, SecretStr, field_validator

from .base import Flag, Section

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

ExecutionMode = Literal["DRY_RUN", "PAPER_SIM", "ALPACA_PAPER", "LIVE"]
EXECUTION_MODES: tuple[str, ...] = get_args(ExecutionMode)


class CoreSettings(Section):
    redis_url: str | None = Field(
        None,
        description="Redis URL. Unset: the `avwap` command starts an embedded Redis "
        "(a private redis-server, else an in-process fakeredis server).",
    )
    artifacts_dir: str = Field("artifacts", description="Root directory of every artifact (candidates, decisions, snapshots, reports).")
    ledger_dir: str = Field("ledger", description="Root directory of the append-only JSONL ledgers.")
    bars_dir: str = Field("bars", description="Root directory of the bar store (daily and 1-minute bars, one file per session).")
    artifacts_fsync: Flag = Field(True, description="fsync every artifact, ledger and bar file (and its directory) before it replaces the old one. Replays set 0: the rename stays atomic (a reader or a killed process never sees a torn file), only a power failure could lose a file, and a replay is rerun.")
    log_level: str = Field("INFO", description="Log level: DEBUG, INFO, WARNING, ERROR.")
    log_format: Literal["console", "json"] = Field("console", description="Log output: human console lines or JSON lines.")
    consumer_name: str | None = Field(None, description="Consumer name in the service's groups (default: hostname-pid).")
    bus_max_payload_bytes: int = Field(
        4 * 1024 * 1024, ge=65_536, le=512 * 1024 * 1024,
        description="Largest `data` field (bytes) a consumer decodes; a longer entry is dead-lettered as "
        "`PAYLOAD_TOO_LARGE` (the DLQ keeps its first 4 KiB, size and sha256).")
    message_date_horizon_days: int = Field(
        0, ge=0, le=3660,
        description="Consumers dead-letter a session-driving message (session event, bars, candidates, decisions, "
        "portfolio snapshot, entry intent) dated more than this many days from now (`DATE_OUT_OF_HORIZON`). 0: off "
        "(replays and tests run past dates); compose sets 7. A date that is not an NYSE session is always refused.")
    bus_maxlen: int = Field(200_000, ge=1000, description="Approximate MAXLEN each stream is trimmed to on publish.")
    bus_keep_sessions: int = Field(20, ge=0, le=100_000, description="Streams keep the entries of the last this many sessions (trimmed after every fifth CLOSE by the executor; never an entry a consumer group has not acked; not the DLQ nor avwap:control); 0: BUS_MAXLEN only.")
    bus_keep_sessions_bars: int = Field(5, ge=0, le=100_000, description="The same for avwap:bars:1d and avwap:bars:1m (the bar store keeps the history); 0: BUS_MAXLEN only.")
    bus_max_deliveries: int = Field(5, ge=1, description="Deliveries after which a failing message goes to the DLQ.")
    bus_block_ms: int = Field(1000, ge=1, description="How long a consumer blocks waiting for new messages.")
    bus_batch: int = Field(100, ge=1, description="Messages read per XREADGROUP call.")
    bus_claim_idle_ms: int = Field(30_000, ge=100, description="Idle time after which a dead consumer's pending entries are claimed.")
    heartbeat_ttl_s: int = Field(30, ge=2, description="TTL of each consumer's heartbeat key (health checks read it).")
    metrics_port: int = Field(0, ge=0, le=65535, description="Port of this process's Prometheus endpoint `/metrics` "
                              "(0: none). Compose sets 9100 in every service (docs/dashboard.md).")
    metrics_addr: str = Field("127.0.0.1", description="Address the metrics endpoint binds (compose: 0.0.0.0, on the "
                              "compose network only; no port is published).")
    # A plain str on purpose: an unknown mode must not stop every service at start-up (a restart
    # loop); the gates fail closed on it instead (risk: MODE_UNKNOWN; the executor refuses to start).
    execution_mode: str = Field("DRY_RUN", description="DRY_RUN, PAPER_SIM, ALPACA_PAPER or LIVE. Any other value "
                                "is not a start-up error: risk refuses every entry (`MODE_UNKNOWN`) and alerts, the "
                                "executor refuses to start.")
    live_trading: Flag = Field(False, description="Must be 1 (with a matching confirmation token) for LIVE entries.")
    live_confirm_token: SecretStr | None = Field(None, description="Operator's live confirmation token; must match the token on file.")
    live_confirm_token_file: str = Field("state/live_confirm_token", description="File holding the expected live confirmation token.")
    run_id: str = Field("", description="Identifier of this run written into artifact provenance (e.g. `live-2019`, "
                        "`replay-2018q4`). Empty: derived from the execution mode and the settings hash, so a rerun "
                        "with the same settings writes the same bytes. Never random, never a clock value.")
    kill_switch: Flag = Field(False, description="Env kill switch: raises an ACTIVE trading state to REDUCING for this service (blocks every new entry; exits unaffected). Also `avwap kill-switch on` / `avwap state reduce`.")
    slack_bot_token: SecretStr | None = Field(None, description="Slack bot token for the notifier; unset: alerts are logged only.")
    slack_app_token: SecretStr | None = Field(None, description="Slack app-level token (`xapp-...`) for the notifier's Socket Mode commands (`/avwap ...`); unset: no commands. Give it to the notifier's container only.")
    slack_channel: str = Field("#avwap", description="Slack channel the notifier posts to.")
    slack_base_url: str = Field("https://slack.com/api/", description="Slack Web API base URL (tests point it at a local stand-in).")

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        if v is not None and v.strip() and not v.strip().startswith(REDIS_SCHEMES):
            raise ValueError("must be a Redis URL: redis://[:PASSWORD@]HOST:PORT/DB (or rediss://, unix://)")
        return v.strip() if v and v.strip() else None

    @property
    def mode_known(self) -> bool:
        """True when ``execution_mode`` is one of ``EXECUTION_MODES``."""
        return self.execution_mode in EXECUTION_MODES
