"""What ``websurf status`` prints: the queue's snapshot as a report for the person on call."""

from __future__ import annotations

from websurf.cli.render import age
from websurf.cli.render.limits import limit_lines
from websurf.worker.core.snapshot import StatusSnapshot


def status_report(status: StatusSnapshot) -> str:
    """Tasks by type and state, waits, throughput, failures, connections, schedules, limits,
    workers."""
    window = age(status.window_s).replace(".0", "")
    lines = [
        f"websurf status at {status.at:%Y-%m-%d %H:%M:%S%z}"
        f"  (about {status.estimated_rows} rows in the queue table)",
        "",
        f"oldest due pending task waits: {age(status.oldest_due_age_s)}",
        "throughput (completed/s): "
        + "  ".join(f"{k} {v:g}" for k, v in status.throughput_per_s.items()),
        "",
        f"{'task type':24} {'due':>8} {'later':>8} {'running':>8}"
        f" {'done/' + window:>9} {'failed/' + window:>10} {'cancel/' + window:>10}"
        f" {'oldest due':>11}",
    ]
    for name, c in status.types.items():
        lines.append(
            f"{name[:24]:24} {c.due:>8} {c.scheduled:>8} {c.processing:>8}"
            f" {c.completed:>9} {c.failed:>10} {c.cancelled:>10} {age(c.oldest_due_age_s):>11}"
        )
    if not status.types:
        lines.append("(no tasks pending, running or finished recently)")
    if status.keys:
        lines += [
            "",
            f"pending by fairness key (keys take turns; {len(status.keys)} largest"
            f" of {status.keys_pending}):",
        ]
        lines += [
            f"  {(k.key if k.key is not None else '(no key)')[:40]:40} {k.pending:>8}"
            for k in status.keys
        ]
    lines += ["", f"failures in the last {window}:"]
    for f in status.failures:
        error = f.last_error.splitlines()[0][:100] if f.last_error else "-"
        lines.append(f"  {f.task_type:24} {f.failed:>6}  last {f.last_failed_at:%H:%M:%S}  {error}")
    if not status.failures:
        lines.append("  none")
    if status.unhandled:
        lines += ["", "pending tasks that no live worker handles (they wait until one does):"]
        lines += [f"  {name:24} {n:>6}" for name, n in status.unhandled.items()]
        lines.append(
            "  check the robot column's operator_type, or start a worker with that operator"
            " (--operators)"
        )
    if status.connections:
        lines += ["", "connections:"]
        lines += [
            f"  {kind.replace('_', ' '):22} {where}" for kind, where in status.connections.items()
        ]
    lines += ["", f"schedules: {len(status.schedules)}"]
    for s in status.schedules:
        when = f"cron {s.cron!r}" if s.cron else f"every {s.every_s:g}s"
        state = "PAUSED " if s.paused else ""
        last = f"{s.last_run_at:%H:%M:%S}" if s.last_run_at else "-"
        lines.append(
            f"  {s.name[:40]:40} {state}{when}  next {s.next_run_at:%Y-%m-%d %H:%M:%S%z}"
            f"  last {last} ({s.last_run})"
        )
    if status.limits:
        lines += ["", f"limits: {len(status.limits)}"]
        lines += [f"  {line}" for line in limit_lines(status.limits)]
    live = [w for w in status.workers if not w.stale]
    lines += ["", f"workers: {len(live)} live, {len(status.workers) - len(live)} stale"]
    for w in status.workers:
        state = "STALE" if w.stale else "live"
        lines.append(
            f"  {w.id:40} pid {w.pid:<7} {state:5}  heartbeat {age(w.heartbeat_age_s)} ago"
        )
    return "\n".join(lines)
