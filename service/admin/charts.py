"""Inline SVG charts: no JavaScript and no assets, so the pages work offline and in any proxy.

Every mark carries its figure in `data-*` attributes and a `<title>` tooltip, so a reader can
hover for the number and a browser test can check it against the API.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

W, H = 660, 250
LEFT, RIGHT, TOP, BOTTOM = 62, 110, 30, 46  # room for y ticks, legend, title, x ticks
PW, PH = W - LEFT - RIGHT, H - TOP - BOTTOM
GAP_W = 14.0  # width a skipped run of steps takes on a step axis

Fmt = Callable[[float], str]


def num(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def pct(v: float) -> str:
    return f"{100 * v:.0f}%"


def nice_max(v: float) -> float:
    """The smallest 1, 2, 4, 6 or 8 times a power of ten at or above v: quarters stay round."""
    if v <= 0 or not math.isfinite(v):
        return 1.0
    p = 10 ** math.floor(math.log10(v))
    return float(next(m * p for m in (1, 2, 4, 6, 8, 10) if m * p >= v * (1 - 1e-9)))


def _y_axis(top: float, fmt: Fmt, label: str) -> list[str]:
    out = []
    for i in range(5):
        v = top * i / 4
        y = TOP + PH - PH * i / 4
        out.append(f'<line class="grid" x1="{LEFT}" x2="{LEFT + PW}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(
            f'<text class="ytick" x="{LEFT - 5}" y="{y + 4:.1f}" text-anchor="end">{fmt(v)}</text>'
        )
    out.append(
        f'<text class="axis-label" transform="translate(13 {TOP + PH / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle">{escape(label)}</text>'
    )
    return out


def frame(chart_id: str, title: str, x_label: str, parts: list[str]) -> str:
    return (
        f'<figure class="chart" id="{escape(chart_id)}"><svg role="img" '
        f'aria-label="{escape(title)}" data-chart="{escape(chart_id)}" viewBox="0 0 {W} {H}" '
        f'width="{W}" height="{H}"><text class="chart-title" x="{LEFT}" y="18">{escape(title)}'
        f'</text><line class="axis" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{TOP + PH}"/>'
        f'<line class="axis" x1="{LEFT}" x2="{LEFT + PW}" y1="{TOP + PH}" y2="{TOP + PH}"/>'
        + "".join(parts)
        + f'<text class="axis-label" x="{LEFT + PW / 2:.0f}" y="{H - 6}" '
        f'text-anchor="middle">{escape(x_label)}</text></svg></figure>'
    )


def empty(title: str) -> str:
    return f'<p class="empty">{escape(title)}: no data yet</p>'


def histogram(
    counts: Sequence[int],
    edges: Sequence[float],
    *,
    chart_id: str,
    title: str,
    x_label: str,
    y_label: str = "prompts",
) -> str:
    """One bar per bin, every bin's range under it and its count over it, on a y axis from 0."""
    if not counts or not sum(counts):
        return empty(title)
    top = nice_max(max(counts))
    step = PW / len(counts)
    label_every = max(1, math.ceil(len(counts) / 12))
    parts = _y_axis(top, num, y_label)
    for i, c in enumerate(counts):
        h = PH * c / top
        x, lo, hi = LEFT + i * step, edges[i], edges[i + 1]
        rng = f"{lo:.2g}&ndash;{hi:.2g}"
        parts.append(
            f'<rect class="bar" x="{x + 1:.1f}" y="{TOP + PH - h:.1f}" '
            f'width="{max(step - 2, 1):.1f}" height="{h:.1f}" data-lo="{lo:g}" data-hi="{hi:g}" '
            f'data-count="{c}"><title>{rng}: {c:,}</title></rect>'
        )
        cx = x + step / 2
        if len(counts) <= 20:
            parts.append(
                f'<text class="count" x="{cx:.1f}" y="{TOP + PH - h - 3:.1f}" '
                f'text-anchor="middle">{c:,}</text>'
            )
        if i % label_every == 0:
            parts.append(
                f'<text class="xtick" x="{cx:.1f}" y="{TOP + PH + 14}" '
                f'text-anchor="middle">{rng}</text>'
            )
    return frame(chart_id, title, x_label, parts)


@dataclass(frozen=True)
class Series:
    """One line over steps; `rolling` > 0 adds its trailing mean over that many points."""

    name: str
    points: Sequence[tuple[int, float]]
    css: str = "s0"
    rolling: int = 0
    dots: bool = True


