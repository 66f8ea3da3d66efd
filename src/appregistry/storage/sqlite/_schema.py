"""The SQLite schema: its migrations, their version, and the fills they need."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

from ._queries import _APP_COLUMNS, _app, _app_record

#: Marks a file as an appregistry database (``PRAGMA application_id``): "APRG" in ASCII.
APPLICATION_ID: Final = 0x41505247

# _MIGRATIONS[n] takes a database from schema version n to n + 1. Append, never edit: a
# released migration may already have run on someone's file.
_MIGRATIONS: Final[tuple[tuple[str, ...], ...]] = (
    (
        """
        CREATE TABLE apps (
            app_key TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            name_folded TEXT NOT NULL,
            search_text TEXT NOT NULL,
            homepage TEXT NOT NULL,
            admin_email TEXT NOT NULL,
            redirect_url TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            description TEXT,
            image_url TEXT,
            admin_phone TEXT,
            trusted INTEGER NOT NULL CHECK (trusted IN (0, 1)),
            enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
            secret_digest BLOB NOT NULL,
            secret_ciphertext BLOB
        )
        """,
        "CREATE INDEX apps_by_name ON apps (name_folded, app_key)",
        "CREATE INDEX apps_by_owner ON apps (owner, name_folded, app_key)",
        """
        CREATE TABLE permissions (
            account TEXT PRIMARY KEY,
            granted_by TEXT NOT NULL,
            granted_at INTEGER NOT NULL
        )
        """,
        """
        CREATE TABLE installations (
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            installed_by TEXT NOT NULL,
            installed_at INTEGER NOT NULL,
            suspended INTEGER NOT NULL CHECK (suspended IN (0, 1)),
            PRIMARY KEY (app_key, account)
        )
        """,
        "CREATE INDEX installations_by_account ON installations (account, app_key)",
        """
        CREATE TABLE tokens (
            token_id TEXT PRIMARY KEY,
            digest BLOB NOT NULL UNIQUE,
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            grant_type TEXT NOT NULL,
            issued_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            user_agent TEXT,
            search_text TEXT NOT NULL
        )
        """,
        # Counts, lists (ordered by expiry) and removals of one app on one account.
        "CREATE INDEX tokens_by_pair ON tokens (app_key, account, expires_at, token_id)",
        "CREATE INDEX tokens_by_expiry ON tokens (expires_at)",
    ),
    (
        # R13: keys of removed apps, so that they never authenticate again.
        "CREATE TABLE retired_keys (app_key TEXT PRIMARY KEY)",
        "ALTER TABLE tokens ADD COLUMN family_id TEXT",
        "CREATE INDEX tokens_by_family ON tokens (family_id) WHERE family_id IS NOT NULL",
        """
        CREATE TABLE codes (
            digest BLOB PRIMARY KEY,
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            redirect_url TEXT NOT NULL,
            approved_by TEXT NOT NULL,
            issued_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            code_challenge TEXT,
            code_challenge_method TEXT
        )
        """,
        "CREATE INDEX codes_by_pair ON codes (app_key, account)",
        "CREATE INDEX codes_by_expiry ON codes (expires_at)",
        """
        CREATE TABLE refresh_tokens (
            token_id TEXT PRIMARY KEY,
            digest BLOB NOT NULL UNIQUE,
            family_id TEXT NOT NULL,
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            grant_type TEXT NOT NULL,
            issued_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            rotated_at INTEGER
        )
        """,
        "CREATE INDEX refresh_tokens_by_family ON refresh_tokens (family_id)",
        "CREATE INDEX refresh_tokens_by_pair ON refresh_tokens (app_key, account)",
        "CREATE INDEX refresh_tokens_by_expiry ON refresh_tokens (expires_at)",
    ),
    (
        # Secret rotation with a grace window: the replaced secret's digest, and until when
        # it still authenticates.
        "ALTER TABLE apps ADD COLUMN previous_secret_digest BLOB",
        "ALTER TABLE apps ADD COLUMN previous_secret_valid_until INTEGER",
    ),
    (
        # Token checks read the app as one value, ``record`` (see _app_record), rather than
        # a dozen columns: it is a fraction of the cost to fetch and to look up in
        # SQLiteStorage's shared app records. _FILLS[3] writes it for the apps already there.
        "ALTER TABLE apps ADD COLUMN record TEXT",
        # ... from this index alone: one B-tree search, not one in the key's index and one in
        # the table (the check names it, as SQLite prefers the key's own unique index).
        "CREATE INDEX apps_records ON apps (app_key, record)",
        # Permissions and installations become clustered on their keys (WITHOUT ROWID): a
        # token check then finds each row in one B-tree search instead of an index search and
        # a table search.
        """
        CREATE TABLE permissions_v4 (
            account TEXT PRIMARY KEY,
            granted_by TEXT NOT NULL,
            granted_at INTEGER NOT NULL
        ) WITHOUT ROWID
        """,
        """
        INSERT INTO permissions_v4 (account, granted_by, granted_at)
        SELECT account, granted_by, granted_at FROM permissions
        """,
        "DROP TABLE permissions",
        "ALTER TABLE permissions_v4 RENAME TO permissions",
        """
        CREATE TABLE installations_v4 (
            app_key TEXT NOT NULL REFERENCES apps (app_key) ON DELETE CASCADE,
            account TEXT NOT NULL,
            installed_by TEXT NOT NULL,
            installed_at INTEGER NOT NULL,
            suspended INTEGER NOT NULL CHECK (suspended IN (0, 1)),
            PRIMARY KEY (app_key, account)
        ) WITHOUT ROWID
        """,
        """
        INSERT INTO installations_v4 (app_key, account, installed_by, installed_at, suspended)
        SELECT app_key, account, installed_by, installed_at, suspended FROM installations
        """,
        # Nothing references installations, so dropping it cascades nowhere.
        "DROP TABLE installations",
        "ALTER TABLE installations_v4 RENAME TO installations",
        "CREATE INDEX installations_by_account ON installations (account, app_key)",
    ),
    (
        # A used code is kept, marked used with the grant family its exchange issued, until
        # it expires: a replay then revokes that family (RFC 6749 section 10.5). Codes stored
        # before were never used (taking one deleted it), and named their redirect URL.
        """
        ALTER TABLE codes ADD COLUMN redirect_url_given INTEGER NOT NULL DEFAULT 1
            CHECK (redirect_url_given IN (0, 1))
        """,
        "ALTER TABLE codes ADD COLUMN used_at INTEGER",
        "ALTER TABLE codes ADD COLUMN family_id TEXT",
    ),
    (
        # Who approved a token for its account (issue_token's approved_by, or the
        # authorization code's user), on the token and on its family's refresh tokens, so
        # that a rotation passes it on; NULL for client credentials and for the tokens
        # stored before. And when a token was last used, which nothing records yet.
        "ALTER TABLE tokens ADD COLUMN approved_by TEXT",
        "ALTER TABLE tokens ADD COLUMN last_used_at INTEGER",
        "ALTER TABLE refresh_tokens ADD COLUMN approved_by TEXT",
        # The changes that may refuse a token, for the check caches of other processes.
        "CREATE TABLE change_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, scopes TEXT NOT NULL)",
        # The storage's own settings: the fingerprints of the pepper and of the secret
        # encryption key its digests and ciphertexts were made with (ports.SettingsRepository).
        "CREATE TABLE settings (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID",
    ),
    (
        # A purge finds the apps whose previous secret's grace has ended from this index,
        # which holds only the apps that keep a previous secret.
        """
        CREATE INDEX IF NOT EXISTS apps_by_grace_deadline ON apps (previous_secret_valid_until)
            WHERE previous_secret_valid_until IS NOT NULL
        """,
    ),
)

#: The schema version this code creates and understands.
SCHEMA_VERSION: Final = len(_MIGRATIONS)


def _fill_app_records(connection: sqlite3.Connection) -> None:
    """Write ``apps.record`` for the apps a schema older than version 4 holds."""
    rows = connection.execute(f"SELECT {_APP_COLUMNS} FROM apps").fetchall()  # noqa: S608
    connection.executemany(
        "UPDATE apps SET record = ? WHERE app_key = ?",
        [(_app_record(_app(row)), row[0]) for row in rows],
    )


# _FILLS[n] runs after the statements of _MIGRATIONS[n], in the same transaction: the values a
# migration needs that SQL alone cannot compute.
_FILLS: Final[dict[int, Callable[[sqlite3.Connection], None]]] = {3: _fill_app_records}
