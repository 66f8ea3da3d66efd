"""What the endpoints count on `appregistry.metrics.Metrics` once a request is answered."""

from __future__ import annotations

import urllib.parse

from ..metrics import Metrics
from ._http import _Request, _Response, error_code
from ._throttle import presented_keys

__all__ = ["observe"]


def observe(
    metrics: Metrics, endpoint: str, request: _Request, response: _Response, seconds: float
) -> None:
    """Record the latency of ``request``, and at the token endpoint its grant and outcome.

    The grant type and outcome are bounded by `Metrics` (anything unknown is ``other``);
    the app is named only for an issued token, whose client has authenticated.
    """
    metrics.observe(endpoint, seconds)
    if endpoint != "token":
        return
    try:
        form = urllib.parse.parse_qsl(request.body.decode("ascii"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        form = []
    grant_type = next((value for name, value in form if name == "grant_type"), "")
    if response.status == 200:
        keys = presented_keys(request)
        metrics.grant(grant_type, "issued", keys[0] if len(keys) == 1 else None)
    elif response.status == 429:
        metrics.grant(grant_type, "throttled")
    else:
        metrics.grant(grant_type, error_code(response) or "other")
