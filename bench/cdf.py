"""Latency distributions as a CDF picture (SVG, standard library only): `bench/run e2e --cdf FILE`
draws cold, warm and their floors from one run, so docs/benchmark.md can show where the whole
distribution lies, not only p50/p99.

Deterministic: the same samples give the same bytes (no timestamps, fixed number formatting)."""
from __future__ import annotations

import math
from typing import Mapping, Sequence
from xml.sax.saxutils import escape

WIDTH, HEIGHT = 720, 420
LEFT, RIGHT, TOP, BOTTOM = 64, 180, 24, 48
# Colour-blind-safe (Okabe-Ito), one per curve in the order given; dashed for floors.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9")


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (the axis' end)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _fmt(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def svg(curves: Mapping[str, Sequence[float]], title: str, unit: str = "ms", floors: Sequence[str] = ()) -> str:
    """One step curve per named sample list (values in `unit`), x from 0 to a round value above
    the largest p99, y the share of samples at or below x. Curves named in `floors` are dashed."""
    present = {name: sorted(v for v in values if math.isfinite(v)) for name, values in curves.items()}
    present = {name: values for name, values in present.items() if values}
    # The axis ends above every curve's p99, not its slowest sample: one stall on a shared machine
    # (seconds) would squash every curve into the left edge; the tail beyond runs along it.
    x_max = _nice_max(max((v[int(0.99 * (len(v) - 1))] for v in present.values()), default=1.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * min(x, x_max) / x_max

    def py(share: float) -> float:
        return TOP + plot_h * (1 - share)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
           'font-family="sans-serif" font-size="12">',
           f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
           f'<text x="{LEFT}" y="{TOP - 8}" font-size="14">{escape(title)}</text>']
    for i in range(6):  # grid and ticks: five steps on each axis
        x, share = x_max * i / 5, i / 5
        out.append(f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + plot_h}" stroke="#ddd"/>')
        out.append(f'<text x="{px(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">{_fmt(x)}</text>')
        out.append(f'<line x1="{LEFT}" y1="{py(share):.1f}" x2="{LEFT + plot_w}" y2="{py(share):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{LEFT - 6}" y="{py(share) + 4:.1f}" text-anchor="end">{share:.0%}</text>')
    out.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 10}" text-anchor="middle">{escape(unit)}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>')
    for k, (name, values) in enumerate(present.items()):
        colour = COLOURS[k % len(COLOURS)]
        n = len(values)
        points = [f"{px(0):.1f},{py(0):.1f}"]
        for i, value in enumerate(values):  # a step up at each sample
            points.append(f"{px(value):.1f},{py(i / n):.1f}")
            points.append(f"{px(value):.1f},{py((i + 1) / n):.1f}")
        points.append(f"{px(x_max):.1f},{py(1):.1f}")
        dash = ' stroke-dasharray="6 4"' if name in floors else ""
        out.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{" ".join(points)}"/>')
        median = values[(n - 1) // 2]
        y = TOP + 14 + 18 * k
        out.append(f'<line x1="{LEFT + plot_w + 12}" y1="{y - 4}" x2="{LEFT + plot_w + 36}" y2="{y - 4}" stroke="{colour}" '
                   f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{LEFT + plot_w + 42}" y="{y}">{escape(name)} (n={n}, p50 {_fmt(median)})</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
