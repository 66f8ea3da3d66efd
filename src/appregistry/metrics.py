"""Prometheus metrics of the HTTP side: token checks, grants, throttling, latency, purges.

``pip install 'appregistry[metrics]'`` (`prometheus_client`). Nothing here runs unless a
`Metrics` is made and handed to the places that count: `make_wsgi_app` / `make_asgi_app`
(``metrics=``), `TokenGuard` (``metrics=``; ``/uapi/me`` checks through one), and
`Registry.purge_expired_tokens` (``progress=metrics.purge_progress``).
`Registry.check_token` itself counts nothing: it is the hot path, and the HTTP layers
around it count once per request instead.

Why prometheus_client rather than the OpenTelemetry API: ``appregistry serve --metrics``
must answer Prometheus' scrape by itself, and the OpenTelemetry API records nothing until
an SDK and an exporter are installed and configured; prometheus_client is one small,
dependency-free package that both records and exposes. An OpenTelemetry deployment can
still scrape ``/metrics`` with its Prometheus receiver.

Every label takes its values from a fixed vocabulary (`ENDPOINTS`, `GRANT_TYPES`,
`GRANT_OUTCOMES`, `CHECK_REASONS`, `THROTTLE_SCOPES`): anything else a
client sends becomes ``other``, so a client cannot grow the series or put a value of its
own (a token, a secret) into a label. The opt-in ``app`` label (``per_app=True``) names an
app only once the registry has authenticated it or found its token: a key a client merely
presented is never a label.

>>> from prometheus_client import generate_latest
>>> metrics = Metrics()
>>> metrics.token_checked("token_expired")
>>> b'appregistry_token_checks_total{reason="token_expired"} 1.0' in generate_latest(
...     metrics.registry)
True
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Final

from ._policy import Reason

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "CHECK_REASONS",
    "ENDPOINTS",
    "GRANT_OUTCOMES",
    "GRANT_TYPES",
    "LATENCY_BUCKETS",
    "THROTTLE_SCOPES",
    "Metrics",
]

#: The ``endpoint`` label's values: the OAuth endpoints by name; ``other`` for any path else.
ENDPOINTS: Final = frozenset(
    {"authorize", "token", "revoke", "introspect", "me", "metadata", "other"}
)
#: The ``grant_type`` label's values.
GRANT_TYPES: Final = frozenset(
    {"authorization_code", "client_credentials", "refresh_token", "other"}
)
#: The ``outcome`` label's values: ``issued``, ``throttled``, or the OAuth error code.
GRANT_OUTCOMES: Final = frozenset(
    {
        "issued",
        "throttled",
        "invalid_request",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
        "unsupported_grant_type",
        "invalid_scope",
        "server_error",
        "temporarily_unavailable",
        "other",
    }
)
#: The ``reason`` label's values for token checks: the built-in `Reason` codes, the
#: storage being down, and ``other`` for a host rule's own codes.
CHECK_REASONS: Final = frozenset(
    {*(str(reason) for reason in Reason), "storage_unavailable", "other"}
)
#: What a throttled request was over budget on: its app key or its client address.
THROTTLE_SCOPES: Final = frozenset({"key", "address"})
#: Histogram buckets for the endpoints' latency, in seconds: token requests hash a secret
#: (milliseconds), the consent page may wait on storage.
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _bounded(value: str, allowed: Iterable[str]) -> str:
    return value if value in allowed else "other"


class Metrics:
    """appregistry's metrics, registered on one `prometheus_client.CollectorRegistry`.

    Args:
        registry: Where to register them: by default a new ``CollectorRegistry`` of their
            own (read it from `registry` to expose it). Pass ``prometheus_client.REGISTRY``
            to put them beside your process's other metrics; make one `Metrics` per
            registry, as Prometheus refuses a metric registered twice.
        per_app: Add an ``app`` label (the app key) to token checks and grants. Off by
            default: a label per app multiplies the series by the number of apps.
        namespace: The metrics' name prefix.

    Raises:
        ImportError: prometheus_client is not installed.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        per_app: bool = False,
        namespace: str = "appregistry",
    ) -> None:
        try:
            import prometheus_client as prom  # noqa: PLC0415 - the metrics extra
        except ImportError as exc:
            raise ImportError(
                "Metrics needs prometheus_client: pip install 'appregistry[metrics]'"
            ) from exc
        self.registry: CollectorRegistry = (
            registry if registry is not None else prom.CollectorRegistry()
        )
        self.per_app = per_app
        app = ("app",) if per_app else ()
        self._checks = prom.Counter(
            "token_checks",
            "Bearer token checks of HTTP requests (TokenGuard, /uapi/me), by decision reason.",
            ("reason", *app),
            namespace=namespace,
            registry=self.registry,
        )
        self._grants = prom.Counter(
            "grants",
            "Token endpoint requests, by grant type and outcome.",
            ("grant_type", "outcome", *app),
            namespace=namespace,
            registry=self.registry,
        )
        self._auth_failures = prom.Counter(
            "client_authentication_failures",
            "Failed client authentications (or invalid client links at authorize), by endpoint.",
            ("endpoint",),
            namespace=namespace,
            registry=self.registry,
        )
        self._throttled = prom.Counter(
            "throttled_requests",
            "Requests refused with 429 before any credential was checked.",
            ("endpoint", "scope"),
            namespace=namespace,
            registry=self.registry,
        )
        self._throttle_errors = prom.Counter(
            "throttle_storage_errors",
            "Throttle storage (Redis) failures; the throttle then counts in process memory.",
            (),
            namespace=namespace,
            registry=self.registry,
        )
        self._latency = prom.Histogram(
            "request_duration_seconds",
            "Time to answer a request at the OAuth endpoints, by endpoint.",
            ("endpoint",),
            buckets=LATENCY_BUCKETS,
            namespace=namespace,
            registry=self.registry,
        )
        self._purged = prom.Counter(
            "purged_tokens",
            "Expired rows deleted by purges: access tokens, codes, refresh tokens, grace secrets.",
            (),
            namespace=namespace,
            registry=self.registry,
        )
        self._purge_batches = prom.Counter(
            "purge_batches",
            "Purge transactions committed.",
            (),
            namespace=namespace,
            registry=self.registry,
        )
        self._purge_last = prom.Gauge(
            "purge_last_batch_timestamp_seconds",
            "When the latest purge batch committed (Unix time).",
            (),
            namespace=namespace,
            registry=self.registry,
        )

    def _app(self, app_key: str | None) -> tuple[str, ...]:
        if not self.per_app:
            return ()
        return (app_key or "",)

    def token_checked(self, reason: str, app_key: str | None = None) -> None:
        """Count one token check of an HTTP request by its decision's reason.

        ``app_key`` is the app of the token the registry found (never a presented value).
        """
        self._checks.labels(_bounded(str(reason), CHECK_REASONS), *self._app(app_key)).inc()

    def grant(self, grant_type: str, outcome: str, app_key: str | None = None) -> None:
        """Count one token endpoint request; ``app_key`` only once the app authenticated."""
        self._grants.labels(
            _bounded(grant_type, GRANT_TYPES), _bounded(outcome, GRANT_OUTCOMES),
            *self._app(app_key),
        ).inc()  # fmt: skip

    def authentication_failed(self, endpoint: str) -> None:
        """Count one failed client authentication at ``endpoint``."""
        self._auth_failures.labels(_bounded(endpoint, ENDPOINTS)).inc()

    def throttled(self, endpoint: str, scope: str) -> None:
        """Count one request refused by the throttle, by what was over budget."""
        self._throttled.labels(
            _bounded(endpoint, ENDPOINTS), _bounded(scope, THROTTLE_SCOPES)
        ).inc()

    def throttle_storage_failed(self) -> None:
        """Count one failure of the throttle's shared storage."""
        self._throttle_errors.inc()

    def observe(self, endpoint: str, seconds: float) -> None:
        """Record how long a request to ``endpoint`` took to answer."""
        self._latency.labels(_bounded(endpoint, ENDPOINTS)).observe(seconds)

    def purge_progress(self, purged: int) -> None:
        """The progress callback of `Registry.purge_expired_tokens`: one batch committed.

        >>> from appregistry import Registry
        >>> from appregistry.storage.memory import MemoryStorage
        >>> metrics = Metrics()
        >>> Registry(storage=MemoryStorage()).purge_expired_tokens(progress=metrics.purge_progress)
        PurgeCounts(tokens=0, refresh_tokens=0, codes=0, grace_secrets=0)
        >>> metrics.registry.get_sample_value("appregistry_purge_batches_total")
        1.0
        """
        self._purged.inc(purged)
        self._purge_batches.inc()
        self._purge_last.set_to_current_time()
