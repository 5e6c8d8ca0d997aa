"""Small inline SVG charts (line curves and bars) for the report: no JavaScript, no network.

Layout rules that keep them readable: the left margin is as wide as the longest y tick label, the legend sits in
its own band below the plot (never over the curves), and every series has a colour of its own name (the method is
black, each known baseline has a fixed colour, any other name a colour derived from its letters), so the same
baseline looks the same in every report.
"""
from __future__ import annotations

import math
import zlib
from html import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
SERIES_COLOURS = {"gig": "#000000", "random": "#7f7f7f", "abs_coefficient": "#1f77b4",
                  "grad_x_coefficient": "#2ca02c", "leave_one_out": "#d62728", "delta_mean": "#1f77b4",
                  "delta_max": "#d62728"}
WIDTH, PLOT_HEIGHT, TOP, RIGHT = 380, 170, 26, 12
TICK_FONT, CHAR_WIDTH, LEGEND_ROW = 9, 5.6, 14  # px; CHAR_WIDTH: a generous mean width of a 9 px digit


def colour_of(name: str) -> str:
    """The fixed colour of a series name (the same in every report)."""
    return SERIES_COLOURS.get(name) or PALETTE[zlib.crc32(name.encode()) % len(PALETTE)]


def line_chart(title: str, xs: list[float], series: dict[str, list[float]], *, x_label: str = "",
               y_label: str = "", highlight: str | None = None) -> str:
    """Curves sharing one x axis; `highlight` is drawn thicker and on top (the method under test)."""
    values = [v for ys in series.values() for v in ys]
    if not xs or not values:
        return ""
    names = sorted(series, key=lambda n: (n == highlight, n))  # the method last, so drawn on top
    ticks = nice_ticks(min(0.0, min(values)), max(values))
    frame = _Frame(title, ticks, x_label, y_label, legend=names)
    sx = _scale(min(xs), max(xs), frame.left, frame.right)
    parts = [frame.svg_axes(), f'<text x="{frame.left}" y="{frame.bottom + 12}" font-size="{TICK_FONT}">'
             f'{_num(min(xs))}</text>', f'<text x="{frame.right}" y="{frame.bottom + 12}" font-size="{TICK_FONT}" '
             f'text-anchor="end">{_num(max(xs))}</text>', '<g class="curves">']
    for name in names:
        points = " ".join(f"{sx(x):.1f},{frame.sy(y):.1f}" for x, y in zip(xs, series[name]))
        parts.append(f'<polyline fill="none" stroke="{colour_of(name)}" stroke-width="'
                     f'{3 if name == highlight else 1.5}" points="{points}" data-series="{escape(name)}"/>')
    parts.append("</g>")
    parts.append(frame.svg_legend(names, highlight))
    return _svg(parts, frame.height)


def bar_chart(title: str, bars: dict[str, float], *, y_label: str = "", limit: float | None = None) -> str:
    """One bar per key; `limit` draws a dashed threshold line."""
    if not bars:
        return ""
    ticks = nice_ticks(min(0.0, *bars.values()), max([*bars.values(), limit or 0.0, 1e-12]))
    frame = _Frame(title, ticks, "", y_label, legend=[])
    width = (frame.right - frame.left) / len(bars)
    parts = [frame.svg_axes(), '<g class="curves">']
    for i, (name, value) in enumerate(bars.items()):
        x, top = frame.left + i * width, frame.sy(max(value, 0.0))
        parts.append(f'<rect x="{x + 2:.1f}" y="{top:.1f}" width="{max(width - 4, 1):.1f}" '
                     f'height="{abs(frame.sy(value) - frame.sy(0.0)):.1f}" fill="{PALETTE[0]}"><title>'
                     f'{escape(name)}: {value:.4g}</title></rect>')
        parts.append(f'<text x="{x + width / 2:.1f}" y="{frame.bottom + 12}" font-size="{TICK_FONT}" '
                     f'text-anchor="middle">{escape(_short(name, max(3, int(width / CHAR_WIDTH))))}<title>'
                     f'{escape(name)}</title></text>')
    parts.append("</g>")
    if limit is not None:
        parts.append(f'<line x1="{frame.left}" x2="{frame.right}" y1="{frame.sy(limit):.1f}" '
                     f'y2="{frame.sy(limit):.1f}" stroke="#d62728" stroke-dasharray="4 3"><title>threshold '
                     f'{limit:.4g}</title></line>')
    return _svg(parts, frame.height)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About `count` round tick values covering [lo, hi] (1, 2 or 5 times a power of ten apart)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"chart values must be finite, got {lo}..{hi}")
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks, value = [], start
    while value < hi + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < hi - 1e-12:
        ticks.append(round(value, 12))
    return ticks


