"""Inline SVG charts: no JavaScript and no assets, so the pages work offline and in any proxy."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

W, H, PAD = 560, 180, 28


def bars(values: Sequence[float], labels: Sequence[str], *, title: str) -> str:
    """One bar per value; labels under the first, middle and last bar."""
    if not values:
        return f'<p class="empty">{escape(title)}: no data yet</p>'
    top = max(values) or 1.0
    step = (W - 2 * PAD) / len(values)
    parts = []
    for i, v in enumerate(values):
        h = (H - 2 * PAD) * v / top
        x, y = PAD + i * step, H - PAD - h
        tip = escape(f"{labels[i]}: {v:g}")
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(step - 2, 1):.1f}" '
            f'height="{h:.1f}"><title>{tip}</title></rect>'
        )
    for i in sorted({0, len(values) // 2, len(values) - 1}):
        x = PAD + (i + 0.5) * step
        parts.append(
            f'<text x="{x:.1f}" y="{H - 8}" text-anchor="middle">{escape(labels[i])}</text>'
        )
    parts.append(f'<text x="{PAD}" y="16">{escape(title)} (max {top:g})</text>')
    return _svg(parts, title)


def line(xs: Sequence[float], ys: Sequence[float], *, title: str, y_max: float = 1.0) -> str:
    """A polyline of ys (0..y_max) against xs, with the first and last x labelled."""
    if not xs:
        return f'<p class="empty">{escape(title)}: no data yet</p>'
    lo, hi = min(xs), max(xs)
    span = (hi - lo) or 1.0
    pts = " ".join(
        f"{PAD + (W - 2 * PAD) * (x - lo) / span:.1f},"
        f"{H - PAD - (H - 2 * PAD) * min(max(y / y_max, 0.0), 1.0):.1f}"
        for x, y in zip(xs, ys, strict=True)
    )
    parts = [
        f'<polyline fill="none" stroke-width="1.5" points="{pts}"/>',
        f'<text x="{PAD}" y="{H - 8}">{lo:g}</text>',
        f'<text x="{W - PAD}" y="{H - 8}" text-anchor="end">{hi:g}</text>',
        f'<text x="{PAD}" y="16">{escape(title)} (0 to {y_max:g})</text>',
    ]
    return _svg(parts, title)


def _svg(parts: list[str], title: str) -> str:
    return (
        f'<svg role="img" aria-label="{escape(title)}" viewBox="0 0 {W} {H}" '
        f'width="{W}" height="{H}">' + "".join(parts) + "</svg>"
    )
