"""Small inline SVG charts (line curves and bars) for the report: no JavaScript, no network."""
from __future__ import annotations

from html import escape

PALETTE = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]
WIDTH, HEIGHT, PAD = 360, 220, 36


def line_chart(title: str, xs: list[float], series: dict[str, list[float]], *, x_label: str = "",
               y_label: str = "", highlight: str | None = None) -> str:
    """Curves sharing one x axis; `highlight` is drawn thicker (the method under test)."""
    values = [v for ys in series.values() for v in ys]
    if not xs or not values:
        return ""
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(0.0, min(values)), max(values)
    sx = _scale(x0, x1, PAD, WIDTH - 10)
    sy = _scale(y0, y1, HEIGHT - PAD, 24)
    parts = [_frame(title, x0, x1, y0, y1, x_label, y_label)]
    for i, (name, ys) in enumerate(series.items()):
        colour = "#000" if name == highlight else PALETTE[i % len(PALETTE)]
        points = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in zip(xs, ys))
        width = 3 if name == highlight else 1.5
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="{width}" points="{points}"/>')
        parts.append(f'<text x="{WIDTH - 100}" y="{34 + 13 * i}" fill="{colour}" font-size="11">'
                     f'{escape(name)}</text>')
    return _svg(parts)


def bar_chart(title: str, bars: dict[str, float], *, y_label: str = "", limit: float | None = None) -> str:
    """One bar per key; `limit` draws a dashed threshold line."""
    if not bars:
        return ""
    top = max([*bars.values(), limit or 0.0, 1e-12])
    sy = _scale(0.0, top, HEIGHT - PAD, 24)
    width = (WIDTH - PAD - 10) / len(bars)
    parts = [_frame(title, None, None, 0.0, top, "", y_label)]
    for i, (name, value) in enumerate(bars.items()):
        x = PAD + i * width
        parts.append(f'<rect x="{x + 2:.1f}" y="{sy(value):.1f}" width="{max(width - 4, 1):.1f}" '
                     f'height="{HEIGHT - PAD - sy(value):.1f}" fill="{PALETTE[0]}"><title>{escape(name)}: '
                     f'{value:.4g}</title></rect>')
        parts.append(f'<text x="{x + width / 2:.1f}" y="{HEIGHT - PAD + 12}" font-size="9" text-anchor="middle">'
                     f'{escape(_short(name))}</text>')
    if limit is not None:
        parts.append(f'<line x1="{PAD}" x2="{WIDTH - 10}" y1="{sy(limit):.1f}" y2="{sy(limit):.1f}" '
                     f'stroke="#d62728" stroke-dasharray="4 3"><title>threshold {limit:.4g}</title></line>')
    return _svg(parts)


def _frame(title, x0, x1, y0, y1, x_label, y_label) -> str:
    bottom, right = HEIGHT - PAD, WIDTH - 10
    out = [f'<text x="{PAD}" y="14" font-size="12" font-weight="bold">{escape(title)}</text>',
           f'<line x1="{PAD}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#444"/>',
           f'<line x1="{PAD}" y1="24" x2="{PAD}" y2="{bottom}" stroke="#444"/>',
           f'<text x="{PAD - 4}" y="{bottom}" font-size="9" text-anchor="end">{y0:.3g}</text>',
           f'<text x="{PAD - 4}" y="30" font-size="9" text-anchor="end">{y1:.3g}</text>']
    if x0 is not None:
        out += [f'<text x="{PAD}" y="{bottom + 12}" font-size="9">{x0:.3g}</text>',
                f'<text x="{right}" y="{bottom + 12}" font-size="9" text-anchor="end">{x1:.3g}</text>']
    if x_label:
        out.append(f'<text x="{(PAD + right) / 2}" y="{HEIGHT - 6}" font-size="10" text-anchor="middle">'
                   f'{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text x="10" y="{(24 + bottom) / 2}" font-size="10" text-anchor="middle" '
                   f'transform="rotate(-90 10 {(24 + bottom) / 2})">{escape(y_label)}</text>')
    return "".join(out)


def _scale(lo: float, hi: float, out_lo: float, out_hi: float):
    span = (hi - lo) or 1.0
    return lambda v: out_lo + (v - lo) / span * (out_hi - out_lo)


def _short(name: str, n: int = 14) -> str:
    return name if len(name) <= n else "…" + name[-(n - 1):]


def _svg(parts: list[str]) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
            f'viewBox="0 0 {WIDTH} {HEIGHT}">' + "".join(parts) + "</svg>")
