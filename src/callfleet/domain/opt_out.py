"""Opt-out detection: did the callee just ask not to be called again?

The phrases live in one data file, `data/opt_out_phrases.txt`, whose header
describes their small pattern language. `opt_out_clause(text)` normalises what the
callee said (case, apostrophes, punctuation, "do not" and "don't" alike), splits
it into clauses at sentence punctuation, and returns the first clause a pattern
matches, unless a veto pattern matches the whole utterance. It is pure and
deterministic: the agent runs it on every finished callee turn, with or without
an LLM (`callfleet.agent.controller`), and the tests measure it on the phone
simulator's persona lines.

`OPT_OUT_LINE` is what the agent says before it hangs up, and `OPT_OUT_REASON`
the do-not-call entry's reason.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources

__all__ = [
    "OPT_OUT_DIGITS",
    "OPT_OUT_LINE",
    "OPT_OUT_REASON",
    "PhraseBook",
    "normalise",
    "opt_out_clause",
    "phrase_book",
]

OPT_OUT_LINE = "Understood — we won't call you again. Goodbye."
"""The agent's one confirmation line before it hangs up."""
OPT_OUT_REASON = "opt-out"
"""The reason written on the do-not-call entry (and the canceled calls' message)."""
OPT_OUT_DIGITS = frozenset("0123456789*#")
"""The keys `opt_out_digit` may name."""

_CLAUSE_BREAK = re.compile(r"[.;!?,:()\[\]\"]|\s[-–—]+\s|[–—]|-{2,}")
_APOSTROPHES = re.compile(r"['’‘`´]")
_NOT_WORD = re.compile(r"[^a-z0-9]+")
_REWRITES = (
    (re.compile(r"\bdo not\b"), "dont"),
    (re.compile(r"\bi am\b"), "im"),
    (re.compile(r"\bwe re\b"), "were"),
    (re.compile(r"\bany more\b"), "anymore"),
)
_POLITE_END = "(?:(?:please|thanks|thank you|ok|okay|now|right now|immediately|for good) )*"
_GROUP = re.compile(r"\(([^()]*)\)|(\S+)")


def normalise(text: str) -> str:
    """Lower case, apostrophes dropped, other non-alphanumerics as single spaces,
    and the spellings the phrase file assumes ("do not" -> "dont", "i am" -> "im")."""
    lowered = _APOSTROPHES.sub("", text.lower())
    words = _NOT_WORD.sub(" ", lowered).strip()
    for pattern, replacement in _REWRITES:
        words = pattern.sub(replacement, words)
    return words


def _compile(pattern: str) -> re.Pattern[str]:
    """One line of the phrase file as a regex over `" " + clause + " "`."""
    start = pattern.startswith("^")
    end = pattern.endswith("$")
    body = pattern.removeprefix("^").removesuffix("$").strip()
    parts: list[str] = []
    for match in _GROUP.finditer(body):
        group, word = match.groups()
        if word == "*":
            parts.append(r"\S+ ")
            continue
        if word is not None:
            parts.append(re.escape(normalise(word)) + " ")
            continue
        choices = [normalise(alt) for alt in group.split("|")]
        parts.append("(?:" + "|".join(re.escape(c) + " " if c else "" for c in choices) + ")")
    regex = ("^ " if start else " ") + "".join(parts)
    if end:
        regex += _POLITE_END + "$"
    return re.compile(regex)


@dataclass(frozen=True)
class PhraseBook:
    """The compiled phrase file: patterns that mean "opt out", and vetoes."""

    patterns: tuple[re.Pattern[str], ...]
    vetoes: tuple[re.Pattern[str], ...]

    @classmethod
    def parse(cls, text: str) -> PhraseBook:
        patterns: list[re.Pattern[str]] = []
        vetoes: list[re.Pattern[str]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("!"):
                vetoes.append(_compile(line[1:].strip()))
            else:
                patterns.append(_compile(line))
        return cls(tuple(patterns), tuple(vetoes))

    def clause(self, text: str) -> str | None:
        """The clause of `text` that asks not to be called again, or None."""
        whole = f" {normalise(text)} "
        if any(veto.search(whole) for veto in self.vetoes):
            return None
        for raw in _CLAUSE_BREAK.split(text):
            clause = normalise(raw)
            if clause and any(p.search(f" {clause} ") for p in self.patterns):
                return raw.strip()
        return None


@functools.cache
def phrase_book() -> PhraseBook:
    """The phrase file shipped with the package, compiled once."""
    text = (
        resources.files("callfleet.domain")
        .joinpath("data/opt_out_phrases.txt")
        .read_text(encoding="utf-8")
    )
    return PhraseBook.parse(text)


def opt_out_clause(text: str) -> str | None:
    """The clause of what the callee said that asks not to be called again, or None."""
    return phrase_book().clause(text)
