"""Fixtures for the pages' route tests: a registry, the app, and a client that signs in.

Every test that takes ``web`` runs three times: the app at the root, mounted by a host under
``/manage``, and behind a proxy that passes ``root_path="/proxy"``; links and redirects must
hold in each (sqladmin #538, Starlette #3293).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from _web import Web, build_web

MOUNTS = {"root": "", "mounted": "/manage", "proxied": "/proxy"}


@pytest.fixture(params=list(MOUNTS))
def web(request: pytest.FixtureRequest) -> Iterator[Web]:
    """The pages on a memory registry, under each of the three mounts."""
    built = build_web(MOUNTS[request.param])
    with built.client:
        yield built


@pytest.fixture
def make_web() -> Callable[..., Web]:
    """Builds a `Web` at the root with options for `make_app` (and ``registry_options``)."""
    return lambda **options: build_web("", **options)
