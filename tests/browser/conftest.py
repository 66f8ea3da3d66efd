"""The browser suite: Playwright for Python drives Debian's Chromium against a live server.

It runs as its own pytest invocation (``make browser``): the main run leaves this folder
out (``norecursedirs``). Without Chromium the tests skip, except under ``CI=true``, where
they fail: ``make test`` installs it first.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from appregistry import Registry
from appregistry.storage.memory import MemoryStorage
from browser.live import CHROMIUM_ARGS, chromium, serving


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as running:
        yield running


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Debian's Chromium, headless."""
    path = chromium()
    if path is None:
        reason = "no chromium on PATH: apt-get install chromium (make chromium)"
        if _in_ci():
            pytest.fail(f"{reason}; under CI=true the browser tests must run", pytrace=False)
        pytest.skip(reason)
    launched = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture
def registry() -> Registry:
    """A fresh registry in memory for each test."""
    return Registry(storage=MemoryStorage())


@pytest.fixture
def base_url(registry: Registry) -> Iterator[str]:
    """``appregistry serve --dev-sign-in``'s app on ``registry``, on a free port."""
    with serving(registry) as url:
        yield url


@pytest.fixture
def page(browser: Browser, base_url: str) -> Iterator[Page]:
    """A new browser window (its own cookies), with relative URLs on the server."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    opened = context.new_page()
    yield opened
    context.close()
