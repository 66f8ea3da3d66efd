"""``appregistry.web.__all__`` is pinned; the package is imported only on demand."""

from __future__ import annotations

import subprocess
import sys

import appregistry.web

EXPECTED = [
    "CONTENT_SECURITY_POLICY",
    "DEFAULT_MAX_BODY_SIZE",
    "CurrentUser",
    "Role",
    "WebUser",
    "dev_session_user",
    "make_app",
]


class TestExported:
    """The public face of the pages is these names, each real."""

    def test_all_is_pinned(self) -> None:
        assert sorted(EXPECTED) == sorted(appregistry.web.__all__)

    def test_every_name_exists(self) -> None:
        assert [] == [n for n in appregistry.web.__all__ if not hasattr(appregistry.web, n)]

    def test_import_appregistry_does_not_import_starlette(self) -> None:
        code = "import sys, appregistry; print('starlette' in sys.modules)"
        result = subprocess.run(  # noqa: S603 - a fixed statement
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert "False" == result.stdout.strip()