class StepAxis:
    """Steps laid out segment by segment: a long run of missing steps takes GAP_W, not its span.

    A gap is a jump of more than 5 times the median step spacing, so one outlier step (20,003
    after 1..500) gets its own short segment instead of squeezing the run into the left edge.
    """

    def __init__(self, steps: Sequence[int]) -> None:
        xs = sorted(set(steps))
        diffs = [b - a for a, b in itertools.pairwise(xs)]
        self.unit = sorted(diffs)[len(diffs) // 2] if diffs else 1
        limit = 5 * self.unit
        self.segments: list[tuple[int, int]] = []
        for s in xs:
            if self.segments and s - self.segments[-1][1] <= limit:
                self.segments[-1] = (self.segments[-1][0], s)
            else:
                self.segments.append((s, s))
        gaps = len(self.segments) - 1
        self.gap_w = min(GAP_W, 0.3 * PW / gaps) if gaps else 0.0
        weights = [hi - lo + self.unit for lo, hi in self.segments]
        room = PW - gaps * self.gap_w
        self.offsets: list[float] = []
        floor = min(24.0, room / len(weights) / 2)  # a lone outlier step stays visible
        spare = room - floor * len(weights)
        self.widths = [floor + spare * w / sum(weights) for w in weights]
        at = float(LEFT)
        for w in self.widths:
            self.offsets.append(at)
            at += w + self.gap_w

    def segment(self, step: int) -> int:
        return next(i for i, (lo, hi) in enumerate(self.segments) if lo <= step <= hi)

    def x(self, step: int) -> float:
        i = self.segment(step)
        lo, hi = self.segments[i]
        return self.offsets[i] + self.widths[i] * (step - lo + self.unit / 2) / (
            hi - lo + self.unit
        )

    def marks(self) -> list[str]:
        """Ticks at segment starts, then ends, then inside wide segments, never overlapping;
        a break sign in each gap."""
        starts = [lo for lo, _ in self.segments]
        ends = [hi for lo, hi in self.segments if hi > lo]
        inner = [
            t
            for i, (lo, hi) in enumerate(self.segments)
            if (n := int(self.widths[i] // 90)) > 1 and hi > lo
            for t in _round_ticks(lo, hi, n)
        ]
        placed: list[float] = []
        out: list[str] = []
        for t in starts + ends + inner:
            x = self.x(t)
            if any(abs(x - p) < 44 for p in placed):
                continue
            placed.append(x)
            out.append(
                f'<text class="xtick" x="{x:.1f}" y="{TOP + PH + 14}" '
                f'text-anchor="middle">{t:,}</text>'
            )
        for i in range(len(self.segments) - 1):
            hi, nxt = self.segments[i][1], self.segments[i + 1][0]
            gx = self.offsets[i] + self.widths[i] + self.gap_w / 2
            out.append(
                f'<g class="gap" data-from="{hi}" data-to="{nxt}"><title>no groups between '
                f"step {hi:,} and step {nxt:,}</title>"
                f'<text x="{gx:.1f}" y="{TOP + PH + 4}" text-anchor="middle">//</text></g>'
            )
        return out


def _round_ticks(lo: int, hi: int, n: int) -> list[int]:
    """Multiples of a 1, 2 or 5 times a power of ten strictly inside (lo, hi), about n of them."""
    raw = (hi - lo) / n
    p = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = int(next((m * p for m in (1, 2, 5, 10) if m * p >= raw), 10 * p))
    first = (lo // step + 1) * step
    return list(range(first, hi, step))


def rolling_mean(points: Sequence[tuple[int, float]], window: int) -> list[tuple[int, float]]:
    """Trailing mean over the last `window` points (fewer at the start)."""
    out, total = [], 0.0
    for i, (s, v) in enumerate(points):
        total += v
        if i >= window:
            total -= points[i - window][1]
        out.append((s, total / min(i + 1, window)))
    return out


def steps(
    series: Sequence[Series],
    *,
    chart_id: str,
    title: str,
    y_label: str,
    fmt: Fmt = num,
    y_max: float | None = None,
    reference: tuple[float, str] | None = None,
    x_label: str = "training step",
) -> str:
    """Lines over steps on a StepAxis, broken at gaps; values past a robust top are clipped."""
    every = [v for s in series for _, v in s.points]
    if not every:
        return empty(title)
    axis = StepAxis([st for s in series for st, _ in s.points])
    if y_max is None:
        ranked = sorted(every)
        robust = ranked[min(len(ranked) - 1, int(0.98 * len(ranked)))]
        y_max = max(robust * 1.15, reference[0] * 1.15 if reference else 0.0) or 1.0
        if ranked[-1] <= y_max * 1.3:
            y_max = ranked[-1] * 1.05 or 1.0
        y_max = nice_max(y_max)
    parts = _y_axis(y_max, fmt, y_label) + axis.marks()

    def y(v: float) -> float:
        return TOP + PH - PH * min(max(v / y_max, 0.0), 1.0)

    if reference is not None:
        ry = y(reference[0])
        parts.append(
            f'<line class="ref" x1="{LEFT}" x2="{LEFT + PW}" y1="{ry:.1f}" y2="{ry:.1f}" '
            f'data-value="{reference[0]:g}"><title>{escape(reference[1])}: '
            f"{fmt(reference[0])}</title></line>"
        )
    legend: list[tuple[str, str]] = []
    for s in series:
        lines = [(s.points, s.css, s.name)]
        if s.rolling > 1 and len(s.points) > 2:
            lines.append(
                (rolling_mean(s.points, s.rolling), f"{s.css} rolling", f"{s.rolling}-step mean")
            )
        for pts, css, name in lines:
            legend.append((css, name))
            for seg in _split(pts, axis):
                coords = " ".join(f"{axis.x(st):.1f},{y(v):.1f}" for st, v in seg)
                parts.append(f'<polyline class="{css}" points="{coords}"/>')
        if s.dots:
            for st, v in s.points:
                clipped = v > y_max
                shape = "clipped" if clipped else "dot"
                parts.append(
                    f'<circle class="{s.css} {shape}" cx="{axis.x(st):.1f}" cy="{y(v):.1f}" '
                    f'r="{3.5 if clipped else 2}" data-step="{st}" data-value="{v:.6g}">'
                    f"<title>step {st:,}: {fmt(v)}{' (off the scale)' if clipped else ''}"
                    "</title></circle>"
                )
    if reference is not None:
        legend.append(("ref", reference[1]))
    parts += _legend(legend)
    return frame(chart_id, title, x_label, parts)


def _split(pts: Sequence[tuple[int, float]], axis: StepAxis) -> list[list[tuple[int, float]]]:
    """Runs of points inside one axis segment: no line is drawn across a gap."""
    out: list[list[tuple[int, float]]] = []
    prev = None
    for p in pts:
        seg = axis.segment(p[0])
        if seg != prev or not out:
            out.append([])
        out[-1].append(p)
        prev = seg
    return [o for o in out if len(o) > 1]


def _legend(items: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    for i, (css, name) in enumerate(items):
        y = TOP + 10 + 18 * i
        out.append(
            f'<line class="key {css}" x1="{LEFT + PW + 8}" x2="{LEFT + PW + 24}" '
            f'y1="{y}" y2="{y}"/>'
            f'<text class="legend" x="{LEFT + PW + 27}" y="{y + 4}">{escape(name)}</text>'
        )
    return out


def reliability(
    bins: Sequence[tuple[float, float, float, float, int]], *, chart_id: str, title: str
) -> str:
    """Predicted against observed per bin: (lo, hi, mean predicted, mean observed, prompts)."""
    if not bins:
        return empty(title)
    parts = _y_axis(1.0, num, "observed pass rate")
    parts.append(
        f'<line class="ref" x1="{LEFT}" y1="{TOP + PH}" x2="{LEFT + PW}" y2="{TOP}">'
        "<title>perfect calibration</title></line>"
    )
    for i in range(11):
        x = LEFT + PW * i / 10
        parts.append(
            f'<text class="xtick" x="{x:.1f}" y="{TOP + PH + 14}" text-anchor="middle">'
            f"{i / 10:g}</text>"
        )
    big = max(b[4] for b in bins)
    for lo, hi, pred, obs, n in bins:
        x, yy = LEFT + PW * pred, TOP + PH - PH * obs
        r = 3 + 7 * math.sqrt(n / big)
        parts.append(
            f'<circle class="cal" cx="{x:.1f}" cy="{yy:.1f}" r="{r:.1f}" data-lo="{lo:g}" '
            f'data-hi="{hi:g}" data-predicted="{pred:.4f}" data-observed="{obs:.4f}" '
            f'data-count="{n}"><title>predicted {lo:g}&ndash;{hi:g}: mean {pred:.3f}, observed '
            f"{obs:.3f}, {n:,} prompts</title></circle>"
            f'<text class="count" x="{x + r + 2:.1f}" y="{yy + 4:.1f}">{n:,}</text>'
        )
    parts += _legend([("ref", "perfect calibration")])
    return frame(chart_id, title, "predicted pass rate (bin mean)", parts)
