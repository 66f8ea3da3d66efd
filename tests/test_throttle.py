"""Throttling of failed client authentication at the OAuth endpoints (docs/operations.md)."""

from __future__ import annotations

import base64
import ipaddress
import logging
import os
import secrets
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from _oauth import REDIRECT, SignIn, WsgiClient, register_apps
from appregistry import RegisteredApp, Registry
from appregistry._credentials import generate_key
from appregistry.oauth2 import TOKEN_PATH, Throttling, make_wsgi_app
from appregistry.oauth2._throttle import Throttle, client_address
from appregistry.storage.memory import MemoryStorage

REDIS_URL = "redis://127.0.0.1:6379/0"
AUTHORIZE = "/oauth/authorize.php"
SIGNED_IN = SignIn()


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def basic(key: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()}


class Peer:
    """A WSGI middleware that sets the connection's peer address (REMOTE_ADDR)."""

    def __init__(self, app: Any, address: str = "198.51.100.7") -> None:
        self.app = app
        self.address = address

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        environ["REMOTE_ADDR"] = self.address
        return self.app(environ, start_response)


def world(throttling: Throttling | None) -> tuple[WsgiClient, Peer, RegisteredApp, RegisteredApp]:
    registry = Registry(storage=MemoryStorage())
    trusted, partner = register_apps(registry)
    other = registry.register_app(
        "acme",
        name="Other",
        homepage="https://other.example/",
        admin_email="admin@other.example",
        redirect_url=REDIRECT,
        trusted=True,
    )
    peer = Peer(
        make_wsgi_app(registry, current_user=lambda _environ: SIGNED_IN.user, throttling=throttling)
    )
    del partner
    return WsgiClient(peer), peer, trusted, other


def grant(client: WsgiClient, key: str, secret: str, **headers: str) -> Any:
    return client.post(
        TOKEN_PATH,
        body=[("grant_type", "client_credentials")],
        headers=basic(key, secret) | headers,
    )


