"""The progress bar of ``appregistry tokens purge``: tqdm's, on standard error.

A terminal gets a bar with the rows purged, the total counted first, and the rows per
second; anything else (a pipe, a file, cron's mail) gets nothing while the purge runs, only
the result at the end, unless ``--progress`` asks for the bar anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from tqdm import tqdm


def wanted(flag: bool | None, stream: TextIO) -> bool:
    """Whether to show the bar: as ``--progress``/``--no-progress`` say, else on a terminal.

    >>> import io
    >>> wanted(None, io.StringIO()), wanted(True, io.StringIO())
    (False, True)
    """
    if flag is not None:
        return flag
    isatty = getattr(stream, "isatty", None)
    return bool(isatty is not None and isatty())


@contextmanager
def purge_bar(total: int, stream: TextIO) -> Iterator[Callable[[int], None]]:
    """A bar of ``total`` rows on ``stream``; yields the purge's ``progress`` callback.

    >>> import io
    >>> out = io.StringIO()
    >>> with purge_bar(3, out) as progress:
    ...     progress(2)
    ...     progress(1)
    >>> "100%" in out.getvalue() and "rows/s" in out.getvalue()
    True
    """
    bar = tqdm(
        total=total,
        desc="purging",
        unit=" rows",
        unit_scale=True,
        file=stream,
        dynamic_ncols=True,
        mininterval=0.2,
        # The rate over the last few seconds, not since the start: batches vary.
        smoothing=0.1,
    )

    def progress(rows: int) -> None:
        bar.update(rows)

    try:
        yield progress
    finally:
        bar.close()
