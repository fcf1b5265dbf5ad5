"""What ``websurf limits list`` and the limits part of ``websurf status`` print."""

from __future__ import annotations

from websurf.cli.render import timestamp
from websurf.worker.core.limits import LimitState


def limit_name(operator: str, key: str | None) -> str:
    return operator if key is None else f"{operator} [{key}]"


def limit_lines(states: list[LimitState]) -> list[str]:
    """One line per limit: its caps, what it holds now, and why tasks wait (if they do)."""
    lines = []
    for state in states:
        parts = []
        if state.max_running is not None:
            parts.append(f"running {state.running}/{state.max_running}")
        if state.rate is not None:
            parts.append(f"started {state.started_in_period}/{state.rate} per {state.period_s:g}s")
            if state.burst is not None:
                parts.append(f"burst {state.burst}")
        parts.append(f"waiting {state.waiting}")
        if state.paused_until is not None:
            parts.append(f"paused until {timestamp(state.paused_until)}")
        line = f"{limit_name(state.operator, state.key)}: {', '.join(parts)} ({state.source})"
        why = state.throttled if state.paused_until is None else None
        lines.append(line + (f": {why}" if why else ""))
    return lines
