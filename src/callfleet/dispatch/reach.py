"""The callee's hours, the daily cap and caller-ID health, as the hopper applies them.

`ReachPolicy` is the operator's settings plus what must outlive one admission pass
(when each caller ID's health was last read). `PassReach` answers the hopper's
questions about one due call within one pass, against one snapshot:

- hours: the call's window, intersected with `CALLFLEET_CALLING_HOURS` and read in
  every zone the callee may be in (`domain.windows.rules_for_call`);
- the daily cap: how many times the callee's number was dialled for the account
  in the last 24 hours, counted from the database (`call_attempts`, plus calls
  admitted and not yet dialling; attempts the network failed before ringing do
  not count) once per account per pass, plus the calls this pass admits. Only
  the hopper's leader admits, in one transaction, so the count
  holds with any number of workers and across a crash;
- caller-ID health: before a number is used, its 7-day answer rate (read at most
  every `health_every_s` per number); a number below the floor over enough attempts
  is paused in this transaction, with its `number.paused` webhook in the outbox.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from callfleet.config import Settings
from callfleet.dispatch.routing import Routes
from callfleet.domain.phones import is_fictional_number, timezones_for_number
from callfleet.domain.states import CallState, Outcome
from callfleet.domain.windows import (
    DEFAULT_WINDOW,
    CallingWindow,
    Rule,
    all_open,
    callee_rules,
    next_open_all,
    parse_calling_hours,
    parse_window,
)
from callfleet.store import numbers as number_store
from callfleet.store.tables import call_attempts, calls
from callfleet.webhooks.outbox import enqueue_delivery

__all__ = ["PassReach", "ReachPolicy"]

DAY = timedelta(hours=24)
PAUSED_RECHECK = timedelta(seconds=30)
"""A call held by a paused caller ID looks again this often (a resume frees it)."""


@dataclass
class ReachPolicy:
    """The operator's rules; `off()` keeps none (the hopper's callers that predate them)."""

    floor: CallingWindow | None
    daily_cap: int
    min_answer_rate: float
    min_sample: int
    health_every_s: float = 5.0
    checked: dict[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> ReachPolicy:
        return cls(
            floor=parse_calling_hours(settings.calling_hours),
            daily_cap=settings.number_daily_cap,
            min_answer_rate=settings.caller_id_min_answer_rate,
            min_sample=settings.caller_id_min_sample,
            health_every_s=settings.caller_id_check_s,
        )

    @classmethod
    def off(cls) -> ReachPolicy:
        return cls(floor=None, daily_cap=0, min_answer_rate=0.0, min_sample=1)

    def health_due(self, key: tuple[str, str], mono: float) -> bool:
        last = self.checked.get(key)
        if last is not None and mono - last < self.health_every_s:
            return False
        self.checked[key] = mono
        return True


@dataclass
class PassReach:
    """One pass's view: the snapshot, the dials counted so far, what was paused."""

    policy: ReachPolicy
    routes: Routes
    now: datetime
    dials: dict[tuple[str, str], list[datetime]] = field(default_factory=dict)
    _rules: dict[tuple[str, tuple[str, ...], bool], tuple[Rule, ...]] = field(default_factory=dict)
    _open: dict[tuple[Rule, ...], bool] = field(default_factory=dict)
    _next: dict[tuple[Rule, ...], datetime] = field(default_factory=dict)

    def rules(self, row: Any) -> tuple[Rule, ...]:
        """The rules the due call `row` must meet to be dialled now.

        Most due calls share a window and a few zones: each combination is worked
        out once a pass."""
        zones = (row.callee_tz,) if row.callee_tz else timezones_for_number(row.to_number)
        key = (repr(row.window), zones, is_fictional_number(row.to_number))
        rules = self._rules.get(key)
        if rules is None:
            window = parse_window(row.window, "calling_window") if row.window else DEFAULT_WINDOW
            floor = None if key[2] else self.policy.floor
            # Only calls queued before the API required a known zone have none; they
            # keep the old reading (UTC) rather than wait forever.
            rules = self._rules[key] = callee_rules(window, zones or ("UTC",), floor)
        return rules

    def is_open(self, rules: tuple[Rule, ...]) -> bool:
        """`all_open(rules, now)`, once a pass per set of rules."""
        found = self._open.get(rules)
        if found is None:
            found = self._open[rules] = all_open(rules, self.now)
        return found

    def next_open(self, rules: tuple[Rule, ...]) -> datetime:
        # Rules that never meet were refused at submission; a day later, look again.
        found = self._next.get(rules)
        if found is None:
            found = self._next[rules] = next_open_all(rules, self.now) or self.now + DAY
        return found

    def count_dials(self, conn: Connection, account_id: str, rows: list[Any]) -> None:
        """Read the last 24 hours' dials of the account's due callees (one query)."""
        if self.policy.daily_cap <= 0 or not rows:
            return
        callees = sorted({row.to_number for row in rows})
        since = self.now - DAY
        attempted = (
            sa.select(calls.c.to_number, call_attempts.c.started_at.label("at"))
            .join(calls, calls.c.id == call_attempts.c.call_id)
            .where(
                calls.c.account_id == account_id,
                calls.c.to_number.in_(callees),
                calls.c.rehearsal_of.is_(None),
                call_attempts.c.started_at > since,
                # The network failed these before the callee's phone rang (a 503, an
                # unreachable number): they are not calls the callee received.
                sa.or_(call_attempts.c.status.is_(None), call_attempts.c.status != Outcome.FAILED),
            )
        )
        admitted = sa.select(calls.c.to_number, calls.c.admitted_at.label("at")).where(
            calls.c.account_id == account_id,
            calls.c.to_number.in_(callees),
            calls.c.rehearsal_of.is_(None),
            calls.c.state == CallState.ADMITTED,
            calls.c.admitted_at > since,
        )
        for to_number, at in conn.execute(sa.union_all(attempted, admitted)):
            self.dials.setdefault((account_id, to_number), []).append(at)

    def capped_until(self, account_id: str, to_number: str) -> datetime | None:
        """When `to_number` may be dialled again, if the daily cap holds it now."""
        cap = self.policy.daily_cap
        dials = sorted(self.dials.get((account_id, to_number), []))
        if cap <= 0 or len(dials) < cap:
            return None
        return dials[len(dials) - cap] + DAY

    def record_dial(self, account_id: str, to_number: str, from_number: str | None) -> None:
        self.dials.setdefault((account_id, to_number), []).append(self.now)
        if from_number is not None:
            self.routes.last_used[(account_id, from_number)] = self.now

    def paused(self, conn: Connection, account_id: str, number: str) -> bool:
        """True if `number` is paused, pausing it now if its answer rate calls for it."""
        key = (account_id, number)
        if key in self.routes.paused:
            return True
        if key not in self.routes.last_used or not self.policy.health_due(key, time.monotonic()):
            return False  # not an owned number (no health kept), or read a moment ago
        since = self.now - timedelta(days=number_store.HEALTH_DAYS)
        start = self.routes.health_from.get(key)
        total, answered = number_store.answer_counts(
            conn, account_id, number, max(since, start) if start else since
        )
        if total < self.policy.min_sample or answered / total >= self.policy.min_answer_rate:
            return False
        reason = (
            f"answer rate {answered / total:.0%} over its last {total} attempts is below "
            f"{self.policy.min_answer_rate:.0%} (CALLFLEET_CALLER_ID_MIN_ANSWER_RATE); carriers "
            "may be labelling it as spam"
        )
        if number_store.pause_number(conn, account_id, number, reason, self.now):
            _announce_pause(conn, account_id, number, reason, (total, answered), self.now)
        self.routes.paused.add(key)
        return True


def _announce_pause(
    conn: Connection,
    account_id: str,
    number: str,
    reason: str,
    counts: tuple[int, int],
    now: datetime,
) -> None:
    """The `number.paused` webhook, in the transaction that paused the number."""
    url = number_store.pause_webhook(conn, account_id, number)
    if url is None:
        return
    total, answered = counts
    enqueue_delivery(
        conn,
        account_id=account_id,
        event="number.paused",
        url=url,
        payload={
            "event": "number.paused",
            "phone_number": number,
            "paused_at": now.isoformat(),
            "reason": reason,
            "attempts": total,
            "answered": answered,
            "resume": f"POST /v1/numbers/{number}/resume",
        },
        call_id=None,
        batch_id=None,
        now=now,
    )
