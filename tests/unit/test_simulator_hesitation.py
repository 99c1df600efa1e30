"""`callfleet.simulator.hesitation`: a line with pauses in it is voiced as one
sentence, and each pause is put in the gap the voice left at its comma, stretched to
the pause's length. The audio here is tones with gaps, so each gap's place is known."""

from __future__ import annotations

import numpy as np
import pytest

from callfleet import synth as audio
from callfleet.simulator.hesitation import pauses, shown, voiced, with_pauses

RATE = audio.SAMPLE_RATE


def speech(*parts: float) -> bytes:
    """Alternating sound and quiet, lengths in seconds: (sound, quiet, sound, ...)."""
    pcm = b""
    for i, seconds in enumerate(parts):
        pcm += audio.tone(300.0, seconds) if i % 2 == 0 else audio.silence(seconds)
    return pcm


def quiet_runs(pcm: bytes) -> list[tuple[float, float]]:
    """(start, length) of each inner stretch of digital silence, in seconds."""
    x = np.frombuffer(pcm, dtype="<i2")
    quiet = np.abs(x) < 50
    runs, start = [], None
    loud = np.flatnonzero(~quiet)
    for i in range(int(loud[0]), int(loud[-1]) + 1):
        if quiet[i] and start is None:
            start = i
        elif not quiet[i] and start is not None:
            if i - start > RATE // 50:  # not a tone's zero crossing
                runs.append((round(start / RATE, 2), round((i - start) / RATE, 2)))
            start = None
    return runs


def test_a_line_s_marks_are_read_and_voiced_as_commas() -> None:
    line = "Yes, [0.5] that's me, and [0.6] what is this about?"
    assert pauses(line) == [0.5, 0.6]
    assert shown(line) == "Yes, that's me, and what is this about?"
    # a pause after a word gets a comma; one after a punctuation mark keeps it
    assert voiced(line) == "Yes, that's me, and, what is this about?"
    assert voiced("Hmm, let me think. [0.6] Maybe the [0.5] cheaper one.") == (
        "Hmm, let me think. Maybe the, cheaper one."
    )
    assert voiced("No pauses here.") == "No pauses here." == shown("No pauses here.")
    assert pauses("No pauses here.") == []


def test_each_pause_goes_in_the_gap_of_its_comma() -> None:
    # "Yes, that's me, and, what is this about?": three inner marks, three gaps
    pcm = speech(0.3, 0.3, 0.6, 0.24, 0.3, 0.36, 0.9)
    out = with_pauses("Yes, [0.5] that's me, and [0.6] what is this about?", pcm)
    # the first and last gaps are the pauses, as long as written; the middle one
    # (the comma after "me", no pause there) is untouched
    assert quiet_runs(out) == [(0.3, 0.5), (1.4, 0.24), (1.94, 0.6)]
    assert len(out) == len(pcm) + 2 * round((0.5 - 0.3 + 0.6 - 0.36) * RATE)


def test_a_gap_longer_than_the_pause_is_left_as_it_is() -> None:
    pcm = speech(0.4, 0.7, 0.5)
    out = with_pauses("Okay, [0.5] that's it.", pcm)
    assert out == pcm


def test_gaps_that_do_not_match_the_marks_are_chosen_by_where_the_mark_falls() -> None:
    # "I'd want to check, with my wife." has one inner mark, but the voice left two
    # gaps (a pause inside a phrase): the pause goes in the one nearer its place
    pcm = speech(1.0, 0.16, 0.3, 0.2, 0.6)
    out = with_pauses("I'd want to check [0.8] with my wife.", pcm)
    assert quiet_runs(out) == [(1.0, 0.8), (2.1, 0.2)]


def test_with_no_gap_at_all_the_pause_is_put_where_its_mark_falls() -> None:
    line = "Well, I was thinking [0.7] maybe next week."
    out = with_pauses(line, speech(2.0))
    runs = quiet_runs(out)
    assert len(runs) == 1 and runs[0][1] == pytest.approx(0.7, abs=0.02)
    # its comma is character 20 of the voiced text's 38
    assert voiced(line).index(",", 5) == 20 and len(voiced(line)) == 38
    assert runs[0][0] == pytest.approx(2.0 * 20 / 38, abs=0.02)
