"""``/uapi/me`` of the OAuth endpoints answers every row of the bearer table as the adapters do.

The endpoints parse and check the token with the integrations' `TokenGuard`, so a request
gets the same RFC 6750 answer from ``/uapi/me`` (WSGI and ASGI) as from any framework adapter.
"""

from __future__ import annotations

from _answers import REALM, Case, Expect, World
from starlette.testclient import TestClient

from _oauth import WsgiClient
from appregistry.oauth2 import make_asgi_app, make_wsgi_app


class TestTable:
    """Each row of ``tests/data/bearer_answers.csv``, sent to ``/uapi/me``."""

    def test_wsgi(self, case: Case, world: World, expect: Expect) -> None:
        app = make_wsgi_app(world.registry, current_user=lambda environ: None, realm=REALM)
        joined = case.joined(world.tokens)
        answer = WsgiClient(app).get(
            "/uapi/me",
            query=case.query_string(world.tokens),
            headers={"Authorization": joined} if joined is not None else {},
        )
        expect(case, answer.status, answer.headers.items(), answer.text)

    def test_asgi(self, case: Case, world: World, expect: Expect) -> None:
        app = make_asgi_app(world.registry, current_user=lambda request: None, realm=REALM)
        # Repeated headers are sent as such, not joined: the endpoints must see both.
        headers = [("Authorization", value) for value in case.headers(world.tokens)]
        query = case.query_string(world.tokens)
        with TestClient(app, base_url="https://auth.example") as client:
            answer = client.get("/uapi/me" + (f"?{query}" if query else ""), headers=headers)
        expect(case, answer.status_code, answer.headers.multi_items(), answer.text)