@pytest.fixture
def redis_url() -> str:
    """The local Redis (skipped when unreachable, except under CI=true, where it fails)."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if _in_ci():
            pytest.fail("Redis is not reachable on 127.0.0.1:6379; under CI=true it must be")
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    return REDIS_URL


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    name = f"appregistry-test-{uuid.uuid4().hex}"
    yield name
    Throttle(Throttling(redis_url=redis_url, key_prefix=name)).clear()


class TestInMemory:
    def test_a_brute_force_on_one_key_is_stopped_and_other_apps_go_on(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        client, _, victim, other = world(Throttling(key_failures="5/minute"))
        wrong = [secrets.token_urlsafe(24) for _ in range(40)]
        caplog.set_level(logging.INFO, "appregistry")
        statuses = []
        for guess in wrong:
            statuses.append(grant(client, victim.app.key, guess).status)
            assert 200 == grant(client, other.app.key, other.secret).status
        assert [401] * 5 + [429] * 35 == statuses
        # Over budget, the right secret is refused too: it is never checked.
        refused = grant(client, victim.app.key, victim.secret)
        assert 429 == refused.status
        assert "invalid_request" == refused.json()["error"]
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        logged = caplog.text
        assert victim.app.key in logged
        assert "198.51.100.7" in logged
        assert not any(guess in logged for guess in wrong)
        assert victim.secret not in logged

    def test_retry_after_counts_down_to_the_oldest_failure(self) -> None:
        client, _, victim, _ = world(Throttling(key_failures="2/hour"))
        for _ in range(2):
            assert 401 == grant(client, victim.app.key, "wrong").status
        answer = grant(client, victim.app.key, "wrong")
        assert 429 == answer.status
        assert 3590 <= int(answer.headers["Retry-After"]) <= 3600
        assert answer.headers["Retry-After"] in answer.json()["error_description"]

    def test_revocation_and_introspection_count_too(self) -> None:
        client, _, victim, _ = world(Throttling(key_failures="3/minute"))
        answers = []
        for path in ("/oauth/revoke", "/oauth/introspect", "/oauth/revoke", "/oauth/introspect"):
            body = [("token", "x" * 44)]
            answers.append(client.post(path, body=body, headers=basic(victim.app.key, "w")).status)
        assert [401, 401, 401, 429] == answers

    def test_a_key_scan_from_one_address_is_stopped_by_address(self) -> None:
        client, peer, _, other = world(
            Throttling(key_failures="5/minute", address_failures="8/minute")
        )
        statuses = [grant(client, generate_key(), "wrong").status for _ in range(12)]
        assert [401] * 8 + [429] * 4 == statuses
        # The scanner's address is refused for every app; another address is not.
        assert 429 == grant(client, other.app.key, other.secret).status
        peer.address = "203.0.113.50"
        assert 200 == grant(client, other.app.key, other.secret).status

    def test_invalid_authorization_links_count_by_address(self) -> None:
        client, _, _, _ = world(Throttling(address_failures="3/minute"))
        query = [("response_type", "code"), ("client_id", generate_key()), ("state", "s" * 20)]
        statuses = [client.get(AUTHORIZE, query=query).status for _ in range(5)]
        assert [400, 400, 400, 429, 429] == statuses
        page = client.get(AUTHORIZE, query=query)
        assert page.headers["Content-Type"].startswith("text/html")
        assert "Retry-After" in page.headers

    def test_successes_cost_no_budget(self) -> None:
        client, _, victim, _ = world(Throttling(key_failures="3/minute"))
        for _ in range(10):
            assert 200 == grant(client, victim.app.key, victim.secret).status

    def test_off_when_none(self) -> None:
        client, _, victim, _ = world(None)
        assert {401} == {grant(client, victim.app.key, "wrong").status for _ in range(30)}

    def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(self) -> None:
        settings = Throttling(address_failures="3/minute", trusted_proxies=["10.0.0.0/8"])
        client, peer, _, other = world(settings)
        peer.address = "10.1.2.3"
        attacker = {"X-Forwarded-For": "192.0.2.66, 10.9.9.9"}
        for _ in range(3):
            assert 401 == grant(client, generate_key(), "wrong", **attacker).status
        assert 429 == grant(client, other.app.key, other.secret, **attacker).status
        # The same proxy, another client: not throttled.
        honest = {"X-Forwarded-For": "192.0.2.77"}
        assert 200 == grant(client, other.app.key, other.secret, **honest).status

    def test_a_client_cannot_forge_its_address(self) -> None:
        client, peer, _, _ = world(Throttling(address_failures="3/minute"))
        for n in range(6):
            forged = {"X-Forwarded-For": f"192.0.2.{n}"}
            answer = grant(client, generate_key(), "wrong", **forged)
        assert 429 == answer.status
        del peer

    def test_settings_are_checked(self) -> None:
        with pytest.raises(ValueError, match="key_failures"):
            Throttling(key_failures="lots")
        with pytest.raises(ValueError, match="trusted_proxies"):
            Throttling(trusted_proxies=["not a network"])


_NETWORKS = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8")]
trusted_hops = st.builds(
    lambda n: str(ipaddress.ip_address(int(ipaddress.ip_address("10.0.0.0")) + n)),
    st.integers(0, 2**24 - 1),
)
public_v4 = st.ip_addresses(v=4).filter(lambda a: a.is_global).map(str)
public_v6 = st.ip_addresses(v=6).filter(lambda a: a.is_global and a.ipv4_mapped is None).map(str)
junk = st.text(max_size=40).filter(lambda t: "," not in t)


class TestClientAddress:
    @given(peer=public_v4 | public_v6, header=st.none() | st.text(max_size=200))
    def test_an_untrusted_peer_is_the_client_whatever_it_sends(
        self, peer: str, header: str | None
    ) -> None:
        assert str(ipaddress.ip_address(peer)) == client_address(peer, header, _NETWORKS)

    @given(
        client=public_v4 | public_v6,
        forged=st.lists(junk | public_v4, max_size=5),
        hops=st.lists(trusted_hops, max_size=5),
        peer=trusted_hops,
    )
    def test_behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client(
        self, client: str, forged: list[str], hops: list[str], peer: str
    ) -> None:
        # Whatever the client wrote itself, left of what the proxies appended, is ignored.
        header = ", ".join([*forged, client, *hops])
        assert str(ipaddress.ip_address(client)) == client_address(peer, header, _NETWORKS)

    @given(hops=st.lists(trusted_hops, min_size=1, max_size=5), peer=trusted_hops)
    def test_when_every_hop_is_trusted_the_leftmost_is_the_client(
        self, hops: list[str], peer: str
    ) -> None:
        assert hops[0] == client_address(peer, ", ".join(hops), _NETWORKS)

    def test_forms_proxies_write(self) -> None:
        proxies = [ipaddress.ip_network("127.0.0.1/32")]
        assert "2001:db8::1" == client_address("127.0.0.1", "[2001:db8::1]:443", proxies)
        assert "192.0.2.1" == client_address("127.0.0.1", "192.0.2.1:5555", proxies)
        assert "192.0.2.1" == client_address("::ffff:127.0.0.1", "::ffff:192.0.2.1", proxies)
        assert "127.0.0.1" == client_address("127.0.0.1", "1.2.3.4, garbage", proxies)
        assert client_address(None, "1.2.3.4", proxies) is None
        assert client_address("not-an-address", "1.2.3.4", proxies) is None

    def test_ipv6_clients_are_counted_per_64(self) -> None:
        throttle = Throttle(Throttling())
        from appregistry.oauth2._http import _Request

        def request(address: str) -> _Request:
            return _Request("POST", "", TOKEN_PATH, "https", "h", "", {}, client=address)

        assert "2001:db8:1:2::/64" == throttle.address_of(request("2001:db8:1:2:aaaa::1"))
        assert throttle.address_of(request("2001:db8:1:2::9")) == throttle.address_of(
            request("2001:db8:1:2:ffff::1")
        )


class TestRedis:
    def test_two_apps_share_one_budget(self, redis_url: str, prefix: str) -> None:
        settings = Throttling(key_failures="4/minute", redis_url=redis_url, key_prefix=prefix)
        registry = Registry(storage=MemoryStorage())
        trusted, _ = register_apps(registry)
        # Two apps over one registry, as two workers would be: each its own Throttle.
        workers = [
            WsgiClient(
                Peer(
                    make_wsgi_app(
                        registry, current_user=lambda _environ: SIGNED_IN.user, throttling=settings
                    )
                )
            )
            for _ in range(2)
        ]
        statuses = [grant(workers[n % 2], trusted.app.key, "wrong").status for n in range(8)]
        assert [401] * 4 + [429] * 4 == statuses

    def test_when_redis_is_down_each_process_counts_alone(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        down = Throttling(key_failures="3/minute", redis_url=f"redis://:pw-xyz@127.0.0.1:{port}/0")
        client, _, victim, other = world(down)
        with caplog.at_level(logging.WARNING, "appregistry"):
            statuses = [grant(client, victim.app.key, "wrong").status for _ in range(5)]
            assert 200 == grant(client, other.app.key, other.secret).status
        assert [401, 401, 401, 429, 429] == statuses
        assert "cannot be reached" in caplog.text
        assert "pw-xyz" not in caplog.text
