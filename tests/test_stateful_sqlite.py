"""The model-based test of tests/test_stateful.py, run on SQLite files."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from appregistry.storage.sqlite import SQLiteStorage
from test_stateful import make_machine

_folder: list[Path] = []
_numbers = itertools.count()


@pytest.fixture(autouse=True)
def _sqlite_folder(tmp_path: Path) -> Iterator[None]:
    # Each generated run gets a new file in this test's temporary folder.
    _folder.append(tmp_path)
    yield
    _folder.remove(tmp_path)


def _fresh_sqlite() -> SQLiteStorage:
    return SQLiteStorage(_folder[-1] / f"model-{next(_numbers)}.sqlite3")


TestSQLiteStorageAgreesWithModel = make_machine(
    _fresh_sqlite, name="SQLite", max_examples=60, stateful_step_count=30
)
