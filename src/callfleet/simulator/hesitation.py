"""A person who pauses mid-sentence, as the simulated people say it.

A line like "I'd want to check [0.8] with my wife first" is one sentence with a
0.8 s pause in it. Rendered as separate pieces joined by silence, each piece
ends with the voice's falling, final intonation, as if it were a sentence of its
own ("I'd want to check."). People who pause mid-sentence do not sound like that:
the pitch stays up, the sentence is plainly not over. So the line is synthesised
whole (`voiced`), with a comma where each pause falls. At a comma the voice keeps
the sentence's intonation going and leaves a short gap, and `with_pauses`
stretches that gap to the pause's length.

Finding the gaps:
1. The voiced text's inner punctuation marks (a comma, full stop or question
   mark with words after it) are the places the voice leaves a gap, in order.
2. The audio's inner quiet runs (`MIN_GAP_S` or longer, more than
   `QUIET_DB` under the line's loudest 10 ms) are those gaps.
3. When the two counts agree, the i-th pause goes in the gap of its mark.
   Otherwise (another voice engine, or a gap too short to see), each pause goes
   in the quiet run nearest to where its mark falls in proportion to the text's
   length, or at that point if there is no quiet run at all.
A gap keeps its own quiet at either edge and gets silence in its middle, so the
whole quiet lasts the pause; a gap longer than the pause is left as it is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from callfleet import synth as audio

__all__ = ["MIN_GAP_S", "QUIET_DB", "gaps", "pauses", "shown", "voiced", "with_pauses"]

MIN_GAP_S = 0.1
QUIET_DB = 34.0
_STEP = audio.SAMPLE_RATE // 100  # 10 ms
_MARK = re.compile(r"\s*\[(\d+(?:\.\d+)?)\]\s*")
_CLOSES = ",.?!;:"
_INNER_MARK = re.compile(r"[,.?!;:](?=\s+\S)")


def pauses(line: str) -> list[float]:
    """The pauses written in `line` (`[0.6]`: 0.6 s), in order."""
    return [float(seconds) for seconds in _MARK.findall(line)]


def shown(line: str) -> str:
    """The words of `line` as said, without its pause marks."""
    return _MARK.sub(" ", line).strip()


def voiced(line: str) -> str:
    """What the voice synthesises for `line`: its words in one sentence, with a comma
    at each pause that does not already follow a punctuation mark."""
    return _voicing(line)[0]


def _voicing(line: str) -> tuple[str, list[int]]:
    """`voiced(line)` and, for each pause, the index in it of the mark it falls at."""
    pieces = _MARK.split(line)
    text = pieces[0].strip()
    at: list[int] = []
    for words in pieces[2::2]:
        if text and text[-1] not in _CLOSES:
            text += ","
        at.append(len(text) - 1)
        text = f"{text} {words.strip()}".strip()
    return text, at


def with_pauses(line: str, pcm: bytes) -> bytes:
    """`pcm`, the voice saying `voiced(line)` (16-bit at `audio.SAMPLE_RATE`), with
    each pause of `line` as long as written. A line without pauses is `pcm` as is."""
    wanted = pauses(line)
    if not wanted:
        return pcm
    samples = np.frombuffer(pcm, dtype="<i2")
    text, marks = _voicing(line)
    gaps = _places(text, marks, _quiet_runs(samples), len(samples) // _STEP)
    out: list[npt.NDArray[np.int16]] = []
    at = 0
    for gap, seconds in sorted(zip(gaps, wanted, strict=True), key=lambda pair: pair[0].start):
        middle = (gap.start + gap.end) // 2 * _STEP
        extra = round(seconds * audio.SAMPLE_RATE) - (gap.end - gap.start) * _STEP
        out += [samples[at:middle], np.zeros(max(0, extra), dtype=np.int16)]
        at = middle
    out.append(samples[at:])
    return np.concatenate(out).astype("<i2").tobytes()


def gaps(pcm: bytes) -> list[tuple[float, float]]:
    """The quiet runs inside `pcm` that `with_pauses` sees: (start, length) in s."""
    runs = _quiet_runs(np.frombuffer(pcm, dtype="<i2"))
    return [(run.start / 100, (run.end - run.start) / 100) for run in runs]


@dataclass(frozen=True)
class _Run:
    """A stretch of quiet, in 10 ms steps [start, end)."""

    start: int
    end: int


def _quiet_runs(samples: npt.NDArray[np.int16]) -> list[_Run]:
    """The quiet runs of `MIN_GAP_S` or more with speech on both sides."""
    steps = len(samples) // _STEP
    if steps == 0:
        return []
    frames = samples[: steps * _STEP].astype(np.float64).reshape(steps, _STEP)
    level = np.sqrt((frames**2).mean(axis=1))
    quiet = level < level.max() * 10 ** (-QUIET_DB / 20)
    loud = np.flatnonzero(~quiet)
    if len(loud) == 0:
        return []
    runs, start = [], None
    for i in range(int(loud[0]), int(loud[-1]) + 1):
        if quiet[i] and start is None:
            start = i
        elif not quiet[i] and start is not None:
            if (i - start) * _STEP >= MIN_GAP_S * audio.SAMPLE_RATE:
                runs.append(_Run(start, i))
            start = None
    return runs


def _places(text: str, at: list[int], runs: list[_Run], steps: int) -> list[_Run]:
    """The gap each pause goes in: `at` holds the index in `text` of each pause's
    mark (see the module's steps)."""
    marks = [m.start() for m in _INNER_MARK.finditer(text)]
    if len(runs) == len(marks):
        return [runs[marks.index(mark)] for mark in at]
    places = []
    for mark in at:
        step = round(steps * mark / max(1, len(text)))
        if runs:
            places.append(min(runs, key=lambda run: abs((run.start + run.end) / 2 - step)))
        else:
            places.append(_Run(step, step))
    return places
