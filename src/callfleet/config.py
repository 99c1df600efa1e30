"""The one `Settings` object: every knob of callfleet, read from `CALLFLEET_*` variables.

Settings are validated at start-up so a typo fails before the first call is placed,
with a message naming the variable. `database_url` accepts the plain URLs people
write (`sqlite:///PATH`, `postgresql://USER@HOST:PORT/DB`); `sqlalchemy_url` turns
them into the driver-qualified form the store uses.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("callfleet", appauthor=False))


class Settings(BaseSettings):
    """Configuration of one callfleet process. See the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="CALLFLEET_", extra="ignore", frozen=True)

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    """Default: SQLite in the data directory."""

    engine: Literal["inprocess", "procrastinate"] = "inprocess"
    """`inprocess`: calls run as tasks of the API process (the embedded default).
    `procrastinate` (PostgreSQL only): calls run on `callfleet worker` processes."""
    carrier: Literal["sip", "simulator-nomedia"] = "sip"
    """`sip`: calls go out over SIP through the account's trunk, or to the built-in SIP
    phone simulator when the account has none. `simulator-nomedia`: the simulator's
    outcome rules without SIP or audio (load tests of the dispatcher)."""

    sip_bind_host: str = "127.0.0.1"
    """Where our SIP client and RTP listen; 0.0.0.0 to reach a trunk on another host."""
    sip_advertised_host: str | None = None
    """The address the trunk reaches us at (Via, Contact, SDP); default sip_bind_host."""
    rtp_port_min: int = Field(default=16384, ge=1024, le=65535)
    rtp_port_max: int = Field(default=32766, ge=1024, le=65535)

    secret_key: str | None = None
    """Encrypts trunk passwords at rest. Default: a key kept in the data directory
    (`secret.key`); set it explicitly when several machines share one database."""

    max_batch_rows: int = Field(default=100_000, ge=1)
    account_concurrency: int = Field(default=10, ge=1)
    """Concurrent calls per account unless the account sets its own cap."""
    default_cps: float = Field(default=1.0, gt=0)
    """Calls per second per caller ID (per trunk once trunks exist)."""

    hopper_interval_s: float = Field(default=0.2, gt=0)
    lease_s: float = Field(default=30.0, gt=0)
    """How long a call's lease lasts without a heartbeat before the reaper takes it."""
    watchdog_grace_s: float = Field(default=60.0, ge=0)
    ring_timeout_s: float = Field(default=30.0, gt=0)

    worker_concurrency: int = Field(default=100, ge=1)
    """Live calls one `callfleet worker` process carries at most (`--concurrency`)."""
    worker_shutdown_deadline_s: float = Field(default=30.0, ge=0)
    """On SIGTERM a worker takes no new call and lets live ones go on this long, then
    hangs them up."""
    worker_stalled_s: float = Field(default=10.0, gt=0)
    """A worker silent this long is presumed dead: the leader re-queues its jobs."""
    leader_interval_s: float = Field(default=0.5, gt=0)
    """How often the hopper's leader checks its lock (and followers try to take it)."""

    simulator_time_scale: float = Field(default=1.0, ge=0)
    """1.0 = realistic ring and talk durations; 0 = instant outcomes (load tests)."""
    simulator_dial_log: Path | None = None
    """Tests: a `callfleet worker` appends one line per dial (and per end) to this file,
    a record of what reached the carrier that is independent of the database."""

    webhook_allow_private: bool = False
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_retry_scale: float = Field(default=1.0, ge=0)
    """Shrinks the retry schedule (tests); 1.0 is the documented schedule."""

    idempotency_ttl_hours: float = Field(default=24.0, gt=0)

    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str | None = None

    agent_enabled: bool = True
    """Run the AI agent on answered SIP calls. Off: the line carries silence (load
    tests against the simulator's fast mode, where nobody speaks)."""
    stt_provider: str = "whisper-local"
    """`whisper-local` (offline, default), `deepgram`, `openai`."""
    tts_provider: str = "piper-local"
    """`piper-local` (offline, default; falls back to `espeak`), `espeak`, `elevenlabs`,
    `cartesia`, `openai`."""
    whisper_threads: int = Field(default=2, ge=1)
    piper_processes: int = Field(default=2, ge=1, le=16)
    """Piper voices running side by side (each ~100 MB): calls whose turns end
    together are voiced in parallel."""
    tts_voice: str | None = None
    """Default voice of a hosted TTS provider (a call's `voice` overrides it)."""
    stt_model: str | None = None
    tts_model: str | None = None
    """Model names for hosted STT/TTS providers (each has a sensible default)."""
    deepgram_api_key: str | None = None
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    """For the `openai` STT/TTS providers; defaults to the LLM's base URL when set."""
    elevenlabs_api_key: str | None = None
    cartesia_api_key: str | None = None

    log_level: str = "info"

    @field_validator("database_url")
    @classmethod
    def _check_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        ok = ("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")
        if not value.startswith(ok):
            raise ValueError(
                "CALLFLEET_DATABASE_URL must start with sqlite:/// or postgresql://, "
                f"got {value.split(':', 1)[0]!r}"
            )
        return value

    @field_validator("stt_provider")
    @classmethod
    def _check_stt(cls, value: str) -> str:
        known = ("whisper-local", "deepgram", "openai")
        if value not in known:
            raise ValueError(f"CALLFLEET_STT_PROVIDER must be one of {', '.join(known)}")
        return value

    @field_validator("tts_provider")
    @classmethod
    def _check_tts(cls, value: str) -> str:
        known = ("piper-local", "espeak", "openai", "elevenlabs", "cartesia")
        if value not in known:
            raise ValueError(f"CALLFLEET_TTS_PROVIDER must be one of {', '.join(known)}")
        return value

    @property
    def speech_provider_extra(self) -> dict[str, Any]:
        """What the hosted speech providers read (`callfleet.agent.providers.hosted`)."""
        return {
            "deepgram_api_key": self.deepgram_api_key,
            "openai_api_key": self.openai_api_key,
            "openai_base_url": self.openai_base_url or self.llm_base_url,
            "elevenlabs_api_key": self.elevenlabs_api_key,
            "cartesia_api_key": self.cartesia_api_key,
            "tts_voice": self.tts_voice,
            "stt_model": self.stt_model,
            "tts_model": self.tts_model,
            "piper_processes": self.piper_processes,
        }

    @field_validator("engine")
    @classmethod
    def _check_engine(cls, value: str, info: ValidationInfo) -> str:
        url = info.data.get("database_url")
        if value == "procrastinate" and not (url and url.startswith("postgres")):
            raise ValueError(
                "the procrastinate engine needs PostgreSQL: set CALLFLEET_DATABASE_URL="
                "postgresql://USER@HOST:PORT/DB (SQLite runs the in-process engine only)"
            )
        return value

    @cached_property
    def sqlalchemy_url(self) -> str:
        """The database URL with our chosen driver (pysqlite, psycopg 3)."""
        url = self.database_url or f"sqlite:///{self.data_dir / 'callfleet.db'}"
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"
