"""The worker daemon and the queue, by concern (docs/development.md has the map).

core/ the model, operators, enqueue and claim, admin · process/ one worker process ·
maintenance/ reaper, pruner, schedule ticks · daemon/ supervisor, health, metrics ·
app/ spreadsheets, sessions, built-in operators · bench/ the shipped benchmark.
"""

from websurf.worker import logs, moved

logs.quiet_until_configured()
moved.install()
