"""`appregistry serve`'s application on a real uvicorn server in a thread, and Chromium.

Shared by the browser tests and ``make screenshots``.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from appregistry import Registry
from appregistry.cli._serve import build_app

#: Chromium's switches for a headless run in a container, with nothing phoned home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str | None:
    """The system's Chromium (Debian's ``chromium`` package), or ``None``."""
    return shutil.which("chromium") or os.environ.get("APPREGISTRY_CHROMIUM")


@contextmanager
def serving(registry: Registry, **options: object) -> Iterator[str]:
    """``serve``'s app (with the development sign-in) on a free loopback port; its base URL."""
    app = build_app(registry, dev_sign_in=True, **options)  # type: ignore[arg-type]
    sock = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, ws="none")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("the test server did not start")
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
