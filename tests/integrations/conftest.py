"""Fixtures of the adapter tests: the world of tokens, the table's rows, the answer check.

The example apps of ``docs/examples`` are importable by name (``flask_example``, ...), and
so is ``_answers``, the table and its world.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
EXAMPLES = HERE.parents[1] / "docs" / "examples"
for folder in (HERE, EXAMPLES):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from _answers import CASES, Expect, World, check_answer, make_world  # noqa: E402


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", CASES, ids=[case.name for case in CASES])


@pytest.fixture
def world() -> World:
    """A fresh world: a registry with a token of each kind, and a guard on it."""
    return make_world()


@pytest.fixture
def expect(world: World) -> Expect:
    """`check_answer` for this world's tokens."""
    return lambda case, status, headers, body: check_answer(world, case, status, headers, body)


@pytest.fixture(scope="session")
def django_settings() -> None:
    """Django's settings, configured once per process, as the example's.

    Outside the tests' own overrides, the guard is on an empty memory registry: nothing opens
    the example's default database file.
    """
    import django
    import django_example
    from django import conf  # conf.settings: a lazy module global trips doctest collection

    from appregistry.integrations import TokenGuard

    if not conf.settings.configured:
        fallback = TokenGuard.from_url("memory:", realm="example")
        conf.settings.configure(**{**django_example.SETTINGS, "APPREGISTRY_TOKEN_GUARD": fallback})
        django.setup()
