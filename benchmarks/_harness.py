"""Timing, rows, the table and the JSON file: nothing here knows about a backend."""

from __future__ import annotations

import gc
import json
import os
import platform
import sqlite3
import statistics
import struct
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: A measured operation: performs ``len(batch)`` operations, one per item.
Batch = Callable[[Sequence[Any]], object]


@dataclass(frozen=True)
class Sizes:
    """How big each data set is; `FULL` is the issue's, `QUICK` the smoke test's."""

    apps: int
    accounts: int
    installs_per_account: int
    small_tokens: int  # live tokens for the base rows
    large_tokens: int  # live tokens for the scale rows
    list_tokens: int  # of them, on one app and account, for the list rows
    list_apps: int  # apps of one owner, each installed on one account, for the list rows
    per_page: int
    purge_tokens: int  # expired tokens for the purge rows
    samples: int  # distinct tokens a check row cycles through
    round_seconds: float  # one timing round, at least
    rounds: int
    memory_tokens: int  # tokens issued to measure memory per token
    issue_seconds: float  # one round of issues (each commits: slow and noisy)
    issue_rounds: int
    list_rounds: int  # rounds of the list rows, whose slowest page takes a quarter second

    @property
    def list_page(self) -> int:
        """The last full page of the list pair: page 1000 of 100 at full size."""
        return self.list_tokens // self.per_page

    @property
    def list_apps_page(self) -> int:
        """The last full page of the listed apps: page 1000 of 100 at full size."""
        return self.list_apps // self.per_page


FULL = Sizes(
    apps=1_000,
    accounts=10_000,
    installs_per_account=3,
    small_tokens=10_000,
    large_tokens=1_000_000,
    list_tokens=100_000,
    list_apps=100_000,
    per_page=100,
    purge_tokens=1_000_000,
    samples=50_000,
    # Many short rounds, ours and the baseline taking turns: a burst of noise from elsewhere
    # on the machine spoils a few rounds of either, and moves neither median much.
    round_seconds=0.02,
    rounds=60,
    memory_tokens=20_000,
    issue_seconds=0.3,
    issue_rounds=10,
    # A page of an account's 100,000 installed apps takes a quarter of a second on the SQL
    # backends: 60 rounds of three pages would be over a minute per row. The list ratios sit
    # far from their target (about 1.0 against 0.67), so fewer rounds decide them as well.
    list_rounds=15,
)

QUICK = Sizes(
    apps=10,
    accounts=40,
    installs_per_account=2,
    small_tokens=200,
    large_tokens=1_500,
    list_tokens=300,
    list_apps=300,
    per_page=100,
    purge_tokens=2_500,
    samples=100,
    round_seconds=0.01,
    rounds=2,
    memory_tokens=200,
    issue_seconds=0.01,
    issue_rounds=2,
    list_rounds=2,
)


