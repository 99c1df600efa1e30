"""`run_call(call_id, attempt)`: the one body every engine runs for an admitted call.

Claim first; a delivery that loses the claim returns without dialling. While the
call runs, a heartbeat extends the lease and watches for a hangup request or for
being fenced off (the reaper took the call after a missed lease). A watchdog ends
the call at `max_duration` and abandons the carrier `watchdog_grace_s` later, so
every call reaches a terminal state. The attempt ends in one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

import structlog
from sqlalchemy.engine import Connection

from callfleet.clock import utcnow
from callfleet.config import Settings
from callfleet.dispatch import lifecycle
from callfleet.dispatch.uploads import RecordingUploader
from callfleet.dispatch.writer import GroupWriter
from callfleet.domain.disclosures import DISCLOSURES_PARAM, disclosure_lines
from callfleet.store.batches import expand_stored_call
from callfleet.store.calls import batch_of
from callfleet.store.recordings import mark_stored
from callfleet.store.secrets import SecretBox
from callfleet.telephony.carrier import Carrier, DialRequest, DialResult, Outcome, TrunkTarget

__all__ = ["CallRunner"]

log = structlog.get_logger(__name__)


class _Events:
    def __init__(self, runner: CallRunner, call_id: str) -> None:
        self._runner = runner
        self._call_id = call_id

    async def ringing(self) -> None:
        return None

    async def answered(self) -> None:
        call_id, worker = self._call_id, self._runner.worker_id
        try:
            await self._runner.writer.run(
                lambda conn: lifecycle.mark_answered(conn, call_id, worker, utcnow())
            )
        except Exception:
            # Only the "live" marker is lost; the call goes on and its end (with the
            # answer time from the carrier) is recorded as usual.
            log.warning("could not record the answer; the call goes on", call_id=call_id)


class CallRunner:
    """Runs admitted calls on this process; `live` maps call ids to their requests."""

    def __init__(
        self,
        writer: GroupWriter,
        carrier: Carrier,
        settings: Settings,
        worker_id: str,
        on_slot_freed: Callable[[], None] = lambda: None,
        uploads: RecordingUploader | None = None,
    ) -> None:
        self.writer = writer
        self.uploads = uploads
        self.carrier = carrier
        self.settings = settings
        self.worker_id = worker_id
        self.on_slot_freed = on_slot_freed
        self.live: dict[str, DialRequest] = {}
        self.secrets = SecretBox.from_settings(settings)
        self.user_stopped: set[str] = set()

    def request_hangup(self, call_id: str, *, by_user: bool = True) -> bool:
        request = self.live.get(call_id)
        if request is None:
            return False
        if by_user:
            self.user_stopped.add(call_id)
        request.hangup.set()
        return True

    async def run_call(self, call_id: str, attempt: int) -> None:
        lease = self.settings.lease_s
        worker = self.worker_id

        def do_claim(conn: Connection) -> lifecycle.Claim | None:
            claim = lifecycle.claim(
                conn, call_id, attempt, worker, utcnow(), lease, self.settings.ring_timeout_s
            )
            if claim is None or claim.task:
                return claim
            # A batch call's row holds only its own values; the batch holds the rest once.
            task, params, variables = expand_stored_call(
                conn, batch_of(conn, call_id), claim.task, claim.params, claim.request_data
            )
            return dataclasses.replace(claim, task=task, params=params, request_data=variables)

        try:
            claim = await self.writer.run(do_claim)
        except Exception:
            log.exception("claim failed", call_id=call_id, attempt=attempt)
            return
        if claim is None:
            log.debug("duplicate delivery suppressed", call_id=call_id, attempt=attempt)
            return
        try:
            if claim.blocked_reason is not None:
                result = DialResult(
                    Outcome.CANCELED,
                    error_message=f"Not dialled: {claim.blocked_reason} after the call was queued.",
                )
            else:
                result = await self._place(claim)
            await self._finish(claim, result)
        finally:
            self.on_slot_freed()

    async def _place(self, claim: lifecycle.Claim) -> DialResult:
        params = claim.params
        trunk = None
        if claim.trunk is not None:
            t = claim.trunk
            password = self.secrets.decrypt(t.password_enc) if t.password_enc else None
            trunk = TrunkTarget(t.host, t.port, t.transport, t.username, password, t.from_domain)
        request = DialRequest(
            call_id=claim.call_id,
            trunk=trunk,
            attempt=claim.attempt,
            to_number=claim.to_number,
            from_number=claim.from_number,
            ring_timeout_s=self.settings.ring_timeout_s,
            max_duration_s=claim.max_duration_min * 60.0,
            answered_by_enabled=bool(params.get("answered_by_enabled")),
            record=claim.record,
            # What the agent needs besides the Send Call fields: its instructions,
            # the row's variables, and the call's own identity (for templates).
            params={
                **params,
                "task": claim.task,
                "request_data": claim.request_data,
                "call_id": claim.call_id,
                "to": claim.to_number,
                "from": claim.from_number,
                # The operator's disclosure sentences the call's guard_rails ask for.
                DISCLOSURES_PARAM: disclosure_lines(
                    params.get("guard_rails"),
                    ai_disclosure=self.settings.ai_disclosure,
                    recording_disclosure=self.settings.recording_disclosure,
                ),
            },
        )
        self.live[claim.call_id] = request
        heartbeat = asyncio.create_task(self._heartbeat(request))
        try:
            return await self._with_watchdog(request)
        except Exception as exc:
            log.exception("carrier failed", call_id=claim.call_id)
            return DialResult(Outcome.FAILED, error_message=f"Carrier error: {exc}")
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            self.live.pop(claim.call_id, None)

    async def _with_watchdog(self, request: DialRequest) -> DialResult:
        task = asyncio.create_task(self.carrier.place_call(request, _Events(self, request.call_id)))
        try:
            # The carrier ends the call at max_duration after the answer; this is the
            # backstop: ringing plus max_duration, then a polite hangup, then abandon.
            limit = request.ring_timeout_s + request.max_duration_s
            done, _ = await asyncio.wait({task}, timeout=limit)
            if done:
                return task.result()
            request.hangup.set()
            done, _ = await asyncio.wait({task}, timeout=self.settings.watchdog_grace_s)
            if done:
                return task.result()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            return DialResult(
                Outcome.FAILED,
                error_message="Watchdog: the call did not end within max_duration plus "
                f"{self.settings.watchdog_grace_s:g} s and was abandoned.",
            )
        except asyncio.CancelledError:
            task.cancel()
            raise

    async def _heartbeat(self, request: DialRequest) -> None:
        interval = max(0.05, self.settings.lease_s / 3)
        call_id, worker, lease = request.call_id, self.worker_id, self.settings.lease_s
        while not request.hangup.is_set():
            await asyncio.sleep(interval)
            try:
                wanted = await self.writer.run(
                    lambda conn: lifecycle.heartbeat(conn, call_id, worker, utcnow(), lease)
                )
            except Exception:
                log.warning("heartbeat failed; will retry", call_id=call_id)
                continue
            if wanted is None:
                log.warning("lease lost: hanging up", call_id=call_id)
                request.hangup.set()
            elif wanted:
                self.user_stopped.add(call_id)
                request.hangup.set()

    async def _finish(self, claim: lifecycle.Claim, result: DialResult) -> None:
        stopped = claim.call_id in self.user_stopped
        self.user_stopped.discard(claim.call_id)
        if stopped and result.answered_at is None and result.outcome != Outcome.FAILED:
            result.outcome = Outcome.CANCELED
            result.error_message = result.error_message or "Stopped before it was answered."
        worker = self.worker_id
        postcall = bool(self.settings.llm_base_url)  # summary and analysis need an LLM
        upload = await self._upload(claim, result)

        def end(conn: Connection) -> None:
            if upload is not None and upload[1]:  # stored: say so before the webhook is built
                mark_stored(conn, claim.call_id, upload[0])
            lifecycle.finish(
                conn,
                claim.call_id,
                claim.attempt,
                result,
                utcnow(),
                worker=worker,
                postcall=postcall,
            )

        for delay in (0.0, 0.5, 2.0, 5.0):
            await asyncio.sleep(delay)
            try:
                await self.writer.run(end)
                if upload is not None and upload[1] and self.uploads is not None:
                    await self.uploads.after_commit(upload[0], upload[2])
                return
            except Exception:
                log.exception("finish failed; retrying", call_id=claim.call_id)
        log.error("could not record the end of a call; the reaper will", call_id=claim.call_id)

    async def _upload(
        self, claim: lifecycle.Claim, result: DialResult
    ) -> tuple[str, bool, Path] | None:
        """Upload the attempt's recording before its end (and webhook) is recorded:
        (key, stored now, local file), or None when there is none. The call then
        points at the key, stored or still `uploading` (the outbox retries it)."""
        if not result.recording_path or self.uploads is None:
            return None
        local = Path(result.recording_path)
        if not await asyncio.to_thread(local.is_file):
            return None
        expires = self.uploads.expires_at(
            result.ended_at or utcnow(), claim.params.get("retention_days")
        )
        try:
            key, stored = await self.uploads.before_finish(
                claim.call_id, claim.attempt, local, expires
            )
        except Exception:
            log.exception("could not stage the recording's upload", call_id=claim.call_id)
            return None
        result.recording_path = key
        return key, stored, local
