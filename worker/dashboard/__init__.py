"""The operators web dashboard: `websurf dashboard` (see design.py)."""
