"""Server-drawn line charts: one small SVG per chart, readable without JavaScript.

The console ships no chart library; a chart is a handful of polylines, dots and tick labels,
which an SVG written here draws well enough and keeps the page air-gap friendly. Colours come
from CSS custom properties (``--series-1`` …, ``--chart-axis``, ``--chart-marker``) defined in
console.css, with fallbacks so a chart stays legible when the stylesheet is missing (a saved page).

Every piece of text (title, series names, marker labels) is escaped: series names come from the
model store and marker labels from regression causes, neither of which is trusted markup.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

__all__ = ["Marker", "Series", "line_chart"]

# Fallback colours for when console.css is not loaded; the stylesheet overrides them.
_PALETTE = ("#2563eb", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2")
# Room for tick labels on the left, the time axis below and the legend / marker labels on top.
_LEFT, _RIGHT, _TOP, _BOTTOM = 60, 16, 26, 32
# Text size in user units. The chart scales with its container (width 100%, height from the
# viewBox), so text shrinks on a phone and grows on a wide card; console.css sets --chart-font
# per container width to keep it readable. The margins above leave room for up to _MAX_FONT.
_FONT = "var(--chart-font, 11px)"
_MAX_FONT = 17
# x values at or above this are taken for unix seconds (2001-09-09) and labelled as times.
_EPOCH_FLOOR = 1e9


@dataclass(frozen=True)
class Series:
    """One line: ``points`` are (x, y) with x in unix seconds or an index; y None is a gap."""

    name: str
    points: Sequence[tuple[float, float | None]]


@dataclass(frozen=True)
class Marker:
    """A vertical mark at ``x`` (a regression, a version change) with a short label."""

    x: float
    label: str


def line_chart(
    series: Sequence[Series],
    *,
    width: int = 640,
    height: int = 180,
    y_label: str = "",
    markers: Sequence[Marker] = (),
    title: str = "",
    empty_label: str = "No data yet",
    y_range: tuple[float, float] | None = None,
) -> Markup:
    """An accessible SVG line chart (role="img", <title>, aria-label, ticks on both axes).

    ``empty_label`` is what an empty chart says; callers pass it translated (this module has no
    request, so no language). ``y_range`` fixes the y axis (a percentage: 0..100) instead of
    fitting it to the values.
    """
    xs = [x for s in series for x, y in s.points if y is not None]
    ys = [y for s in series for _x, y in s.points if y is not None]
    label = _aria_label(title, y_label, series, empty_label if not ys else "")
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'preserveAspectRatio="xMidYMid meet" style="width: 100%; height: auto; max-width: 100%" '
        f'aria-label="{escape(label)}">'
        f"<title>{escape(title or y_label or empty_label)}</title>"
    )
    plot = _Plot(width=width, height=height)
    parts = [head, plot.frame()]
    if not ys:
        parts.append(
            f'<text class="chart-empty" x="{width / 2:.1f}" y="{height / 2:.1f}" text-anchor="middle" '
            f'dominant-baseline="middle" '
            f'style="fill: var(--chart-text, #555); font-size: calc(1.3 * {_FONT})">'
            f"{escape(empty_label)}</text>"
        )
        parts.append(_y_label(y_label, height))
        parts.append("</svg>")
        return Markup("".join(parts))

    all_x = [*xs, *(m.x for m in markers)]
    timed = min(all_x) >= _EPOCH_FLOOR
    # one instant: an hour either side (a tenth of 1.7e9 seconds would be years)
    x_lo, x_hi = _span(all_x, pad=3600.0 if timed else 1.0)
    if y_range is not None:
        y_lo, y_hi = min(y_range[0], *ys), max(y_range[1], *ys)
    else:
        y_lo, y_hi = _span([*ys, *([0.0] if min(ys) >= 0 else [])])
    y_ticks = _nice_ticks(y_lo, y_hi, 4)
    y_lo, y_hi = min(y_ticks[0], y_lo), max(y_ticks[-1], y_hi)
    plot = _Plot(width=width, height=height, x_lo=x_lo, x_hi=x_hi, y_lo=y_lo, y_hi=y_hi)
    parts.append(plot.y_axis(y_ticks))
    parts.append(plot.x_axis(_x_ticks(x_lo, x_hi, timed, xs), timed))
    parts.append(_y_label(y_label, height))
    for i, s in enumerate(series):
        parts.append(plot.series(s, i, timed))
    for m in markers:
        parts.append(plot.marker(m, timed))
    parts.append(_legend(series, width))
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True)
class _Plot:
    """Maps data to pixels inside the frame; the ranges are never empty (see _span)."""

    width: int
    height: int
    x_lo: float = 0.0
    x_hi: float = 1.0
    y_lo: float = 0.0
    y_hi: float = 1.0

    def px(self, x: float) -> float:
        inner = self.width - _LEFT - _RIGHT
        return _LEFT + (x - self.x_lo) / (self.x_hi - self.x_lo) * inner

    def py(self, y: float) -> float:
        inner = self.height - _TOP - _BOTTOM
        return self.height - _BOTTOM - (y - self.y_lo) / (self.y_hi - self.y_lo) * inner

    def frame(self) -> str:
        return (
            f'<rect class="chart-frame" x="{_LEFT}" y="{_TOP}" width="{self.width - _LEFT - _RIGHT}" '
            f'height="{self.height - _TOP - _BOTTOM}" '
            f'style="fill: none; stroke: var(--chart-axis, #bbb); stroke-width: 1"/>'
        )

    def y_axis(self, ticks: Sequence[float]) -> str:
        out = [f'<g class="chart-y-ticks" style="fill: var(--chart-text, #555); font-size: {_FONT}">']
        for t in ticks:
            y = self.py(t)
            out.append(
                f'<line x1="{_LEFT - 4}" x2="{self.width - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
                f'style="stroke: var(--chart-grid, #eee); stroke-width: 1"/>'
                f'<text x="{_LEFT - 6}" y="{y:.1f}" text-anchor="end" dominant-baseline="middle">'
                f"{escape(_fmt_number(t))}</text>"
            )
        out.append("</g>")
        return "".join(out)

    def x_axis(self, ticks: Sequence[float], timed: bool) -> str:
        base = self.height - _BOTTOM
        out = [f'<g class="chart-x-ticks" style="fill: var(--chart-text, #555); font-size: {_FONT}">']
        for t in ticks:
            x = self.px(t)
            # Edge labels line up with the frame instead: a centred one would be cut off by the
            # viewBox on the right and run into the y axis's 0 on the left.
            anchor = "middle"
            if x > self.width - _RIGHT - 2 * _MAX_FONT:
                anchor = "end"
            elif x < _LEFT + 2 * _MAX_FONT:
                anchor = "start"
            out.append(
                f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{base}" y2="{base + 4}" '
                f'style="stroke: var(--chart-axis, #bbb)"/>'
                f'<text x="{x:.1f}" y="{base + 18}" text-anchor="{anchor}">'
                f"{escape(_fmt_x(t, timed, self.x_hi - self.x_lo))}</text>"
            )
        out.append("</g>")
        return "".join(out)

    def series(self, s: Series, index: int, timed: bool) -> str:
        colour = f"var(--series-{index % len(_PALETTE) + 1}, {_PALETTE[index % len(_PALETTE)]})"
        out = [f'<g class="chart-series" data-series="{escape(s.name)}">']
        # A None ends the current run of points, so a gap shows as a break in the line.
        run: list[tuple[float, float]] = []
        runs: list[list[tuple[float, float]]] = []
        for x, y in s.points:
            if y is None:
                if run:
                    runs.append(run)
                run = []
            else:
                run.append((x, y))
        if run:
            runs.append(run)
        for r in runs:
            if len(r) > 1:
                coords = " ".join(f"{self.px(x):.1f},{self.py(y):.1f}" for x, y in r)
                out.append(
                    f'<polyline points="{coords}" '
                    f'style="fill: none; stroke: {colour}; stroke-width: 2; stroke-linejoin: round"/>'
                )
        span = self.x_hi - self.x_lo
        for r in runs:
            for x, y in r:
                tip = f"{s.name}: {_fmt_number(y)} ({_fmt_x(x, timed, span, full=True)})"
                out.append(
                    f'<circle class="chart-point" cx="{self.px(x):.1f}" cy="{self.py(y):.1f}" r="3" '
                    f'style="fill: {colour}"><title>{escape(tip)}</title></circle>'
                )
        out.append("</g>")
        return "".join(out)

    def marker(self, m: Marker, timed: bool) -> str:
        x = self.px(m.x)
        return (
            f'<g class="chart-marker" style="stroke: var(--chart-marker, #dc2626)">'
            f"<title>{escape(m.label)}</title>"
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{self.height - _BOTTOM}" '
            f'style="stroke-width: 1.5; stroke-dasharray: 4 3"/>'
            f'<text x="{x:.1f}" y="{_TOP - 4}" text-anchor="middle" '
            f'style="stroke: none; fill: var(--chart-marker, #dc2626); font-size: {_FONT}">'
            f"{escape(_shorten(m.label, 28))}</text></g>"
        )


def _legend(series: Sequence[Series], width: int) -> str:
    if len(series) < 2:
        return ""
    out = [f'<g class="chart-legend" style="font-size: {_FONT}; fill: var(--chart-text, #555)">']
    x = _LEFT
    for i, s in enumerate(series):
        colour = f"var(--series-{i % len(_PALETTE) + 1}, {_PALETTE[i % len(_PALETTE)]})"
        name = _shorten(s.name, 24)
        out.append(
            f'<rect x="{x}" y="6" width="10" height="10" style="fill: {colour}"/>'
            f'<text x="{x + 14}" y="15">{escape(name)}</text>'
        )
        x += 24 + math.ceil(0.6 * _MAX_FONT * len(name))
        if x > width - 60:
            break
    out.append("</g>")
    return "".join(out)


def _y_label(text: str, height: int) -> str:
    if not text:
        return ""
    mid = (_TOP + height - _BOTTOM) / 2
    return (
        f'<text class="chart-y-label" x="16" y="{mid:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 16 {mid:.1f})" style="fill: var(--chart-text, #555); font-size: {_FONT}">'
        f"{escape(text)}</text>"
    )


def _aria_label(title: str, y_label: str, series: Sequence[Series], empty: str) -> str:
    """A sentence a screen reader can say instead of the picture: each series' last value."""
    head = ", ".join(t for t in (title, y_label) if t)
    if empty:
        return f"{head}: {empty}" if head else empty
    bits = []
    for s in series:
        values = [y for _x, y in s.points if y is not None]
        if values:
            bits.append(f"{s.name}: {len(values)} × {_fmt_number(values[-1])}")
    body = "; ".join(bits)
    return f"{head}: {body}" if head else body


