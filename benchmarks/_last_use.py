"""The last-use rows: token checks with last use recorded, against the same checks without.

``check_last_use_<backend>`` (memory, sqlite, postgres): two Registries on the backend's
data, each on its own storage handle for the SQL backends (its own connections), one with
`appregistry.LastUse` and one with ``last_use=None``, checking the same valid tokens in
interleaved rounds of the same run; the ratio is on over off, and the target 0.95 (last use
costs at most 5%).

So that uses are really written while it is measured, the row runs on the wall clock with a
*short interval*, 0.25 s instead of a minute, and checks only as many distinct tokens as the
backend checks, at this run's ``check_valid`` rate, a hundred times per interval: each token
is written every quarter of a second, once per fifty to a hundred checks of it (the rounds
with last use off run between, while the interval runs on), in the batches the default
``flush_delay`` (a second) and ``max_batch`` make. At a one-minute interval that is a token
used every 0.6 s, all of them at once: a real server writes far less. (At ten checks per
interval the memory backend, whose check costs about what writing one use costs, measured
0.85; the SQL backends 0.98.) The 10,000 live tokens of the check rows are all in storage.
The row's extra fields say how many tokens were checked, and how many uses were written in
how many batches while it ran.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from appregistry import LastUse, Registry

from ._backends import Backend
from ._cache import _open, _where
from ._harness import Row, Sizes, each, rates
from ._world import PEPPER, World

LAST_USE_TARGET = 0.95
INTERVAL = timedelta(seconds=0.25)
#: How many times each token is checked per interval.
CHECKS_PER_INTERVAL = 100


def _log(message: str) -> None:
    print(f"  {message}", file=sys.stderr, flush=True)


def last_use_row(bench: Backend, world: World, sizes: Sizes, *, check_rate: float) -> Row:
    """``check_last_use_<backend>``: checks with last use on over the same with it off.

    ``check_rate`` is this run's ``check_valid`` rate of the backend: it sets how many
    distinct tokens are checked (see the module's docs).
    """
    on, off = _registry(bench, LastUse(interval=INTERVAL)), _registry(bench, None)
    written = {"uses": 0, "batches": 0}
    recorder: Any = on._last_use  # private, on purpose: to count what is written
    write = recorder._write

    def counted(uses: Mapping[str, datetime]) -> None:
        written["uses"] += len(uses)
        written["batches"] += 1
        write(uses)

    recorder._write = counted
    try:
        distinct = int(check_rate * INTERVAL.total_seconds() / CHECKS_PER_INTERVAL)
        samples = world.samples(world.small)[: max(10, distinct)]
        for token in samples:
            if not (on.check_token(token).allowed and off.check_token(token).allowed):
                raise AssertionError(f"{bench.name}: a valid sample token was refused")
        on.list_tokens(world.apps[0].key)  # writes the first uses: they are not measured
        written.update(uses=0, batches=0)
        found = rates(
            {"on": each(on.check_token), "off": each(off.check_token)}, samples, sizes=sizes
        )
        measured = sizes.rounds * sizes.round_seconds  # --quick measures too briefly
        if not written["uses"] and measured >= 2 * INTERVAL.total_seconds():
            raise AssertionError(f"{bench.name}: no use was written while measured")
        _log(f"{bench.name}: last use done ({written['uses']:,} uses written)")
        return Row(
            f"check_last_use_{bench.name}",
            found["on"],
            found["off"],
            LAST_USE_TARGET,
            note=f"last use on over off; interval {INTERVAL.total_seconds()} s",
            extra={
                "tokens": float(len(samples)),
                "uses_written": float(written["uses"]),
                "batches_written": float(written["batches"]),
            },
        )
    finally:
        if bench.name != "memory":  # closing would close the bench's own memory storage
            on.close()
            off.close()


def _registry(bench: Backend, options: LastUse | None) -> Registry:
    if bench.name == "memory":
        return Registry(storage=bench.storage, pepper=PEPPER, last_use=options)  # type: ignore[attr-defined]
    return _open(*_where(bench), last_use=options)
