"""Inline SVG charts generated in Python (no JS library, no network): line and bar charts.

Every chart is one ``<svg class="chart">`` element with a ``<title>``, axes, and data marks
(``<polyline>``/``<circle>`` for lines, ``<rect>`` for bars); text is escaped.
"""

from __future__ import annotations

import html
import math
import time
from typing import Callable, Sequence

__all__ = ["bar_chart", "line_chart"]

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777")
W, H = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 28, 40


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def _svg(title: str, body: list[str], width: int = W, height: int = H) -> str:
    return (f'<svg class="chart" role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
            f'aria-label="{_e(title)}"><title>{_e(title)}</title>'
            f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" class="t">{_e(title)}</text>'
            + "".join(body) + "</svg>")


def _y_axis(ymax: float, fmt: Callable[[float], str], width: int = W, height: int = H) -> list[str]:
    out = []
    for i in range(5):
        v = ymax * i / 4
        y = height - BOTTOM - (height - TOP - BOTTOM) * i / 4
        out.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="g"/>')
        out.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" class="a">{_e(fmt(v))}</text>')
    return out


def line_chart(title: str, series: Sequence[tuple[str, Sequence[tuple[float, float]]]], *,
               y_fmt: Callable[[float], str] = lambda v: f"{v:g}", ymax: float | None = None,
               x_fmt: Callable[[float], str] | None = None, x_labels: Sequence[str] | None = None) -> str:
    """Lines over a shared x axis: time (unix seconds, default labels HH:MM) or, with
    ``x_labels``, categories at x = 0, 1, 2, ..."""
    points = [p for _, pts in series for p in pts]
    if not points:
        return _svg(title, [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="a">no data</text>'])
    xs = [p[0] for p in points]
    x0, x1 = min(xs), max(xs)
    if x_labels is not None:
        x0, x1 = 0, max(1, len(x_labels) - 1)
    if x1 == x0:
        x1 = x0 + 1
    top = ymax if ymax is not None else _nice_max(max(p[1] for p in points))
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM

    def sx(x: float) -> float:
        return LEFT + pw * (x - x0) / (x1 - x0)

    def sy(y: float) -> float:
        return H - BOTTOM - ph * min(max(y / top, 0.0), 1.0)

    body = _y_axis(top, y_fmt)
    if x_labels is not None:
        step = max(1, len(x_labels) // 12)
        for i, label in enumerate(x_labels):
            if i % step == 0:
                body.append(f'<text x="{sx(i):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" class="a">{_e(label)}</text>')
    else:
        span = x1 - x0
        pattern = "%H:%M:%S" if span < 600 else ("%H:%M" if span < 86400 else "%m-%d %H:%M")
        fmt = x_fmt or (lambda t: time.strftime(pattern, time.gmtime(t)))
        for i in range(5):
            x = x0 + (x1 - x0) * i / 4
            body.append(f'<text x="{sx(x):.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" class="a">{_e(fmt(x))}</text>')
    for n, (name, pts) in enumerate(series):
        color = PALETTE[n % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        if len(pts) > 1:
            body.append(f'<polyline class="line" fill="none" stroke="{color}" stroke-width="2" points="{coords}">'
                        f'<title>{_e(name)}</title></polyline>')
        for x, y in pts[-200:] if len(pts) > 200 else pts:
            body.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}">'
                        f'<title>{_e(name)}: {_e(y_fmt(y))}</title></circle>')
        lx = LEFT + 8 + (n % 4) * 160
        ly = H - 8 + 16 * (n // 4)  # legend rows below the axis
        body.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{color}"/>'
                    f'<text x="{lx + 14}" y="{ly}" class="a">{_e(name[:22])}</text>')
    return _svg(title, body, W, H + 16 * ((len(series) - 1) // 4))


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], *,
              y_fmt: Callable[[float], str] = lambda v: f"{v:g}", horizontal: bool = False,
              notes: Sequence[str] | None = None) -> str:
    """Bars: vertical (categories along x) or horizontal (long labels such as template ids)."""
    if not labels:
        return _svg(title, [f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle" class="a">no data</text>'])
    top = _nice_max(max(values) if values else 0.0)
    body: list[str] = []
    if horizontal:
        height = TOP + 22 * len(labels) + 12
        left = 260
        pw = W - left - (190 if notes else 60)
        for i, (label, v) in enumerate(zip(labels, values)):
            y = TOP + 22 * i
            w = pw * max(v, 0) / top
            note = f" {notes[i]}" if notes else ""
            body.append(f'<text x="{left - 6}" y="{y + 14}" text-anchor="end" class="a">{_e(label[:40])}</text>'
                        f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="15" fill="{PALETTE[0]}">'
                        f'<title>{_e(label)}: {_e(y_fmt(v))}{_e(note)}</title></rect>'
                        f'<text x="{left + w + 4:.1f}" y="{y + 14}" class="a">{_e(y_fmt(v))}{_e(note)}</text>')
        return _svg(title, body, W, height)
    pw, ph = W - LEFT - RIGHT, H - TOP - BOTTOM
    body = _y_axis(top, y_fmt)
    slot = pw / len(labels)
    for i, (label, v) in enumerate(zip(labels, values)):
        h = ph * max(v, 0) / top
        x = LEFT + slot * i + slot * 0.15
        body.append(f'<rect class="bar" x="{x:.1f}" y="{H - BOTTOM - h:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
                    f'fill="{PALETTE[0]}"><title>{_e(label)}: {_e(y_fmt(v))}</title></rect>')
        if len(labels) <= 24:
            body.append(f'<text x="{x + slot * 0.35:.1f}" y="{H - BOTTOM + 16}" text-anchor="middle" class="a">{_e(label)}</text>')
    return _svg(title, body)
