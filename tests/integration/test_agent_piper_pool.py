"""The Piper pool: several voice processes serve concurrent utterances side by side."""

from __future__ import annotations

import threading

import pytest

from callfleet.agent.providers.piper_tts import PiperPool, PiperUnavailable

pytestmark = pytest.mark.slow


def test_concurrent_utterances_spread_over_the_pool() -> None:
    pool = PiperPool(2)
    try:
        try:
            pool.start()
        except PiperUnavailable as exc:
            pytest.fail(f"Piper must start for this test: {exc}")
        barrier = threading.Barrier(4)
        results: dict[int, tuple[bytes, int]] = {}

        def speak(i: int) -> None:
            barrier.wait()
            results[i] = pool.synthesize(f"This is sentence number {i + 1} of four.")

        threads = [threading.Thread(target=speak, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert sorted(results) == [0, 1, 2, 3]
        for pcm, rate in results.values():
            assert rate == 22050 and len(pcm) > rate  # more than half a second of speech
        served = [p.utterances for p in pool.processes]
        assert sum(served) == 4 + 2  # the four, and one warm-up each
        assert all(n >= 2 for n in served), served  # both processes took real work
    finally:
        pool.close()
    with pytest.raises(PiperUnavailable):
        pool.processes[0].synthesize("closed")
