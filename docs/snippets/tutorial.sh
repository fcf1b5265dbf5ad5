# The Getting started tutorial's commands. tests/docs/test_tutorial.py runs the
# sections below in this order (the worker it starts itself), so the page cannot drift.

# --8<-- [start:migrate]
websurf migrate
# --8<-- [end:migrate]

# --8<-- [start:sheet]
SHEET=$(websurf sheets create "Shouting" --owner ada@example.com --create-owner --rows 3)
websurf sheets set-operator "$SHEET" B uppercase --source A
# --8<-- [end:sheet]

# --8<-- [start:edit]
websurf sheets edit "$SHEET" A 1 "hello robots" --user ada@example.com
# --8<-- [end:edit]

# --8<-- [start:show]
websurf sheets show "$SHEET"
websurf sheets history "$SHEET"
# --8<-- [end:show]