class _Frame:
    """Margins sized to the tick labels, the plot box, the y scale, and the legend band below the plot."""

    def __init__(self, title: str, ticks: list[float], x_label: str, y_label: str, legend: list[str]):
        self.title, self.ticks, self.x_label, self.y_label = title, ticks, x_label, y_label
        label_width = max(len(_num(t)) for t in ticks) * CHAR_WIDTH
        self.left = round(label_width + 8 + (16 if y_label else 4))
        self.right, self.bottom = WIDTH - RIGHT, TOP + PLOT_HEIGHT
        self.axis_band = 16 + (14 if x_label else 0)
        self.legend_rows = _legend_rows(legend, WIDTH - 12)
        self.height = self.bottom + self.axis_band + LEGEND_ROW * len(self.legend_rows) + 6
        self.sy = _scale(ticks[0], ticks[-1], self.bottom, TOP)

    def svg_axes(self) -> str:
        out = [f'<text x="6" y="15" font-size="12" font-weight="bold">{escape(self.title)}</text>']
        for t in self.ticks:
            y = self.sy(t)
            out.append(f'<line x1="{self.left}" x2="{self.right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
            out.append(f'<text x="{self.left - 4}" y="{y + 3:.1f}" font-size="{TICK_FONT}" text-anchor="end">'
                       f'{_num(t)}</text>')
        out += [f'<line x1="{self.left}" y1="{self.bottom}" x2="{self.right}" y2="{self.bottom}" stroke="#444"/>',
                f'<line x1="{self.left}" y1="{TOP}" x2="{self.left}" y2="{self.bottom}" stroke="#444"/>']
        if self.x_label:
            out.append(f'<text x="{(self.left + self.right) / 2}" y="{self.bottom + 26}" font-size="10" '
                       f'text-anchor="middle">{escape(self.x_label)}</text>')
        if self.y_label:
            mid = (TOP + self.bottom) / 2
            out.append(f'<text x="11" y="{mid}" font-size="10" text-anchor="middle" '
                       f'transform="rotate(-90 11 {mid})">{escape(self.y_label)}</text>')
        return "".join(out)

    def svg_legend(self, names: list[str], highlight: str | None) -> str:
        out, y = ['<g class="legend">'], self.bottom + self.axis_band + 10
        for row in self.legend_rows:
            x = 6
            for name in row:
                width = 3 if name == highlight else 1.5
                out.append(f'<line x1="{x}" x2="{x + 16}" y1="{y - 3}" y2="{y - 3}" stroke="{colour_of(name)}" '
                           f'stroke-width="{width}"/><text x="{x + 20}" y="{y}" font-size="10">{escape(name)}</text>')
                x += _legend_width(name)
            y += LEGEND_ROW
        return "".join(out) + "</g>"


def _legend_rows(names: list[str], width: float) -> list[list[str]]:
    rows: list[list[str]] = []
    used = width
    for name in names:
        if used + _legend_width(name) > width:
            rows.append([])
            used = 0.0
        rows[-1].append(name)
        used += _legend_width(name)
    return rows


def _legend_width(name: str) -> float:
    return 20 + 6.2 * len(name) + 12  # swatch, 10 px text, gap


def _scale(lo: float, hi: float, out_lo: float, out_hi: float):
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def _num(value: float) -> str:
    return f"{value:.3g}"


def _short(name: str, n: int = 14) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


def _svg(parts: list[str], height: float) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height:.0f}" '
            f'viewBox="0 0 {WIDTH} {height:.0f}">' + "".join(parts) + "</svg>")