@dataclass
class Row:
    """One line of the table and of ``bench.json``."""

    name: str
    ours_per_s: float
    baseline_per_s: float
    target: float
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Ours divided by the baseline (for list rows: page 1 time over page N time)."""
        return self.ours_per_s / self.baseline_per_s if self.baseline_per_s else 0.0

    @property
    def met(self) -> bool:
        """Whether the ratio reaches its target."""
        return self.ratio >= self.target

    def as_json(self) -> dict[str, Any]:
        """The row as ``bench.json`` holds it."""
        return {
            "name": self.name,
            "ours_per_s": round(self.ours_per_s, 1),
            "baseline_per_s": round(self.baseline_per_s, 1),
            "ratio": round(self.ratio, 3),
            "target": self.target,
            "met": self.met,
            "note": self.note,
            **{key: round(value, 3) for key, value in self.extra.items()},
        }


def _repeat(items: Sequence[Any], count: int, start: int = 0) -> list[Any]:
    """``count`` items, cycling through ``items`` from index ``start``."""
    start %= len(items)
    rotated = list(items[start:]) + list(items[:start])
    whole, part = divmod(count, len(items))
    return rotated * whole + rotated[:part]


def _run(fn: Batch, batch: Sequence[Any]) -> float:
    start = time.perf_counter()
    fn(batch)
    return time.perf_counter() - start


def rates(
    fns: dict[str, Batch],
    items: Sequence[Any],
    *,
    sizes: Sizes,
    seconds: float | None = None,
    rounds: int | None = None,
) -> dict[str, float]:
    """Operations per second of each function: the median of interleaved rounds.

    Every function gets the same items. A round performs enough operations to last at least
    ``seconds`` (calibrated on a first, unmeasured run that also warms the caches). The
    median, not the best round: on a small virtual machine a database round trip is fast or
    slow by turns, as the scheduler places the client and the server on the same core or
    not, and the best round of each side measures its luck, not its work.
    """
    seconds = sizes.round_seconds if seconds is None else seconds
    rounds = sizes.rounds if rounds is None else rounds
    counts = {}
    for name, fn in fns.items():
        count = min(len(items), 64)
        while True:
            elapsed = _run(fn, _repeat(items, count))
            if elapsed >= seconds / 4 or count >= 50 * len(items) + 1_000_000:
                break
            count *= 4
        counts[name] = max(1, int(count * seconds / max(elapsed, 1e-9)))
    found: dict[str, list[float]] = {name: [] for name in fns}
    # Each round goes on where the last one stopped, so every item is used, not only the
    # first few: at a million tokens the caches must not hold them all.
    done = dict.fromkeys(fns, 0)
    for _ in range(rounds):
        for name, fn in fns.items():
            batch = _repeat(items, counts[name], done[name])
            done[name] += len(batch)
            found[name].append(len(batch) / _run(fn, batch))
    return {name: statistics.median(values) for name, values in found.items()}


def once(fn: Callable[[], int]) -> float:
    """Items per second of one long operation that returns how many items it handled."""
    start = time.perf_counter()
    count = fn()
    return count / (time.perf_counter() - start)


@contextmanager
def no_gc() -> Iterator[None]:
    """Bulk setup without collector passes over millions of young objects; then freeze them.

    The frozen objects are the data sets, the same for ours and the baseline; what the
    measured operations allocate is collected as usual.
    """
    gc.disable()
    try:
        yield
    finally:
        gc.collect()
        gc.freeze()
        gc.enable()


#: Linux's PM QoS interface: while a process holds it open with a request of 0 microseconds,
#: the CPUs stay out of idle states (they poll rather than halt).
_CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")


@contextmanager
def awake_cpus() -> Iterator[bool]:
    """Keep the CPUs out of idle states for the block, if the kernel lets us; yields whether.

    On a virtual machine, a CPU that halts while it waits for the database's answer takes
    tens of microseconds to wake (the guest's haltpoll driver polls only for a while first,
    adapting to recent waits). A round trip is then fast or slow by turns, in a pattern that
    depends on how much work the client does between queries, which differs between ours
    and the baseline. This is the standard remedy for latency measurements; the request is
    dropped when the file is closed, at the latest when the process exits.
    """
    try:
        fd = os.open(_CPU_DMA_LATENCY, os.O_WRONLY)
    except OSError:
        yield False
        return
    try:
        os.write(fd, struct.pack("i", 0))
        yield True
    finally:
        os.close(fd)


def machine() -> dict[str, Any]:
    """What the run ran on."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(terse=True),
    }


def table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table (also valid Markdown)."""
    header = ("row", "ours/s", "baseline/s", "ratio", "target", "")
    lines = [
        (
            row.name,
            f"{row.ours_per_s:,.0f}",
            f"{row.baseline_per_s:,.0f}",
            f"{row.ratio:.2f}",
            f">= {row.target:g}",
            "ok" if row.met else "MISSED",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def render(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([render(header), rule, *(render(line) for line in lines)])


def write_json(path: Path, rows: Sequence[Row], **fields: Any) -> None:
    """Write ``bench.json``: the rows, then every other field given."""
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {"rows": [row.as_json() for row in rows], **fields}
    path.write_text(json.dumps(document, indent=2, default=_jsonable) + "\n")


def _jsonable(value: object) -> object:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)  # type: ignore[call-overload]
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def each(fn: Callable[[Any], object]) -> Callable[[Sequence[Any]], None]:
    """A batch runner that calls ``fn`` once per item, with nothing else in the loop."""

    def run(batch: Sequence[Any]) -> None:
        for item in batch:
            fn(item)

    return run
