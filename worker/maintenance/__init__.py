"""Maintenance services, each a ``run_once``: the reaper, the pruner, the schedule ticks."""
