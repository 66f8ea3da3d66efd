"""``check_asgi_memory``: token checks through the ASGI middleware, against direct checks.

The ASGI adapters never run a token check on the event loop: each one is handed to a worker
thread (``anyio.to_thread.run_sync``), since storage may block. This row measures what that
costs. Ours: HTTP requests through `appregistry.integrations.asgi.TokenMiddleware` (called as
a server calls it, without sockets), with `IN_FLIGHT` requests in flight at once on one event
loop. The baseline: the same checks, `Registry.check_token` called directly in a loop. Both
run on the memory backend, whose checks never block, so the row shows the hand-off alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
from anyio.from_thread import start_blocking_portal

from appregistry.integrations import TokenGuard
from appregistry.integrations.asgi import TokenMiddleware

from ._backends import Backend
from ._harness import Row, Sizes, rates

#: Requests in flight at once.
IN_FLIGHT = 100
#: ASGI checks per second over direct ones, at least. A guard against regressions, not a
#: goal: a thread hand-off costs about 50 direct memory checks (about 0.018 measured on a
#: 2-core virtual machine, where the middleware without the hand-off reaches 0.2; see
#: docs/embedding.md).
ASGI_TARGET = 0.01

Message = dict[str, Any]


async def _ok(scope: Message, receive: Any, send: Any) -> None:  # noqa: ARG001 - ASGI
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _drive(app: Any, tokens: Sequence[str], statuses: list[int]) -> None:
    """Send one request per token, ``IN_FLIGHT`` at a time; record each answer's status."""
    pending: Iterator[str] = iter(tokens)

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    async def client() -> None:
        # The tasks share one iterator: each takes the next token when its request is done.
        for token in pending:
            scope = {
                "type": "http",
                "method": "GET",
                "path": "/",
                "query_string": b"",
                "headers": [(b"authorization", b"Bearer " + token.encode())],
                "state": {},
            }
            await app(scope, _receive, send)

    async with anyio.create_task_group() as group:
        for _ in range(IN_FLIGHT):
            group.start_soon(client)


@contextmanager
def _asgi_batch(app: Any) -> Iterator[Callable[[Sequence[str]], None]]:
    """A batch runner on one event loop, in a thread of its own for the whole row."""
    with start_blocking_portal() as portal:

        def run(batch: Sequence[str]) -> None:
            statuses: list[int] = []
            portal.call(_drive, app, batch, statuses)
            if len(statuses) != len(batch) or set(statuses) != {204}:
                raise AssertionError("check_asgi: a valid sample token was refused")

        yield run


def asgi_row(bench: Backend, tokens: Sequence[str], sizes: Sizes) -> Row:
    """The ``check_asgi_memory`` row, on ``bench`` (the memory backend) and valid ``tokens``."""
    registry = bench.registry
    app = TokenMiddleware(_ok, TokenGuard(registry))

    def direct(batch: Sequence[str]) -> None:
        for token in batch:
            registry.check_token(token)

    with _asgi_batch(app) as asgi:
        # Longer rounds than the other rows: each round starts IN_FLIGHT tasks.
        found = rates(
            {"ours": asgi, "direct": direct},
            tokens,
            sizes=sizes,
            seconds=sizes.round_seconds * 10,
            rounds=max(2, sizes.rounds // 4),
        )
    return Row(
        f"check_asgi_{bench.name}",
        found["ours"],
        found["direct"],
        ASGI_TARGET,
        note=f"{IN_FLIGHT} requests in flight, each check in a worker thread, against direct",
    )
