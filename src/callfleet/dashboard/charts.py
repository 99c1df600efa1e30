"""Inline SVG pictures rendered on the server: the outcome mix and the latency histogram."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

__all__ = ["histogram", "outcome_bars", "COLOURS"]

COLOURS = {
    "completed": "#2e7d32",
    "voicemail": "#6a1b9a",
    "busy": "#ef6c00",
    "no-answer": "#8d6e63",
    "declined": "#c62828",
    "failed": "#b71c1c",
    "canceled": "#616161",
    "interrupted": "#455a64",
    "queued": "#90a4ae",
    "live": "#1565c0",
}


def outcome_bars(counts: dict[str, int], title: str = "Outcomes") -> str:
    """Horizontal bars, one per outcome, longest first, with its count."""
    items = sorted(((k, v) for k, v in counts.items() if v), key=lambda kv: -kv[1])
    if not items:
        return _empty(title, "No outcomes yet.")
    top, row_h, label_w, width = max(v for _, v in items), 26, 110, 420
    height = row_h * len(items) + 10
    parts = [_open(title, width, height)]
    for i, (name, count) in enumerate(items):
        y = 5 + i * row_h
        w = max(2.0, (width - label_w - 50) * count / top)
        colour = COLOURS.get(name, "#37474f")
        parts.append(
            f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end">{escape(name)}</text>'
            f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="{colour}"><title>{escape(name)}: {count}</title></rect>'
            f'<text x="{label_w + w + 6:.1f}" y="{y + 17}">{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(samples: Sequence[float], title: str, unit: str = "ms", bins: int = 10) -> str:
    """Vertical bars: how many samples fall in each of `bins` equal ranges."""
    if not samples:
        return _empty(title, "No samples yet.")
    low, high = min(samples), max(samples)
    step = (high - low) / bins or 1.0
    counts = [0] * bins
    for s in samples:
        counts[min(bins - 1, int((s - low) / step))] += 1
    width, height, base, bar_w = 420, 170, 140, 380 / bins
    top = max(counts)
    parts = [_open(title, width, height)]
    for i, c in enumerate(counts):
        h = (base - 25) * c / top
        x = 30 + i * bar_w
        lo, hi = low + i * step, low + (i + 1) * step
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{base - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
            f'fill="#1565c0"><title>{lo:.0f}–{hi:.0f} {unit}: {c}</title></rect>'
        )
    parts.append(
        f'<line x1="30" y1="{base}" x2="{width - 10}" y2="{base}" stroke="#555"/>'
        f'<text x="30" y="{base + 18}">{low:.0f} {unit}</text>'
        f'<text x="{width - 10}" y="{base + 18}" text-anchor="end">{high:.0f} {unit}</text>'
        f'<text x="{width - 10}" y="14" text-anchor="end">{len(samples)} samples</text></svg>'
    )
    return "".join(parts)


def _open(title: str, width: int, height: int) -> str:
    return (
        f'<svg class="chart" role="img" aria-label="{escape(title)}" viewBox="0 0 {width} '
        f'{height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>'
    )


def _empty(title: str, message: str) -> str:
    return f'{_open(title, 420, 40)}<text x="10" y="25">{escape(message)}</text></svg>'
