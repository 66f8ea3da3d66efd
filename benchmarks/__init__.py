"""The benchmarks: how close a token check comes to the least work that answers it.

Run them with ``make bench`` (or ``python -m benchmarks``; ``--help`` lists the options). Each
row times one operation of the library's public API (`appregistry.Registry`) against a
*baseline*, the least work that answers the same question on the same data, measured in the
same run: plain dicts for the memory backend, raw ``sqlite3`` and raw ``psycopg`` for the SQL
ones. ``ratio`` is ours divided by the baseline, so it holds on a noisy machine.

The harness is plain Python, on purpose: the data sets take most of the time to build, and a
database cannot be rebuilt in every worker process that pyperf would spawn. Rates are the
median of many short interleaved rounds (ours, baseline, ours, ...): noise from elsewhere on
the machine falls on both sides alike, and moves neither median much.

Setup is not measured and takes short cuts that the measured operations never do: rows are
bulk-loaded directly in each backend's schema (``executemany`` for SQLite, ``COPY`` for
PostgreSQL, the storage port for memory), with the same columns and digests the library
writes. See ``docs/performance.md`` for the results and how to read them.
"""
