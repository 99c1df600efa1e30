"""The one `Settings` object: every knob of callfleet, read from `CALLFLEET_*` variables.

Settings are validated at start-up so a typo fails before the first call is placed,
with a message naming the variable. `database_url` accepts the plain URLs people
write (`sqlite:///PATH`, `postgresql://USER@HOST:PORT/DB`); `sqlalchemy_url` turns
them into the driver-qualified form the store uses.
"""

from __future__ import annotations

import ipaddress
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MIN_SECRET_KEY_CHARS", "Settings"]

MIN_SECRET_KEY_CHARS = 32


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

    secret_key: SecretStr | None = None
    """Encrypts trunk passwords at rest. Default: a key kept in the data directory
    (`secret.key`); set it explicitly when several machines share one database. At
    least 32 characters."""

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

    webhook_allow_private: bool = False
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_retry_scale: float = Field(default=1.0, ge=0)
    """Shrinks the retry schedule (tests); 1.0 is the documented schedule."""

    idempotency_ttl_hours: float = Field(default=24.0, gt=0)

    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
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
    deepgram_api_key: SecretStr | None = None
    openai_api_key: SecretStr | None = None
    openai_base_url: str | None = None
    """For the `openai` STT/TTS providers; defaults to the LLM's base URL when set."""
    elevenlabs_api_key: SecretStr | None = None
    cartesia_api_key: SecretStr | None = None

    log_level: str = "info"
    pipecat_log_level: Literal[
        "TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL"
    ] = "WARNING"
    """The level from which pipecat's own log records (a line per frame event at
    DEBUG) reach callfleet's logs."""

    # keys: revocable API keys, webhook secret rotation, idempotency key expiry
    webhook_secret_overlap_hours: float = Field(default=24.0, gt=0)
    """After `POST /v1/webhooks/secret/rotate`, deliveries are signed with the old secret
    as well as the new one for this many hours, so receivers can switch at their pace."""
    idempotency_replay_rejected: bool = False
    """Also store 4xx answers under their `Idempotency-Key` and replay them. Off: a
    rejected request stores nothing, so a corrected retry with the same key goes through."""

    # -- operations hardening: metrics access, the in-call LLM's manners --------------
    metrics_token: SecretStr | None = None
    """Unset: `/metrics` is open and shows no per-account labels. Set: `/metrics`
    needs `Authorization: Bearer <token>` (401 otherwise) and shows live calls per
    account."""
    llm_timeout_s: float = Field(default=10.0, gt=0)
    """How long one in-call LLM request may take; it is retried once, then the agent
    says `llm_fallback_line` and ends the call."""
    llm_fallback_line: str = Field(
        default="Sorry, I'm having trouble right now. Let me call you back later. Goodbye.",
        min_length=1,
    )
    """What the agent says before hanging up when the LLM cannot answer."""

    # --- bounds: what one request may cost (issue 9, "one request can take the server down")
    max_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    """The largest request body accepted, in bytes (default 32 MiB), counted while
    reading (chunked bodies too); a larger one is answered 413."""

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

    @field_validator("secret_key")
    @classmethod
    def _check_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if len(value.get_secret_value()) < MIN_SECRET_KEY_CHARS:
            raise ValueError(
                f"CALLFLEET_SECRET_KEY must be at least {MIN_SECRET_KEY_CHARS} characters "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
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
            "deepgram_api_key": _reveal(self.deepgram_api_key),
            "openai_api_key": _reveal(self.openai_api_key),
            "openai_base_url": self.openai_base_url or self.llm_base_url,
            "elevenlabs_api_key": _reveal(self.elevenlabs_api_key),
            "cartesia_api_key": _reveal(self.cartesia_api_key),
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
    def agent_on_calls(self) -> bool:
        """Whether answered calls get the AI agent: they do over SIP, unless the agent
        is switched off or the simulator runs in its fast mode (time scale 0), where
        nobody on the line speaks. `simulator-nomedia` has no line at all."""
        return self.carrier == "sip" and self.agent_enabled and self.simulator_time_scale > 0

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.startswith("sqlite")

    @property
    def recordings_dir(self) -> Path:
        return self.data_dir / "recordings"

    # -- SIP listener and media bounds (issue 9: media, signalling) ---------------------

    sip_trusted_peers: str = ""
    """Comma-separated addresses or CIDRs whose SIP requests are taken besides the hosts
    callfleet dials (each trunk's address and the simulator are trusted once dialled).
    Requests from anyone else are dropped without an answer. Empty by default."""
    sip_max_transactions: int = Field(default=4096, ge=16, le=1_000_000)
    """Incoming SIP transactions remembered at once (each for 32 s); past it a request
    gets 503 and leaves no state."""
    sip_max_content_length: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest body a SIP message over TCP may announce (bytes); a larger one closes
    the connection."""
    sip_max_tcp_connections: int = Field(default=256, ge=1, le=100_000)
    """Inbound SIP TCP connections at once; one past it is closed at once."""
    sip_tcp_idle_timeout_s: float = Field(default=120.0, gt=0, le=86_400)
    """An inbound SIP TCP connection silent this long is closed (keep-alives count)."""

    @field_validator("sip_trusted_peers")
    @classmethod
    def _check_sip_peers(cls, value: str) -> str:
        for peer in (p.strip() for p in value.split(",")):
            if not peer:
                continue
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError:
                raise ValueError(
                    f"CALLFLEET_SIP_TRUSTED_PEERS: {peer!r} is not an IP address or CIDR "
                    "(write e.g. 203.0.113.7,198.51.100.0/24)"
                ) from None
        return value

    @property
    def sip_trusted_peer_list(self) -> tuple[str, ...]:
        return tuple(p.strip() for p in self.sip_trusted_peers.split(",") if p.strip())

    # -- trunks: where a tenant's SIP trunk may send calls (callfleet.net.trunks)
    trunk_allow_private: bool = False
    """Let tenants' trunks reach loopback, private, IPv6 link-local and carrier-grade NAT
    addresses (a carrier or PBX on the operator's own network). Cloud metadata addresses
    and all of 169.254.0.0/16 stay refused even then."""
    trunk_allow: str = ""
    """Comma-separated CIDRs (`10.1.0.0/16,192.168.5.7/32`) that trunks may reach even
    though they are private; narrower than `trunk_allow_private`. Metadata stays refused."""

    @field_validator("trunk_allow")
    @classmethod
    def _check_trunk_allow(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError as exc:
                raise ValueError(
                    f"CALLFLEET_TRUNK_ALLOW: {part!r} is not a CIDR such as 10.1.0.0/16 ({exc})"
                ) from exc
        return value

    @property
    def trunk_allow_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        """`trunk_allow` parsed."""
        parts = (p.strip() for p in self.trunk_allow.split(","))
        return tuple(ipaddress.ip_network(p, strict=False) for p in parts if p)

    # --- admission: the process-wide live-call cap and the API rate limit ---
    max_live_calls: int | None = Field(default=None, ge=1)
    """Live calls (admitted, dialling or answered) one process carries at most, over
    all accounts. Default: sized from this machine's CPU count by what a call costs
    here (`callfleet.dispatch.limits.default_max_live_calls`): 2 per core with the
    local speech models, 25 per core with hosted STT and TTS, 10,000 without an agent
    on calls; over SIP never more than the RTP range's port pairs (8,191 by default).
    A call over the cap waits in the queue, it is never failed for it. With the
    procrastinate engine each worker caps itself at min(`--concurrency`, this)."""
    api_rate_limit: str = "50/second;2000/minute"
    """Requests per API key, per API process (`N/second;M/minute`, the `limits`
    library's notation); past it a request gets 429 with `Retry-After`. `off`: no
    limit. `/healthz`, `/readyz` and `/metrics` are never limited."""

    # Live progress (Server-Sent Events from the events table, store/events.py)
    events_ttl_hours: float = Field(default=72.0, gt=0)
    """Events older than this are pruned (in bounded deletes, by the reaper); a client
    resuming with an older `Last-Event-ID` gets what is left."""
    events_poll_s: float = Field(default=0.5, gt=0, le=10)
    """How often a stream looks for new events in the database."""
    events_heartbeat_s: float = Field(default=15.0, gt=0)
    """A comment line on an idle stream this often, so proxies keep it open."""
    events_gap_grace_s: float = Field(default=10.0, ge=0)
    """How long a stream waits for an event id taken by a transaction not yet committed
    (PostgreSQL) before taking it as rolled back."""

    # Opt-out and disclosures (domain/opt_out.py, domain/disclosures.py)
    ai_disclosure: str = Field(
        default="Before we start: I'm an AI assistant, calling on behalf of a business.",
        max_length=1000,
    )
    """Said first on a call whose `guard_rails` include `tcpa:ai_disclosure`."""
    recording_disclosure: str = Field(default="This call may be recorded.", max_length=1000)
    """Said first (after the AI disclosure) on a call whose `guard_rails` include
    `recording_disclosure`."""

    @field_validator("api_rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from limits import parse_many

        if value.strip().lower() in ("", "off"):
            return value
        try:
            parse_many(value)
        except ValueError:
            raise ValueError(
                "CALLFLEET_API_RATE_LIMIT must read like '50/second;2000/minute' "
                f"(or 'off'), got {value!r}"
            ) from None
        return value

    # --- storage, retention and erasure (issue 12: callfleet.storage) ---
    storage_url: str | None = None
    """Where call artefacts (recordings) are kept: `file:///PATH` (a local directory)
    or `s3://BUCKET/PREFIX` (any S3-compatible store; endpoint, region and credentials
    from the standard `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
    `AWS_SECRET_ACCESS_KEY`). Default: the data directory. With workers on other
    machines, set an object store: every process must reach the same storage."""
    storage_presign: bool = False
    """With object storage, `GET /v1/calls/{id}/recording` answers 307 to a short-lived
    presigned URL (after the account check) instead of proxying the bytes."""
    storage_presign_ttl_s: int = Field(default=300, ge=10, le=86_400)
    """How long a presigned recording URL stays valid."""
    recording_retention_days: int | None = Field(default=None, ge=1, le=36_500)
    """Recordings older than this many days (from the call's end) are deleted by the
    leader's sweeper; a call's or batch's `retention_days` overrides it. Default: keep."""
    simulator_keep_recordings: bool = False
    """Keep the built-in phone simulator's own WAVs (`DATA_DIR/simulator`) after the
    server stops; by default they live only while it runs."""

    @field_validator("storage_url")
    @classmethod
    def _check_storage_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not (value.startswith("file:///") or value.startswith("s3://")):
            raise ValueError(
                "CALLFLEET_STORAGE_URL must be file:///ABSOLUTE/PATH or s3://BUCKET/PREFIX, "
                f"got {value!r}"
            )
        if value.startswith("s3://") and not value[5:].split("/", 1)[0]:
            raise ValueError("CALLFLEET_STORAGE_URL: s3:// needs a bucket (s3://BUCKET/PREFIX)")
        return value

    @property
    def storage_location(self) -> str:
        """`storage_url`, or the data directory as a `file://` URL."""
        return self.storage_url or f"file://{self.data_dir.resolve()}"

    # --- reach: the callee's hours, frequency caps and caller-ID health (issue 10) ---
    calling_hours: str = "08:00-21:00"
    """The operator's calling hours in the callee's local time (the TCPA's 08:00-21:00
    by default), `HH:MM-HH:MM`, or `off` for a lab. A tenant's `calling_window` is
    intersected with them: it can narrow the hours, never widen them. The fictional
    NANP numbers NPA-555-0100..0199 (the simulator's) are exempt."""
    number_daily_cap: int = Field(default=3, ge=0)
    """A callee's number is dialled at most this many times in any rolling 24 hours
    per account, over every batch and single call; a call over it waits. 0: no cap."""
    caller_id_min_answer_rate: float = Field(default=0.1, ge=0, le=1)
    """A caller ID whose answer rate over its last 7 days falls below this (with at
    least `caller_id_min_sample` attempts) is paused: no new call uses it."""
    caller_id_min_sample: int = Field(default=50, ge=1)
    """Attempts in 7 days a caller ID needs before its answer rate can pause it."""
    caller_id_check_s: float = Field(default=5.0, ge=0)
    """How often the hopper reads a caller ID's answer rate (at most, per number)."""

    @field_validator("calling_hours")
    @classmethod
    def _check_calling_hours(cls, value: str) -> str:
        import re

        text = value.strip().lower()
        match = re.fullmatch(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})", text)
        if text != "off" and (
            match is None
            or int(match[1]) * 60 + int(match[2]) >= int(match[3]) * 60 + int(match[4])
            or int(match[1]) > 23
            or int(match[3]) * 60 + int(match[4]) > 24 * 60
            or int(match[2]) > 59
            or int(match[4]) > 59
        ):
            raise ValueError(
                "CALLFLEET_CALLING_HOURS must read like '08:00-21:00' (start before end, "
                f"24-hour clock) or 'off', got {value!r}"
            )
        return value


def _reveal(secret: SecretStr | None) -> str | None:
    """The secret's text for the one place that sends it (None when unset or empty)."""
    return (secret.get_secret_value() or None) if secret is not None else None
