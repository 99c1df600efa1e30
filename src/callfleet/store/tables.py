"""The schema: SQLAlchemy Core tables shared by SQLite and PostgreSQL.

Core, not the ORM: the hot paths (bulk insert of a 100,000-row batch, the hopper's
admission pass, the conditional claim) are single statements, and the API's
response shapes are built from rows, so table models never leak into the API.
Timestamps are stored in UTC through `UTCDateTime`, which hands back aware values
on both databases.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect

__all__ = ["metadata"]


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store; use datetime.now(UTC)")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # pragma: no cover - pysqlite returns datetime
            value = datetime.fromisoformat(value)
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _id() -> sa.Column[str]:
    return sa.Column("id", sa.String(36), primary_key=True)


def _account() -> sa.Column[str]:
    return sa.Column(
        "account_id", sa.String(36), sa.ForeignKey("accounts.id"), nullable=False, index=True
    )


def _created() -> sa.Column[datetime]:
    return sa.Column("created_at", UTCDateTime(), nullable=False)


accounts = sa.Table(
    "accounts",
    metadata,
    _id(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("webhook_secret", sa.String(100), nullable=False),
    sa.Column("concurrency_cap", sa.Integer, nullable=True),
    _created(),
    # After a rotation deliveries are signed with this one too, until it expires.
    sa.Column("previous_webhook_secret", sa.String(100), nullable=True),
    sa.Column("previous_webhook_secret_expires_at", UTCDateTime(), nullable=True),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    _id(),
    _account(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    _created(),
    sa.Column("revoked_at", UTCDateTime(), nullable=True),
    # Written at most once a minute per key (see store.accounts.LAST_USED_EVERY).
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
)

trunks = sa.Table(
    "trunks",
    metadata,
    _id(),
    _account(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("port", sa.Integer, nullable=False),
    sa.Column("transport", sa.String(8), nullable=False),
    sa.Column("username", sa.String(255), nullable=True),
    sa.Column("password_enc", sa.Text, nullable=True),  # Fernet token, never the password
    sa.Column("from_domain", sa.String(255), nullable=True),
    sa.Column("cps", sa.Float, nullable=False),
    sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
    _created(),
    sa.UniqueConstraint("account_id", "name"),
)

numbers = sa.Table(
    "numbers",
    metadata,
    _id(),
    _account(),
    sa.Column("phone_number", sa.String(20), nullable=False),
    sa.Column("label", sa.String(200), nullable=True),
    sa.Column("cps", sa.Float, nullable=True),
    sa.Column("trunk_id", sa.String(36), sa.ForeignKey("trunks.id"), nullable=True),
    _created(),
    sa.UniqueConstraint("account_id", "phone_number"),
    # Caller-ID health (store/numbers.py): the pool a `from` of "pool:NAME" picks from,
    # when (and why) the number was paused, where its `number.paused` event goes, when
    # a call last went out from it, and since when its 7-day figures count (a resume
    # starts them afresh).
    sa.Column("pool", sa.String(15), nullable=True),
    sa.Column("paused_at", UTCDateTime(), nullable=True),
    sa.Column("paused_reason", sa.Text, nullable=True),
    sa.Column("webhook", sa.String(2048), nullable=True),
    sa.Column("last_used_at", UTCDateTime(), nullable=True),
    sa.Column("health_from", UTCDateTime(), nullable=True),
    sa.Index(None, "account_id", "pool"),
)

campaigns = sa.Table(
    "campaigns",
    metadata,
    _account(),
    sa.Column("campaign_id", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default="active"),
    _created(),
    sa.PrimaryKeyConstraint("account_id", "campaign_id"),
)

batches = sa.Table(
    "batches",
    metadata,
    _id(),
    _account(),
    sa.Column("campaign_id", sa.String(200), nullable=True),
    sa.Column("label", sa.String(500), nullable=True),
    sa.Column("base_prompt", sa.Text, nullable=False),
    sa.Column("call_params", JSONType, nullable=False),
    sa.Column("endpoint_code", sa.String(20), nullable=False, server_default="api"),
    sa.Column("status", sa.String(20), nullable=False),  # running | paused | stopped | completed
    sa.Column("test_mode", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("batch_webhook", sa.String(2048), nullable=True),
    sa.Column("total_calls", sa.Integer, nullable=False),
    sa.Column("remaining", sa.Integer, nullable=False),
    _created(),
    sa.Column("stopped_at", UTCDateTime(), nullable=True),
    sa.Column("completed_at", UTCDateTime(), nullable=True),
    # The names of the rows' own columns (request_data keys) in input order, for the
    # export: PostgreSQL's JSONB does not keep an object's key order. NULL: none yet.
    sa.Column("row_columns", JSONType, nullable=True),
    # A rehearsal (`"rehearsal": true`): its calls dial the phone simulator's personas
    # in place of the batch's first rows, never through a trunk.
    sa.Column("rehearsal", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Index(None, "account_id", "created_at"),
    sa.Index(None, "account_id", "campaign_id"),
)

# A call's `state` drives dispatch; `queue_status` and `status` are what the API shows.
# queued -> admitted -> dialing -> live -> ended; a retry goes from dialing/live back to
# queued with attempt + 1.
calls = sa.Table(
    "calls",
    metadata,
    _id(),
    _account(),
    sa.Column("batch_id", sa.String(36), sa.ForeignKey("batches.id"), nullable=True),
    sa.Column("seq", sa.Integer, nullable=False, server_default="0"),
    sa.Column("to_number", sa.String(20), nullable=False),
    sa.Column("from_number", sa.String(20), nullable=True),
    sa.Column("callee_tz", sa.String(64), nullable=True),
    sa.Column("task", sa.Text, nullable=False),
    sa.Column("params", JSONType, nullable=False),
    sa.Column("request_data", JSONType, nullable=False),
    sa.Column("metadata", JSONType, nullable=True),
    sa.Column("webhook", sa.String(2048), nullable=True),
    sa.Column("state", sa.String(12), nullable=False),
    sa.Column("queue_status", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=True),
    sa.Column("answered_by", sa.String(12), nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    sa.Column("attempt", sa.Integer, nullable=False, server_default="1"),
    sa.Column("attempts_allowed", sa.Integer, nullable=False, server_default="1"),
    # Retries the network asked for (503): they do not use up an attempt, but are capped.
    sa.Column("network_retries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("retry", JSONType, nullable=True),
    sa.Column("window", JSONType, nullable=True),
    sa.Column("max_duration", sa.Float, nullable=False),
    sa.Column("record", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("not_before", UTCDateTime(), nullable=False),
    _created(),
    sa.Column("admitted_at", UTCDateTime(), nullable=True),
    sa.Column("started_at", UTCDateTime(), nullable=True),
    sa.Column("answered_at", UTCDateTime(), nullable=True),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("deadline_at", UTCDateTime(), nullable=True),
    sa.Column("call_length", sa.Float, nullable=True),
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("hangup_requested", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("endpoint_url", sa.String(200), nullable=True),
    sa.Column("recording_path", sa.String(500), nullable=True),
    sa.Column("summary", sa.Text, nullable=True),
    sa.Column("analysis", JSONType, nullable=True),
    sa.Column("call_ended_by", sa.String(12), nullable=True),
    sa.Column("disposition_tag", sa.String(100), nullable=True),
    # The agent: which model ran the call ("scripted" without an LLM), its measured
    # voice-to-voice latency ({"samples_ms": [...], "p50": ms, "p95": ms}), and the
    # post-call work (summary, analysis, disposition): NULL none, "pending", "done",
    # "failed".
    sa.Column("model", sa.String(100), nullable=True),
    sa.Column("latency", JSONType, nullable=True),
    sa.Column("postcall_state", sa.String(12), nullable=True),
    # A rehearsal call: the row it stood in for ({"index", "phone_number", "persona",
    # "dialled"}); NULL for every real call. Dispatch routes such a call to the
    # built-in simulator whatever trunks the account has.
    sa.Column("rehearsal_of", JSONType, nullable=True),
    # The recording's life (store/recordings.py): null (none), uploading, stored,
    # deleted, expired, erased, lost; when the sweeper deletes it; when it went.
    sa.Column("recording_state", sa.String(12), nullable=True),
    sa.Column("recording_expires_at", UTCDateTime(), nullable=True),
    sa.Column("recording_removed_at", UTCDateTime(), nullable=True),
    # The callee asked on this call not to be called again (or its post-call
    # disposition was DO_NOT_CONTACT): the number went on the account's DNC with it.
    sa.Column("opted_out", sa.Boolean, nullable=False, server_default=sa.false()),
    # Why a queued call is held past its window (the daily cap on its number, say).
    sa.Column("waiting_reason", sa.Text, nullable=True),
    sa.Index(None, "account_id", "state", "not_before"),
    sa.Index(None, "account_id", "to_number"),
    sa.Index(None, "recording_state", "recording_expires_at"),
    sa.Index(None, "batch_id", "seq"),
    sa.Index(None, "account_id", "created_at"),
    sa.Index(None, "state", "lease_until"),
    # Caller-ID health counts a number's dials (the daily cap a callee's: the index
    # on account_id, to_number above).
    sa.Index(None, "account_id", "from_number", "admitted_at"),
)

call_attempts = sa.Table(
    "call_attempts",
    metadata,
    sa.Column("call_id", sa.String(36), sa.ForeignKey("calls.id"), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("worker", sa.String(64), nullable=False),
    sa.Column("started_at", UTCDateTime(), nullable=False),
    sa.Column("ended_at", UTCDateTime(), nullable=True),
    sa.Column("status", sa.String(20), nullable=True),
    sa.Column("sip_code", sa.Integer, nullable=True),
    sa.Column("error_message", sa.Text, nullable=True),
    # The primary key is the last line of defence against dialling one attempt twice.
    sa.PrimaryKeyConstraint("call_id", "attempt"),
)

transcript_turns = sa.Table(
    "transcript_turns",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("call_id", sa.String(36), sa.ForeignKey("calls.id"), nullable=False, index=True),
    sa.Column("user", sa.String(20), nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    _created(),
)

dnc = sa.Table(
    "dnc",
    metadata,
    _account(),
    sa.Column("phone_number", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("source", sa.String(20), nullable=False),
    _created(),
    # The call on which the callee opted out (source `call` or `disposition`).
    sa.Column("call_id", sa.String(36), nullable=True),
    sa.PrimaryKeyConstraint("account_id", "phone_number"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    _account(),
    sa.Column("key", sa.String(255), nullable=False),
    sa.Column("method_path", sa.String(300), nullable=False),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("state", sa.String(12), nullable=False),  # in_flight | done
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("response", JSONType, nullable=True),
    _created(),
    sa.Column("locked_until", UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint("account_id", "key"),
    # Expired keys are swept oldest first (store.idempotency_keys.sweep).
    sa.Index(None, "created_at"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    _id(),
    _account(),
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("url", sa.String(2048), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    sa.Column("call_id", sa.String(36), nullable=True, index=True),
    sa.Column("batch_id", sa.String(36), nullable=True, index=True),
    sa.Column("state", sa.String(12), nullable=False),  # pending | delivered | failed
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("last_status_code", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    _created(),
    sa.Column("delivered_at", UTCDateTime(), nullable=True),
    sa.Index(None, "state", "next_attempt_at"),
)

# Live progress (store/events.py): one row per call or batch event, written in the
# transaction of the state change it reports; its id is the stream's `id:`.
EventId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", EventId, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.String(36), nullable=False),
    sa.Column("batch_id", sa.String(36), nullable=True),
    sa.Column("call_id", sa.String(36), nullable=True),
    sa.Column("kind", sa.String(24), nullable=False),
    sa.Column("payload", JSONType, nullable=False),
    _created(),
    sa.Index(None, "account_id", "id"),
    sa.Index(None, "batch_id", "id"),
    sa.Index(None, "created_at"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "delivery_id",
        sa.String(36),
        sa.ForeignKey("webhook_deliveries.id"),
        nullable=False,
        index=True,
    ),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_ms", sa.Integer, nullable=False),
)

call_analyses = sa.Table(
    "call_analyses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    _account(),
    sa.Column("call_id", sa.String(36), sa.ForeignKey("calls.id"), nullable=False, index=True),
    sa.Column("batch_id", sa.String(36), nullable=True, index=True),
    sa.Column("goal", sa.Text, nullable=True),
    sa.Column("questions", JSONType, nullable=False),
    sa.Column("answers", JSONType, nullable=False),
    _created(),
)


recording_uploads = sa.Table(
    # The durable record of a recording still on the disk of the machine that carried
    # the call (`node`): written before the upload, deleted in the transaction that
    # records it done (dispatch/uploads.py retries what is left).
    "recording_uploads",
    metadata,
    sa.Column("key", sa.String(400), primary_key=True),
    sa.Column("call_id", sa.String(36), sa.ForeignKey("calls.id"), nullable=False, index=True),
    sa.Column("node", sa.String(64), nullable=False),
    sa.Column("local_path", sa.String(1000), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    _created(),
    sa.Index(None, "node", "next_attempt_at"),
)

erasures = sa.Table(
    # The audit of `POST /v1/erasure`: who asked (the API key's id), when, for which
    # number (hashed, never in clear) and how much was erased.
    "erasures",
    metadata,
    _id(),
    _account(),
    sa.Column("key_id", sa.String(36), nullable=True),
    sa.Column("number_hash", sa.String(64), nullable=False),
    sa.Column("calls", sa.Integer, nullable=False),
    sa.Column("recordings", sa.Integer, nullable=False),
    sa.Column("transcript_turns", sa.Integer, nullable=False),
    sa.Column("analyses", sa.Integer, nullable=False),
    _created(),
    sa.Index(None, "account_id", "created_at"),
)
