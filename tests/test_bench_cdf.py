"""bench/cdf.py: the latency CDF picture bench/run e2e --cdf draws (docs/benchmark.md)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from bench import cdf

NS = "{http://www.w3.org/2000/svg}"


def _curves(doc: str) -> list[list[tuple[float, float]]]:
    root = ET.fromstring(doc)
    return [[tuple(map(float, p.split(","))) for p in line.get("points", "").split()]  # type: ignore[misc]
            for line in root.iter(f"{NS}polyline")]


def test_one_monotone_step_curve_per_sample_list() -> None:
    doc = cdf.svg({"cold": [150, 120, 300, 180], "warm": [90, 60, 75], "floor": [20, 22, 25]}, "t", floors=("floor",))
    curves = _curves(doc)
    assert len(curves) == 3
    for points in curves:
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        assert xs == sorted(xs), "x never goes back"
        assert ys == sorted(ys, reverse=True), "the share only grows (SVG y points down)"
        assert ys[0] == cdf.HEIGHT - cdf.BOTTOM and ys[-1] == cdf.TOP  # from 0 % to 100 %
    assert doc.count('stroke-dasharray="6 4"') == 2  # the floor's curve and its legend line
    assert "cold (n=4, p50 150)" in doc and "warm (n=3, p50 75)" in doc


def test_the_axis_ends_at_a_round_value_above_the_largest_p99() -> None:
    assert [cdf._nice_max(v) for v in (0.3, 1, 7, 230, 501, 1000)] == [0.5, 1, 10, 500, 1000, 1000]
    doc = cdf.svg({"x": [230.0]}, "t")
    assert ">500<" in doc and ">400<" in doc  # ticks at fifths of 500
    # One stall of 2 s among 199 samples near 10 ms does not set the scale; its step runs along the edge.
    stalled = cdf.svg({"floor": [10.0] * 199 + [2000.0]}, "t")
    assert ">10<" in stalled and ">2000<" not in stalled
    assert max(x for curve in _curves(stalled) for x, _ in curve) == cdf.WIDTH - cdf.RIGHT


def test_same_samples_same_bytes_and_empty_or_nan_curves_left_out() -> None:
    a = cdf.svg({"cold": [3.0, 1.0, 2.0], "none": [], "nan": [float("nan")]}, "title & <more>")
    assert a == cdf.svg({"cold": [1.0, 2.0, 3.0], "none": [], "nan": [float("nan")]}, "title & <more>")
    assert len(_curves(a)) == 1 and "title &amp; &lt;more&gt;" in a
