"""Migrate DOT's database and create what the rows use; print it as JSON on stdout.

Two confidential client-credentials applications, one with DOT's default
``hash_client_secret=True`` (the secret stored as a Django password hash, PBKDF2) and one
with ``hash_client_secret=False``, and one live access token for the protected view.
"""

from __future__ import annotations

import json
import os
import secrets
from datetime import timedelta
from typing import Any

import django
from django.core.management import call_command

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.dot_project.settings")


def main() -> None:
    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    from django.utils import timezone  # noqa: PLC0415 - after django.setup()
    from oauth2_provider.models import (  # type: ignore[import-untyped] # noqa: PLC0415
        AccessToken,
        Application,
    )

    made: dict[str, Any] = {}
    for name, hashed in (("hashed", True), ("plain", False)):
        secret = secrets.token_urlsafe(32)
        app = Application.objects.create(
            name=f"bench-{name}",
            client_type=Application.CLIENT_CONFIDENTIAL,
            authorization_grant_type=Application.GRANT_CLIENT_CREDENTIALS,
            client_secret=secret,
            hash_client_secret=hashed,
        )
        made[name] = {"client_id": app.client_id, "secret": secret}
    token = secrets.token_urlsafe(32)
    AccessToken.objects.create(
        application=Application.objects.get(name="bench-plain"),
        token=token,
        expires=timezone.now() + timedelta(hours=1),
        scope="read write",
    )
    made["token"] = token
    print(json.dumps(made))


if __name__ == "__main__":
    main()
