"""Disclosures: what the agent says before anything else when a call's `guard_rails` ask.

The hosted product's `guard_rails` field lists rules the agent must keep, each a
name or an object naming it (`{"type": "tcpa:ai_disclosure", ...}`). Honoured here:
`tcpa:ai_disclosure` (say that the caller is an AI) and `recording_disclosure`
(also spelled `tcpa:recording_disclosure`: say that the call may be recorded), whose
sentences are the operator's (`CALLFLEET_AI_DISCLOSURE`,
`CALLFLEET_RECORDING_DISCLOSURE`); and `tcpa:opt_out`, which callfleet keeps on every
call anyway (`callfleet.domain.opt_out`). `disclosure_lines` picks the sentences in a
fixed order, and the agent speaks them as its opening words, under the scripted
policy as with an LLM. Any other guard rail is accepted and named in the response's
`warnings` (`domain.capabilities`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "AI_DISCLOSURE",
    "DISCLOSURES_PARAM",
    "KNOWN_GUARD_RAILS",
    "RECORDING_DISCLOSURE",
    "disclosure_lines",
    "guard_rail_names",
]

AI_DISCLOSURE: Final = frozenset({"tcpa:ai_disclosure"})
RECORDING_DISCLOSURE: Final = frozenset({"recording_disclosure", "tcpa:recording_disclosure"})
OPT_OUT: Final = frozenset({"tcpa:opt_out", "opt_out"})
KNOWN_GUARD_RAILS: Final = AI_DISCLOSURE | RECORDING_DISCLOSURE | OPT_OUT
"""The guard rails that have an effect here."""
DISCLOSURES_PARAM: Final = "_disclosures"
"""The key under which the dispatcher hands the agent the sentences to say (the call's
`DialRequest.params`; never a stored field)."""
_NAME_KEYS = ("type", "name", "id", "guard_rail")


def guard_rail_names(guard_rails: object) -> list[str | None]:
    """Each entry's name: a string as it is, an object's `type` (or `name`, `id`); None
    for an entry that names nothing."""
    if not isinstance(guard_rails, list):
        return []
    names: list[str | None] = []
    for entry in guard_rails:
        if isinstance(entry, Mapping):
            entry = next((entry[k] for k in _NAME_KEYS if isinstance(entry.get(k), str)), None)
        names.append(entry.strip().lower() if isinstance(entry, str) else None)
    return names


def disclosure_lines(
    guard_rails: object, *, ai_disclosure: str, recording_disclosure: str
) -> tuple[str, ...]:
    """The sentences a call's `guard_rails` ask for, AI first; none for other values."""
    asked = set(guard_rail_names(guard_rails))
    lines = []
    if asked & AI_DISCLOSURE and ai_disclosure.strip():
        lines.append(ai_disclosure.strip())
    if asked & RECORDING_DISCLOSURE and recording_disclosure.strip():
        lines.append(recording_disclosure.strip())
    return tuple(lines)
