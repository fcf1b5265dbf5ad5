"""What the test suites share: one way to wait, one way to run a daemon, one PgBouncer.

``waiting.wait_for`` polls a condition with a deadline; ``daemon.Daemons`` starts
``websurf`` commands (the worker above all) in their own process group with their log
in a file, and stops every one of them at the end of the test (the ``daemons`` fixture
of ``tests/conftest.py``); ``pgbouncer.PgBouncer`` is a real pooler in front of the
test server. pytest puts ``tests/`` on ``sys.path`` (``pythonpath`` in pyproject.toml),
so tests say ``from support.waiting import wait_for``.
"""
