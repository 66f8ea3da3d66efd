"""The PostgreSQL backend's counts of expired rows and its purge of ended grace secrets.

Kept apart from `_queries` (which renders these with its table names) so that module stays
readable. Every statement reads an expiry index (``appregistry_*_by_expiry``, or
``appregistry_apps_by_grace_deadline`` for the previous secrets), never the live rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import LiteralString


class PurgeQueries:
    """The statements, rendered once per storage like the rest of `_queries._Queries`."""

    __slots__ = ("code_count", "grace_count", "grace_purge", "refresh_count", "token_count")

    def __init__(
        self,
        render: Callable[[LiteralString], bytes],
        counted: Callable[[LiteralString], bytes],
    ) -> None:
        self.token_count = render("SELECT count(*) FROM {tokens} WHERE expires_at <= %s")
        self.code_count = render("SELECT count(*) FROM {codes} WHERE expires_at <= %s")
        self.refresh_count = render("SELECT count(*) FROM {refresh_tokens} WHERE expires_at <= %s")
        self.grace_count = render(
            "SELECT count(*) FROM {apps} WHERE previous_secret_valid_until <= %s"
        )
        # As the purges of tokens do: rows another transaction holds (a rotation, an issue
        # reading the app) are skipped, to be cleared by the next batch or the next purge.
        self.grace_purge = counted(
            """UPDATE {apps} SET previous_secret_digest = NULL,
                                 previous_secret_valid_until = NULL
               WHERE app_key IN (
                   SELECT app_key FROM {apps} WHERE previous_secret_valid_until <= %s
                   LIMIT %s FOR UPDATE SKIP LOCKED)"""
        )
