"""appregistry: third-party apps, their credentials and access tokens, and the policy on them.

The facade. Everything a host needs is importable from here; the modules behind it are
private. Storage backends live in `appregistry.storage`, test helpers in `appregistry.testing`.

>>> from appregistry import Registry
>>> from appregistry.storage.memory import MemoryStorage
>>> registry = Registry(storage=MemoryStorage())
>>> new = registry.register_app(
...     "acme", name="MyApp", homepage="http://bücher.example/MyApp",
...     admin_email="myapp@exämple.com", redirect_url="https://example.com/MyApp/handler",
...     trusted=True)
>>> _ = registry.permit_account("acme", by="admin")
>>> issued = registry.issue_token(new.app.key, new.secret, user_agent="libwww-perl 5.833")
>>> registry.check_token(issued.token).reason
<Reason.ALLOWED: 'allowed'>
"""

from ._open import open_registry
from ._policy import AccessRequest, Action, Decision, Policy, Reason, Rule
from ._records import (
    AccessToken,
    App,
    AppContext,
    AppListing,
    AppsPermission,
    AuthorizationCode,
    Event,
    EventKind,
    Grant,
    ImportedCredentials,
    Installation,
    InstallationListing,
    IssuedCode,
    IssuedToken,
    Page,
    RefreshToken,
    RegisteredApp,
    StoredSecret,
    TokenContext,
)
from ._registry import (
    UNSET,
    CheckCache,
    Clock,
    LastUse,
    Listener,
    PurgeCounts,
    Registry,
    TokenCheck,
)
from ._validation import display_url, search_text
from .errors import (
    AppNotFound,
    AppRegistryError,
    ConfigurationError,
    Denied,
    FieldProblem,
    InstallationNotFound,
    InvalidGrant,
    LimitExceeded,
    NotFound,
    SchemaError,
    SecretNotRetrievable,
    StorageError,
    StorageUnavailable,
    TokenNotFound,
    ValidationError,
)

__all__ = [
    "UNSET",
    "AccessRequest",
    "AccessToken",
    "Action",
    "App",
    "AppContext",
    "AppListing",
    "AppNotFound",
    "AppRegistryError",
    "AppsPermission",
    "AuthorizationCode",
    "CheckCache",
    "Clock",
    "ConfigurationError",
    "Decision",
    "Denied",
    "Event",
    "EventKind",
    "FieldProblem",
    "Grant",
    "ImportedCredentials",
    "Installation",
    "InstallationListing",
    "InstallationNotFound",
    "InvalidGrant",
    "IssuedCode",
    "IssuedToken",
    "LastUse",
    "LimitExceeded",
    "Listener",
    "NotFound",
    "Page",
    "Policy",
    "PurgeCounts",
    "Reason",
    "RefreshToken",
    "RegisteredApp",
    "Registry",
    "Rule",
    "SchemaError",
    "SecretNotRetrievable",
    "StorageError",
    "StorageUnavailable",
    "StoredSecret",
    "TokenCheck",
    "TokenContext",
    "TokenNotFound",
    "ValidationError",
    "display_url",
    "open_registry",
    "search_text",
]
