"""Line charts as geometry for the SVG the templates draw (no chart library, no JavaScript).

A chart is computed here (scaled points, axis ticks, a colour per line) and drawn by
templates/_chart.html; the SVG has a viewBox, so it scales to a laptop or a phone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from websurf.worker.dashboard.history import Series

WIDTH = 640
HEIGHT = 200
LEFT = 48  # room for the value axis labels
BOTTOM = 24  # room for the time axis labels
TOP = 8
RIGHT = 8
X_TICKS = 6
Y_TICKS = 4
# Colour-blind-safe palette (Okabe and Ito), in the order lines are given.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")


@dataclass(frozen=True)
class Line:
    name: str
    colour: str
    points: str  # "x,y x,y ..." for <polyline points=...>
    total: float


@dataclass(frozen=True)
class Tick:
    at: float  # pixel position along its axis
    label: str


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    left: int
    top: int
    bottom: int  # y of the time axis
    right: int  # x of the chart's right edge
    lines: tuple[Line, ...]
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    unit: str

    @property
    def empty(self) -> bool:
        return not any(line.total for line in self.lines)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if value <= step * power:
            return float(step * power)
    return float(10 * power)


def _label(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def line_chart(
    title: str,
    buckets: Sequence[datetime],
    series: Sequence[Series],
    *,
    unit: str = "",
    time_format: str = "%H:%M",
) -> Chart:
    """Scale the series (one value per bucket each) into a chart of WIDTH x HEIGHT."""
    plot_width = WIDTH - LEFT - RIGHT
    plot_height = HEIGHT - TOP - BOTTOM
    top_value = _nice_ceiling(max((max(s.values, default=0.0) for s in series), default=0.0))
    steps = max(len(buckets) - 1, 1)

    def x(i: int) -> float:
        return round(LEFT + plot_width * i / steps, 1)

    def y(value: float) -> float:
        return round(TOP + plot_height * (1 - value / top_value), 1)

    lines = tuple(
        Line(
            s.name,
            PALETTE[n % len(PALETTE)],
            " ".join(f"{x(i)},{y(v)}" for i, v in enumerate(s.values)),
            sum(s.values),
        )
        for n, s in enumerate(series)
    )
    every = max(len(buckets) // X_TICKS, 1)
    x_ticks = tuple(
        Tick(x(i), b.strftime(time_format)) for i, b in enumerate(buckets) if i % every == 0
    )
    y_ticks = tuple(
        Tick(y(top_value * k / Y_TICKS), _label(top_value * k / Y_TICKS))
        for k in range(Y_TICKS + 1)
    )
    return Chart(
        title,
        WIDTH,
        HEIGHT,
        LEFT,
        TOP,
        HEIGHT - BOTTOM,
        WIDTH - RIGHT,
        lines,
        x_ticks,
        y_ticks,
        unit,
    )
