"""What ``websurf migrate`` and ``websurf migrate status`` print."""

from __future__ import annotations

from collections.abc import Sequence

from websurf.sql.migrate import MigrateResult, MigrationState


def plan_lines(result: MigrateResult) -> list[str]:
    """A dry run: what would be adopted and applied, in order."""
    lines = []
    if not result.pending_before:
        lines.append("nothing to apply: the schema is up to date")
    if result.collisions:
        lines.append(
            f"would first try to adopt existing tables ({', '.join(result.collisions[:5])}"
            f"{', …' if len(result.collisions) > 5 else ''}): verified against a scratch"
            " database built from the migrations, refused if they differ"
        )
    for migration in result.pending_before:
        mode = "" if migration.transactional else "  (outside a transaction)"
        lines.append(f"would apply {migration.name}{mode}")
    return lines


def migration_lines(result: MigrateResult) -> list[str]:
    """What a migration run adopted and applied, each with how long it took."""
    lines = []
    if not result.applied and not result.adopted:
        lines.append("nothing to apply: the schema is up to date")
    for migration, duration_ms in result.adopted:
        lines.append(
            f"adopted {migration.name} in {duration_ms} ms"
            " (its tables were already there; added what they lacked)"
        )
    for migration, duration_ms in result.applied:
        lines.append(f"applied {migration.name} in {duration_ms} ms")
    return lines


def state_lines(states: Sequence[MigrationState]) -> list[str]:
    """Each migration: applied (when), pending, edited after it was applied, or unknown."""
    lines = []
    pending = 0
    for state in states:
        recorded = state.applied.name if state.applied else "?"
        name = state.migration.name if state.migration else recorded
        if state.applied is None:
            pending += 1
            lines.append(f"pending  {name}")
        elif state.migration is None:
            lines.append(f"applied  {name}  (not shipped with this version of websurf)")
        elif state.changed:
            lines.append(f"CHANGED  {name}  (edited after it was applied)")
        else:
            lines.append(f"applied  {name}  {state.applied.applied_at:%Y-%m-%d %H:%M:%S%z}")
    if pending:
        lines.append(f"{pending} pending: run `websurf migrate`")
    return lines
