"""G.711 µ-law and A-law (ITU-T G.711) between 16-bit linear PCM and 8-bit codes.

Pure Python with lookup tables, since `audioop` is deprecated in 3.11 and gone in
3.13. Decoding uses two 256-entry `bytes.translate` tables (low and high byte of
each sample), encoding one 65,536-entry table indexed by the unsigned sample, so
both run at C speed per 20 ms frame. PCM is signed 16-bit little-endian mono.
"""

from __future__ import annotations

import array
import sys
from functools import cache

__all__ = [
    "alaw_decode_sample",
    "alaw_encode_sample",
    "decode",
    "encode",
    "silence",
    "ulaw_decode_sample",
    "ulaw_encode_sample",
]

_BIAS = 0x84
_CLIP = 32635
_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def ulaw_encode_sample(sample: int) -> int:
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sign else sample, _CLIP) + _BIAS
    exponent = magnitude.bit_length() - 8
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_decode_sample(code: int) -> int:
    code = ~code & 0xFF
    exponent = (code >> 4) & 0x07
    magnitude = (((code & 0x0F) << 3) + _BIAS) << exponent
    magnitude -= _BIAS
    return -magnitude if code & 0x80 else magnitude


def alaw_encode_sample(sample: int) -> int:
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    segment = next((i for i, end in enumerate(_ALAW_SEGMENT_ENDS) if value <= end), 8)
    if segment >= 8:
        return 0x7F ^ mask
    code = segment << 4
    code |= (value >> 1) & 0x0F if segment < 2 else (value >> segment) & 0x0F
    return code ^ mask


def alaw_decode_sample(code: int) -> int:
    code ^= 0x55
    value = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        value += 8
    else:
        value = (value + 0x108) << (segment - 1)
    return value if code & 0x80 else -value


@cache
def _decode_tables(codec: str) -> tuple[bytes, bytes]:
    decode_one = ulaw_decode_sample if codec == "PCMU" else alaw_decode_sample
    values = [decode_one(code) & 0xFFFF for code in range(256)]
    return bytes(v & 0xFF for v in values), bytes(v >> 8 for v in values)


@cache
def _encode_table(codec: str) -> bytes:
    encode_one = ulaw_encode_sample if codec == "PCMU" else alaw_encode_sample
    return bytes(encode_one(u - 65536 if u >= 32768 else u) for u in range(65536))


def _check(codec: str) -> str:
    codec = codec.upper()
    if codec not in ("PCMU", "PCMA"):
        raise ValueError(f"unsupported G.711 codec {codec!r}")
    return codec


def decode(codec: str, payload: bytes) -> bytes:
    """G.711 codes -> 16-bit little-endian PCM (two bytes per code)."""
    low, high = _decode_tables(_check(codec))
    out = bytearray(2 * len(payload))
    out[0::2] = payload.translate(low)
    out[1::2] = payload.translate(high)
    return bytes(out)


def encode(codec: str, pcm: bytes) -> bytes:
    """16-bit little-endian PCM -> G.711 codes (a trailing odd byte is ignored)."""
    table = _encode_table(_check(codec))
    samples = array.array("H")
    samples.frombytes(pcm[: len(pcm) & ~1])
    if sys.byteorder == "big":
        samples.byteswap()
    return bytes(map(table.__getitem__, samples))


def silence(codec: str, samples: int = 160) -> bytes:
    return encode(codec, bytes(2 * samples))
