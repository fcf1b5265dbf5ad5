"""The shipped benchmark (``websurf bench``): harness, measurements, plan analysis, report.

Design note
-----------
* Everything happens in a scratch database (``websurf_bench_<random>``) created on the
  target server, migrated, and dropped at the end, also on Ctrl-C
  (``harness.scratch_database``). The measurements TRUNCATE the queue and sheet tables
  before they start, so they refuse any database not named that way.
* Daemons are real: ``websurf worker`` runs as a subprocess (the URL in
  ``WEBSURF_DATABASE_URL``, never in argv), with the benchmark's operators
  (``operators``, loaded only into those daemons) where a measurement needs them.
  Timings come from the database clock wherever a daemon is involved, so the loops that
  wait for the end only poll and their cadence enters no figure.
* Each measurement returns one run's figures as a dataclass; ``runner.run_benchmark``
  repeats them, interleaving the runs, and reports medians with min-max.
* Traded away: the machine described is the one running the benchmark. Against a
  remote server, the network is part of every number and the server's hardware is not
  reported.

Where things are: ``options`` (what to measure, and how much), ``harness`` (scratch
database, daemons, waiting), the measurements ``throughput`` (queued tasks run by a
daemon), ``latency`` (pickup latency, a person's edit under bulk work), ``producer``
(enqueue rates, cell-edit commits), ``memory`` (worker RSS), ``plan`` (the claim query's
EXPLAIN at scale), ``runner`` (the table of measurements it walks, and the checks),
``report`` (what the report holds and its rendering), ``names`` and ``operators`` (the
operators the benchmark's daemons load).
"""
