"""The overview's SVG charts: scaled into the drawing, axis labels people can read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from websurf.worker.dashboard import charts
from websurf.worker.dashboard.history import Series

START = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_lines_fit_the_drawing_and_the_axis_rounds_up() -> None:
    buckets = [START + timedelta(minutes=m) for m in range(61)]
    chart = charts.line_chart(
        "t", buckets, [Series("a", tuple(float(m) for m in range(61))), Series("b", (0.0,) * 61)]
    )

    points = [tuple(map(float, p.split(","))) for p in chart.lines[0].points.split()]
    assert len(points) == 61
    assert all(chart.left <= x <= chart.right and chart.top <= y <= chart.bottom for x, y in points)
    assert points[-1][1] < points[0][1]  # more is higher
    assert [t.label for t in chart.y_ticks] == ["0", "25", "50", "75", "100"]
    assert chart.x_ticks[0].label == "12:00"
    assert chart.lines[0].colour != chart.lines[1].colour
    assert not chart.empty


def test_a_chart_of_nothing_says_so() -> None:
    chart = charts.line_chart("t", [START, START + timedelta(minutes=1)], [])

    assert chart.empty and chart.lines == ()
    assert [t.label for t in chart.y_ticks][-1] == "1"