def _span(values: Sequence[float], *, pad: float | None = None) -> tuple[float, float]:
    """The range of ``values``, widened when it is a single value so scaling never divides by 0
    (by ``pad`` either side, else by a tenth of the value upwards: a lone 0 stays the floor)."""
    lo, hi = min(values), max(values)
    if hi > lo:
        return lo, hi
    if pad is not None:
        return lo - pad, hi + pad
    return lo, hi + (abs(hi) * 0.1 or 1.0)


def _nice_ticks(lo: float, hi: float, count: int) -> list[float]:
    """Round tick values (1, 2, 5 × 10^k steps) covering [lo, hi]."""
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step) * step
    ticks = [round(first, 10)]
    # Up to the first tick at or above hi, so the top value is inside the axis.
    while ticks[-1] < hi and len(ticks) <= 2 * count + 2:
        ticks.append(round(first + step * len(ticks), 10))
    return ticks


def _x_ticks(lo: float, hi: float, timed: bool, xs: Sequence[float]) -> list[float]:
    distinct = sorted(set(xs))
    if not timed and len(distinct) <= 8 and all(float(x).is_integer() for x in distinct):
        return distinct  # run indexes: label each run, not 2.5
    if timed:
        # Five evenly spaced instants labelled as clock times or dates (round numbers of
        # seconds since 1970 mean nothing to a reader).
        return [lo + (hi - lo) * i / 4 for i in range(5)]
    return [t for t in _nice_ticks(lo, hi, 5) if lo <= t <= hi]


def _fmt_number(v: float) -> str:
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a >= 100 or float(v).is_integer():
        return f"{v:.0f}"
    return f"{v:.3g}"


def _fmt_x(x: float, timed: bool, span: float, *, full: bool = False) -> str:
    if not timed:
        return _fmt_number(x)
    t = time.gmtime(x)
    if full:
        return time.strftime("%Y-%m-%d %H:%M UTC", t)
    return time.strftime("%H:%M" if span < 2 * 86400 else "%m-%d", t)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
