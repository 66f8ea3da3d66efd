"""Prometheus metrics (appregistry.metrics), and ``serve`` workers sharing a Redis throttle."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from _oauth import REDIRECT, WsgiClient, register_apps
from _support import APP_FIELDS
from appregistry import Registry, open_registry
from appregistry.integrations import BearerError, TokenGuard
from appregistry.metrics import (
    CHECK_REASONS,
    ENDPOINTS,
    GRANT_OUTCOMES,
    GRANT_TYPES,
    THROTTLE_SCOPES,
    Metrics,
)
from appregistry.oauth2 import ME_PATH, TOKEN_PATH, Throttling, make_wsgi_app
from appregistry.oauth2._throttle import DEFAULT_KEY_FAILURES, Throttle
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import ManualClock
from test_throttle import Peer, basic, grant

REDIS_URL = "redis://127.0.0.1:6379/0"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def labels_of(metrics: Metrics) -> list[dict[str, str]]:
    return [
        dict(sample.labels)
        for family in metrics.registry.collect()
        for sample in family.samples
        if family.name.startswith("appregistry")
    ]


def value(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# Every label's vocabulary; "app" holds only the keys of apps the test registered.
_VOCABULARY = {
    "endpoint": ENDPOINTS,
    "grant_type": GRANT_TYPES,
    "outcome": GRANT_OUTCOMES,
    "reason": CHECK_REASONS,
    "scope": THROTTLE_SCOPES,
}


class TestEndpointMetrics:
    def world(self, **options: Any) -> tuple[WsgiClient, Metrics, Any, Any]:
        registry = Registry(storage=MemoryStorage())
        trusted, partner = register_apps(registry)
        metrics = Metrics(**options)
        app = make_wsgi_app(
            registry,
            current_user=lambda _environ: None,
            throttling=Throttling(key_failures="5/minute"),
            metrics=metrics,
        )
        return WsgiClient(Peer(app)), metrics, trusted, partner

    def test_grants_refusals_and_throttling_are_counted(self) -> None:
        client, metrics, trusted, _ = self.world()
        for _ in range(3):
            assert 200 == grant(client, trusted.app.key, trusted.secret).status
        for _ in range(8):
            grant(client, trusted.app.key, "wrong")
        token = grant(client, trusted.app.key, "wrong")
        assert 429 == token.status
        ok = ("appregistry_grants_total", {"grant_type": "client_credentials"})
        assert 3 == value(metrics, ok[0], **ok[1], outcome="issued")
        assert 5 == value(metrics, ok[0], **ok[1], outcome="invalid_client")
        assert 4 == value(metrics, ok[0], **ok[1], outcome="throttled")
        assert 4 == value(
            metrics, "appregistry_throttled_requests_total", endpoint="token", scope="key"
        )
        assert 5 == value(
            metrics, "appregistry_client_authentication_failures_total", endpoint="token"
        )
        assert 12 == value(metrics, "appregistry_request_duration_seconds_count", endpoint="token")

    def test_me_counts_check_decisions_by_reason(self) -> None:
        client, metrics, trusted, _ = self.world(per_app=True)
        issued = grant(client, trusted.app.key, trusted.secret).json()["access_token"]
        assert 200 == client.get(ME_PATH, headers={"Authorization": f"Bearer {issued}"}).status
        assert 401 == client.get(ME_PATH, headers={"Authorization": "Bearer nope"}).status
        name = "appregistry_token_checks_total"
        assert 1 == value(metrics, name, reason="allowed", app=trusted.app.key)
        assert 1 == value(metrics, name, reason="token_unknown", app="")

    @settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    @given(
        client_id=st.text(min_size=8, max_size=40),
        secret=st.text(min_size=8, max_size=40),
        grant_type=st.text(max_size=30),
        token=st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=8),
    )
    def test_labels_never_hold_what_clients_send(
        self, client_id: str, secret: str, grant_type: str, token: str
    ) -> None:
        client, metrics, trusted, partner = self.world(per_app=True)
        body = [("grant_type", grant_type), ("client_id", client_id), ("client_secret", secret)]
        client.post(TOKEN_PATH, body=body)
        client.post(TOKEN_PATH, body=[("grant_type", grant_type)], headers=basic(client_id, secret))
        client.post(TOKEN_PATH, body=[("grant_type", "client_credentials")],
                    headers=basic(trusted.app.key, secret))  # fmt: skip
        client.get(ME_PATH, headers={"Authorization": f"Bearer {token}"})
        client.post("/oauth/introspect", body=[("token", token)], headers=basic(client_id, secret))
        known_apps = {"", trusted.app.key, partner.app.key}
        for labels in labels_of(metrics):
            for name, label in labels.items():
                if name == "le":
                    continue
                allowed = known_apps if name == "app" else _VOCABULARY[name]
                assert label in allowed, (name, label)
                assert secret not in label
                assert token not in label
                assert trusted.secret not in label


def test_token_guard_counts_checks() -> None:
    metrics = Metrics()
    guard = TokenGuard(Registry(storage=MemoryStorage()), metrics=metrics)
    with pytest.raises(BearerError):
        guard.authenticate(["Bearer unknown-token"])
    assert 1 == value(metrics, "appregistry_token_checks_total", reason="token_unknown")


def test_purge_reports_progress_per_batch() -> None:
    clock = ManualClock()
    registry = Registry(storage=MemoryStorage(), clock=clock)
    trusted, _ = register_apps(registry)
    for _ in range(7):
        registry.issue_token(trusted.app.key, trusted.secret)
    clock.advance(timedelta(days=1))
    batches: list[int] = []
    metrics = Metrics()

    def progress(purged: int) -> None:
        batches.append(purged)
        metrics.purge_progress(purged)

    assert 7 == registry.purge_expired_tokens(batch_size=3, progress=progress).total
    assert [3, 3, 1] == batches
    assert 7 == value(metrics, "appregistry_purged_tokens_total")
    assert 3 == value(metrics, "appregistry_purge_batches_total")


# -- two `appregistry serve` processes on one Redis -------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        if _in_ci():
            pytest.fail("Redis is not reachable on 127.0.0.1:6379; under CI=true it must be")
        pytest.skip("Redis is not reachable on 127.0.0.1:6379")
    name = f"appregistry-test-{uuid.uuid4().hex}"
    yield name
    Throttle(Throttling(redis_url=REDIS_URL, key_prefix=name)).clear()


def _serve(database: Path, log: Path, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    # stderr goes to a file: a pipe nobody reads would fill up and stop the server.
    with log.open("wb") as sink:
        process = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "appregistry", "--database", f"sqlite:///{database}",
             "serve", "--port", "0", *options],
            stderr=sink,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = re.search(r"OAuth 2\.0 on (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.1)
    process.kill()
    pytest.fail(f"serve did not start: {log.read_text()}")


def _families(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "two processes on Redis"])
def test_a_brute_force_is_stopped_within_the_default_budget(
    tmp_path: Path, redis_prefix: str, workers: int
) -> None:
    """200 wrong secrets through `appregistry serve` with its default throttle settings."""
    database = tmp_path / "serve.sqlite3"
    with open_registry(f"sqlite:///{database}") as registry:
        registry.permit_account("acme", by="admin")
        victim = registry.register_app("acme", **APP_FIELDS, trusted=True)
        fields = {**APP_FIELDS, "name": "Bystander", "redirect_url": REDIRECT}
        bystander = registry.register_app("acme", **fields, trusted=True)
    options = ["--metrics"]
    if workers > 1:  # one budget for every process
        options += ["--throttle-redis", REDIS_URL, "--throttle-redis-prefix", redis_prefix]
    budget = int(DEFAULT_KEY_FAILURES.split("/")[0])  # failures per key: 20 in 10 minutes
    servers = [_serve(database, tmp_path / f"worker{n}.log", *options) for n in range(workers)]
    try:
        session = requests.Session()
        statuses = []
        for n in range(200):
            base = servers[n % workers][1]
            wrong = session.post(
                f"{base}{TOKEN_PATH}",
                data={"grant_type": "client_credentials"},
                auth=(victim.app.key, f"guess-{n}"),
                timeout=10,
            )
            statuses.append(wrong.status_code)
            if wrong.status_code == 429:
                assert 1 <= int(wrong.headers["Retry-After"]) <= 600
            if n % 10 == 0:
                ok = session.post(
                    f"{servers[(n + 1) % workers][1]}{TOKEN_PATH}",
                    data={"grant_type": "client_credentials"},
                    auth=(bystander.app.key, bystander.secret),
                    timeout=10,
                )
                assert 200 == ok.status_code
        assert [401] * budget + [429] * (200 - budget) == statuses
        scraped = [
            _families(session.get(f"{base}/metrics", timeout=10).text) for _, base in servers
        ]
    finally:
        for process, _ in servers:
            process.terminate()
            process.wait(timeout=20)
    logs = "".join((tmp_path / f"worker{n}.log").read_text() for n in range(workers))
    grants = "appregistry_grants_total"
    cc = ("grant_type", "client_credentials")
    totals = {
        outcome: sum(metrics.get((grants, (cc, ("outcome", outcome))), 0.0) for metrics in scraped)
        for outcome in ("invalid_client", "throttled", "issued")
    }
    assert {"invalid_client": budget, "throttled": 200 - budget, "issued": 20} == totals
    throttled = sum(
        metrics.get(
            ("appregistry_throttled_requests_total", (("endpoint", "token"), ("scope", "key"))),
            0.0,
        )
        for metrics in scraped
    )
    assert 200 - budget == throttled
    assert victim.app.key in logs
    assert "guess-" not in logs
    assert victim.secret not in logs
