"""The public names of `appregistry.integrations` and its adapters, and what each imports."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

# Changing these lists changes the public API: update CHANGELOG.md with them.
EXPECTED = {
    "appregistry.integrations": [
        "DEFAULT_REALM",
        "IDENTITY_KEY",
        "QUERY_TOKEN_PARAMETER",
        "BearerError",
        "TokenGuard",
        "TokenIdentity",
        "add_vary",
        "read_bearer_token",
    ],
    "appregistry.integrations.wsgi": ["ENVIRON_KEY", "TokenMiddleware", "identity_from"],
    "appregistry.integrations.asgi": ["TokenMiddleware", "identity_from"],
    "appregistry.integrations.flask": [
        "EXTENSION_KEY",
        "get_guard",
        "identity_from",
        "init_app",
        "require_token",
    ],
    "appregistry.integrations.django": [
        "SETTING",
        "get_guard",
        "identity_from",
        "require_token",
        "token_middleware",
    ],
    "appregistry.integrations.fastapi": ["DEFAULT_SCHEME_NAME", "TokenBearer", "require_token"],
    "appregistry.integrations.starlette": [
        "TokenAuthenticationMiddleware",
        "TokenBackend",
        "TokenRefused",
        "TokenUser",
        "identity_from",
        "on_error",
        "require_token",
    ],
}
FRAMEWORKS = ("flask", "django", "fastapi", "starlette", "anyio", "werkzeug")


class TestExports:
    """Every module's ``__all__`` is pinned, and every name in it is real."""

    @pytest.mark.parametrize("name", sorted(EXPECTED))
    def test_all_is_pinned(self, name: str) -> None:
        module = importlib.import_module(name)
        assert sorted(EXPECTED[name]) == sorted(module.__all__)
        assert [] == [item for item in module.__all__ if not hasattr(module, item)]

    @pytest.mark.parametrize("name", ["appregistry.integrations", "appregistry.integrations.wsgi"])
    def test_imports_no_framework(self, name: str) -> None:
        code = f"import sys, {name}; print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))"
        found = subprocess.run(  # noqa: S603 - a fixed statement
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "[]" == found.stdout.strip()

    def test_import_appregistry_imports_no_integration(self) -> None:
        code = "import sys, appregistry; print('appregistry.integrations' in sys.modules)"
        found = subprocess.run(  # noqa: S603 - a fixed statement
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "False" == found.stdout.strip()
