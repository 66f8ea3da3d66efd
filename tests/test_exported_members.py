"""The facade's public names: pinned, importable, and nothing private leaking through."""

from __future__ import annotations

import importlib
import types

import appregistry
import appregistry.errors

# Changing this list changes the public API: update CHANGELOG.md with it.
EXPECTED = [
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
    "UNSET",
    "ValidationError",
    "display_url",
    "open_registry",
    "search_text",
]

#: Submodules that are public API in their own right; the package binds them as attributes.
PUBLIC_SUBMODULES = {
    "cli",
    "errors",
    "integrations",
    "metrics",
    "oauth2",
    "ports",
    "storage",
    "testing",
    "web",
}


class TestExportedMembers:
    """``appregistry.__all__`` is pinned and every name in it is real and public."""

    def test_all_is_pinned(self) -> None:
        assert EXPECTED == sorted(appregistry.__all__)

    def test_no_duplicates(self) -> None:
        assert len(set(appregistry.__all__)) == len(appregistry.__all__)

    def test_every_name_is_importable(self) -> None:
        module = importlib.import_module("appregistry")
        missing = [name for name in appregistry.__all__ if not hasattr(module, name)]
        assert [] == missing

    def test_star_import_gives_exactly_all(self) -> None:
        namespace: dict[str, object] = {}
        exec("from appregistry import *", namespace)  # noqa: S102 - a fixed statement
        assert EXPECTED == sorted(k for k in namespace if k != "__builtins__")

    def test_no_private_or_module_names_are_exported(self) -> None:
        leaked = [
            name
            for name in appregistry.__all__
            if name.startswith("_") or isinstance(getattr(appregistry, name), types.ModuleType)
        ]
        assert [] == leaked

    def test_public_attributes_are_all_or_public_submodules(self) -> None:
        public = {name for name in vars(appregistry) if not name.startswith("_")}
        extra = public - set(appregistry.__all__)
        assert set() == extra - PUBLIC_SUBMODULES
        assert all(isinstance(getattr(appregistry, name), types.ModuleType) for name in extra)

    def test_every_error_is_reexported(self) -> None:
        assert set() == set(appregistry.errors.__all__) - set(appregistry.__all__)

    def test_exported_objects_come_from_appregistry(self) -> None:
        foreign = [
            name
            for name in appregistry.__all__
            if isinstance(getattr(appregistry, name), type)
            and not getattr(appregistry, name).__module__.startswith("appregistry")
        ]
        assert [] == foreign
