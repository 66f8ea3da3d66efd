"""OAuth 2.0 over a `Registry`, through oauthlib: ``pip install 'appregistry[oauth2]'``.

oauthlib parses and orchestrates; the Registry authenticates, decides and makes every token.

- `make_wsgi_app`: the endpoints as one WSGI application, ready to mount in any WSGI server or
  framework: ``/oauth/authorize.php`` (the consent page), ``/oauth/token.php``,
  ``/oauth/revoke`` (RFC 7009), ``/oauth/introspect`` (RFC 7662),
  ``/.well-known/oauth-authorization-server`` (RFC 8414 metadata) and ``/uapi/me``, an
  example protected resource.
- `make_asgi_app`: the same endpoints as one ASGI application (Starlette, from the ``web``
  extra): one implementation, two transports.
- `endpoint_paths`: where each endpoint is below a mount point (``/oauth/token.php`` at the
  root, and mounted at ``/oauth`` too).
- `Throttling`: how the endpoints throttle failed client authentication (429 with
  ``Retry-After``), per app key and client address, in memory or shared through Redis.
- `make_server`: the configured oauthlib server, for hosts that route requests themselves.
- `RegistryValidator`: the oauthlib ``RequestValidator`` under them all.
- `EscapeControlCharacters`: the logging filter that keeps request values in log lines on
  their line; the endpoints put it on appregistry's and oauthlib's loggers.

``import appregistry`` never imports this package, nor oauthlib; this package imports
Starlette only when `make_asgi_app` is called.

>>> from appregistry import Registry
>>> from appregistry.storage.memory import MemoryStorage
>>> from appregistry.oauth2 import make_wsgi_app, SignedInUser
>>> registry = Registry(storage=MemoryStorage())
>>> app = make_wsgi_app(registry, current_user=lambda environ: SignedInUser("acme", "alice"))
"""

from ._asgi import make_asgi_app
from ._consent import (
    CONSENT_LIFETIME,
    ConsentPage,
    ConsentRequest,
    default_consent_page,
)
from ._endpoints import server_metadata
from ._http import (
    AUTHORIZE_PATH,
    DEFAULT_MAX_BODY_SIZE,
    INTROSPECT_PATH,
    ME_PATH,
    METADATA_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
    endpoint_paths,
)
from ._logging import EscapeControlCharacters
from ._server import MAX_STATE_LENGTH, MIN_STATE_LENGTH, RegistryServer, make_server
from ._throttle import Throttling
from ._validator import AuthenticatedClient, RegistryValidator, SignedInUser
from ._wsgi import CurrentUser, bearer_token, make_wsgi_app

__all__ = [
    "AUTHORIZE_PATH",
    "CONSENT_LIFETIME",
    "DEFAULT_MAX_BODY_SIZE",
    "INTROSPECT_PATH",
    "MAX_STATE_LENGTH",
    "METADATA_PATH",
    "ME_PATH",
    "MIN_STATE_LENGTH",
    "REVOKE_PATH",
    "TOKEN_PATH",
    "AuthenticatedClient",
    "ConsentPage",
    "ConsentRequest",
    "CurrentUser",
    "EscapeControlCharacters",
    "RegistryServer",
    "RegistryValidator",
    "SignedInUser",
    "Throttling",
    "bearer_token",
    "default_consent_page",
    "endpoint_paths",
    "make_asgi_app",
    "make_server",
    "make_wsgi_app",
    "server_metadata",
]
