"""Reading the 16-bit mono WAVs that espeak-ng and Piper write.

Both may write to a pipe, where the RIFF and data sizes are placeholders: the data
chunk is read to the end of the bytes instead of trusting its size.
"""

from __future__ import annotations

__all__ = ["parse_wav"]


def parse_wav(data: bytes) -> tuple[bytes, int]:
    """(16-bit little-endian PCM, sample rate) of a mono WAV; ValueError if it is not one."""
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a WAV stream")
    rate = 0
    pos = 12
    while pos + 8 <= len(data):
        chunk = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        if chunk == b"fmt ":
            channels = int.from_bytes(data[pos + 10 : pos + 12], "little")
            rate = int.from_bytes(data[pos + 12 : pos + 16], "little")
            bits = int.from_bytes(data[pos + 22 : pos + 24], "little")
            if (channels, bits) != (1, 16):
                raise ValueError(f"expected 16-bit mono, got {bits}-bit x{channels}")
        elif chunk == b"data":
            if not rate:
                raise ValueError("WAV data before its format")
            body = data[pos + 8 :]  # to the end: a streamed WAV's size is a placeholder
            return body[: len(body) & ~1], rate
        pos += 8 + size + (size & 1)
    raise ValueError("WAV stream without data")
