"""Groups by step and pass rate as a heatmap: how the difficulty of what was served moved.

Columns follow the step axis of the other charts (a long run of missing steps takes a narrow
`//` slot); each axis segment is cut into cells at least CELL_MIN px wide, so a long run is
summed into step ranges. A cell's colour is its share of its column's groups, so a column
reads as that stretch's pass-rate distribution whatever its size; its count is in the
tooltip and in `data-count`, and the legend gives each colour band's total of groups.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

from service.admin.charts import LEFT, PH, PW, TOP, StepAxis, empty, frame

CELL_MIN = 4.0  # px: at most about 120 columns
BANDS = (0.0, 0.02, 0.05, 0.1, 0.2, 0.4)  # lower edges of the share bands
BAND_LABELS = (
    "&lt; 2%",
    "2&ndash;5%",
    "5&ndash;10%",
    "10&ndash;20%",
    "20&ndash;40%",
    "&ge; 40%",
)  # markup
COLOURS = ("#e3eefa", "#bcd5f0", "#8db7e3", "#5a93d1", "#2f6db5", "#123f7a")


@dataclass(frozen=True)
class Column:
    """Steps `first`..`last` (`steps` of them with groups), summed per pass-rate bin."""

    first: int
    last: int
    steps: int
    x: float
    width: float
    counts: list[int]


def columns(
    steps: Sequence[int], counts: Sequence[Sequence[float]], axis: StepAxis
) -> list[Column]:
    """Each segment of the axis cut into equal step ranges; empty ranges are left out."""
    order = sorted(range(len(steps)), key=lambda k: steps[k])
    xs = [int(steps[k]) for k in order]
    bins = len(counts[0]) if len(counts) else 0
    out: list[Column] = []
    for i, (lo, hi) in enumerate(axis.segments):
        a, b = bisect_left(xs, lo), bisect_right(xs, hi)
        span = hi - lo + axis.unit
        n = max(1, min(b - a, int(axis.widths[i] // CELL_MIN)))
        cells: dict[int, list[int]] = {}
        for k in range(a, b):
            j = min(n - 1, (xs[k] - lo) * n // span)
            cells.setdefault(j, []).append(k)
        w = axis.widths[i] / n
        for j, ks in sorted(cells.items()):
            total = [0] * bins
            for k in ks:
                for c, v in enumerate(counts[order[k]]):
                    total[c] += int(v)
            out.append(Column(xs[ks[0]], xs[ks[-1]], len(ks), axis.offsets[i] + j * w, w, total))
    return out


def rows_shown(totals: Sequence[int], group_size: int | None) -> list[int]:
    """Every bin, less those no k of G successes can land in and no group did."""
    if not group_size:
        return list(range(len(totals)))
    bins = len(totals)
    reachable = {min(k * bins // group_size, bins - 1) for k in range(group_size + 1)}
    return [b for b in range(bins) if b in reachable or totals[b] > 0]


def heatmap(
    steps: Sequence[int],
    counts: Sequence[Sequence[float]],
    *,
    chart_id: str,
    title: str,
    group_size: int | None = None,
    x_label: str = "training step",
) -> str:
    """`counts[i][b]`: groups of step `steps[i]` whose pass rate fell in bin b of equal bins."""
    if not len(steps) or not sum(sum(r) for r in counts):
        return empty(title)
    bins = len(counts[0])
    axis = StepAxis([int(s) for s in steps])
    cols = columns(steps, counts, axis)
    totals = [sum(c.counts[b] for c in cols) for b in range(bins)]
    rows = rows_shown(totals, group_size)
    rh = PH / len(rows)
    parts = axis.marks()
    for r, b in enumerate(rows):
        y = TOP + PH - rh * (r + 0.5)
        parts.append(
            f'<text class="ytick" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" '
            'style="font-size:10px" '
            f'data-lo="{b / bins:g}" data-hi="{(b + 1) / bins:g}">{b / bins:g}&ndash;'
            f"{(b + 1) / bins:g}</text>"
        )
    parts.append(
        f'<text class="axis-label" transform="translate(10 {TOP + PH / 2:.0f}) rotate(-90)" '
        'text-anchor="middle">pass rate of the group</text>'
    )
    band_groups = [0] * len(BANDS)
    for col in cols:
        n = sum(col.counts)
        rng = f"step {col.first:,}" if col.steps == 1 else f"steps {col.first:,}&ndash;{col.last:,}"
        for r, b in enumerate(rows):
            c = col.counts[b]
            if not c:
                continue
            share = c / n
            band = bisect_right(BANDS, share) - 1
            band_groups[band] += c
            parts.append(
                f'<rect class="cell" x="{col.x:.2f}" y="{TOP + PH - rh * (r + 1):.2f}" '
                f'width="{col.width + 0.3:.2f}" height="{rh + 0.3:.2f}" fill="{COLOURS[band]}" '
                f'data-from="{col.first}" data-to="{col.last}" data-steps="{col.steps}" '
                f'data-lo="{b / bins:g}" data-hi="{(b + 1) / bins:g}" data-count="{c}" '
                f'data-share="{share:.6g}"><title>{rng} ({col.steps:,} with groups), pass rate '
                f"{b / bins:g}&ndash;{(b + 1) / bins:g}: {c:,} of {n:,} groups "
                f"({100 * share:.1f}%)</title></rect>"
            )
    parts += _legend(band_groups)
    return frame(chart_id, title, x_label, parts)


def _legend(band_groups: Sequence[int]) -> list[str]:
    x = LEFT + PW + 8
    out = [f'<text class="legend" x="{x}" y="{TOP + 4}">share of column</text>']
    for i, (label, colour, n) in enumerate(zip(BAND_LABELS, COLOURS, band_groups, strict=True)):
        y = TOP + 14 + 26 * (len(BANDS) - 1 - i)  # darkest on top, like the cells' values
        out.append(
            f'<g class="band" data-band="{i}" data-groups="{n}">'
            f'<rect x="{x}" y="{y}" width="14" height="14" fill="{colour}" stroke="#bbb"/>'
            f'<text class="legend" x="{x + 19}" y="{y + 7}">{label}</text>'
            f'<text class="count" x="{x + 19}" y="{y + 18}">{n:,} groups</text></g>'
        )
    return out
