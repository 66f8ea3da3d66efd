"""SQLite schema 6 and PostgreSQL schema 5, on a database of the version before, with rows.

One migration per backend adds the approver and the last use to the token row (and the
approver to refresh tokens), the settings that hold the configuration fingerprints, and,
in SQLite, the change log. A database of the previous version, holding an app with an
encrypted secret, an installation, an access token and a refresh token, is upgraded in
place: every row still works, the new columns read ``None``, and the first registry opened
on it records its pepper and key, after trying the key on the stored secret.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from cryptography.fernet import Fernet
from psycopg import sql

from appregistry import ConfigurationError, Registry
from appregistry._credentials import Credentials
from appregistry.ports import Storage
from appregistry.storage.postgres import SCHEMA_VERSION as POSTGRES_VERSION
from appregistry.storage.sqlite import APPLICATION_ID, SQLiteStorage
from appregistry.storage.sqlite import SCHEMA_VERSION as SQLITE_VERSION
from appregistry.testing import ManualClock
from appregistry.testing.contract import make_app

T0 = datetime(2015, 4, 20, 9, 56, 40, tzinfo=UTC)
PEPPER = b"the pepper of the old database"
KEY = Fernet.generate_key()
SECRET = "jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8N"
ACCESS = "an-access-token-issued-before-the-migration"
REFRESH = "a-refresh-token-issued-before-the-migration"
APP = make_app(owner="acme", trusted=True)
_CREDENTIALS = Credentials(pepper=PEPPER, encryption_key=KEY)
_STORED = _CREDENTIALS.store_secret(SECRET)
_CHANGE_LOG = (
    "CREATE TABLE change_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, scopes TEXT NOT NULL)"
)


def _micros(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _check_upgraded(open_storage: Callable[[], Storage]) -> None:
    """What must hold of an upgraded database, whichever the backend."""
    clock = ManualClock(T0 + timedelta(minutes=5))
    # A wrong key is refused before anything is recorded: it cannot read the stored secret.
    with pytest.raises(ConfigurationError, match="encryption key"):
        Registry(
            storage=open_storage(),
            clock=clock,
            pepper=PEPPER,
            secret_encryption_key=[Fernet.generate_key()],
        )
    registry = Registry(
        storage=open_storage(), clock=clock, pepper=PEPPER, secret_encryption_key=KEY
    )
    check = registry.check_token(ACCESS)
    assert check.token is not None
    assert ("allowed", "t1", "f1", None, None) == (
        check.reason,
        check.token.token_id,
        check.token.family_id,
        check.token.approved_by,
        check.token.last_used_at,
    )
    listed = registry.list_tokens(APP.key, "acme").items
    # The allowed check was the token's last use (see LastUse), which the list shows.
    assert [attrs.evolve(check.token, last_used_at=clock())] == list(listed)
    # The old refresh token rotates; not knowing who approved, the new token says so (None).
    rotated = registry.refresh(APP.key, REFRESH)
    assert (None, "f1") == (rotated.record.approved_by, rotated.record.family_id)
    assert "allowed" == registry.check_token(rotated.token).reason
    assert SECRET == registry.reveal_secret(APP.key)
    # New tokens carry their approver.
    approved = registry.issue_token(APP.key, SECRET, account="acme", approved_by="alice")
    again = Registry(storage=open_storage(), clock=clock, pepper=PEPPER, secret_encryption_key=KEY)
    assert "alice" == getattr(again.check_token(approved.token).token, "approved_by", None)
    # The first registry recorded the pepper and the key: now a wrong one is refused.
    with pytest.raises(ConfigurationError, match="pepper"):
        Registry(storage=open_storage(), clock=clock, pepper=b"another pepper")
    with pytest.raises(ConfigurationError, match="encryption key"):
        Registry(
            storage=open_storage(),
            clock=clock,
            pepper=PEPPER,
            secret_encryption_key=Fernet.generate_key(),
        )


class TestSQLiteVersion5:
    """A version 5 file is upgraded to version 6 in place."""

    @pytest.fixture
    def db_path(self, tmp_path: Path) -> Path:
        from appregistry.storage.sqlite import _MIGRATIONS
        from appregistry.storage.sqlite._queries import _app_record

        path = tmp_path / "v5.db"
        connection = sqlite3.connect(path)
        for migration in _MIGRATIONS[:5]:
            for statement in migration:
                connection.execute(statement)
        connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("PRAGMA user_version = 5")
        at = _micros(T0)
        connection.execute(
            "INSERT INTO apps (app_key, owner, name, name_folded, search_text, homepage, "
            "admin_email, redirect_url, created_at, trusted, enabled, secret_digest, "
            "secret_ciphertext, record) VALUES (?, ?, ?, ?, '', ?, ?, ?, ?, 1, 1, ?, ?, ?)",
            (
                APP.key,
                APP.owner,
                APP.name,
                APP.name.casefold(),
                APP.homepage,
                APP.admin_email,
                APP.redirect_url,
                at,
                _STORED.digest,
                _STORED.ciphertext,
                _app_record(APP),
            ),
        )
        connection.execute("INSERT INTO permissions VALUES ('acme', 'root', ?)", (at,))
        connection.execute(
            "INSERT INTO installations VALUES (?, 'acme', 'alice', ?, 0)", (APP.key, at)
        )
        connection.execute(
            "INSERT INTO tokens (token_id, digest, app_key, account, grant_type, issued_at, "
            "expires_at, search_text, family_id) "
            "VALUES ('t1', ?, ?, 'acme', 'authorization_code', ?, ?, '', 'f1')",
            (_CREDENTIALS.token_digest(ACCESS), APP.key, at, at + 3_600_000_000),
        )
        connection.execute(
            "INSERT INTO refresh_tokens (token_id, digest, family_id, app_key, account, "
            "grant_type, issued_at, expires_at) "
            "VALUES ('r1', ?, 'f1', ?, 'acme', 'authorization_code', ?, ?)",
            (_CREDENTIALS.refresh_digest(REFRESH), APP.key, at, at + 86_400_000_000),
        )
        connection.commit()
        connection.close()
        return path

    @pytest.fixture
    def open_file(self, db_path: Path) -> Iterator[Callable[[], Storage]]:
        opened: list[SQLiteStorage] = []

        def open_() -> Storage:
            opened.append(SQLiteStorage(db_path))
            return opened[-1]

        yield open_
        for storage in opened:
            storage.close()

    def test_every_row_works_after_the_upgrade(
        self, db_path: Path, open_file: Callable[[], Storage]
    ) -> None:
        _check_upgraded(open_file)
        connection = sqlite3.connect(db_path)
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            change_log = connection.execute(
                "SELECT sql FROM sqlite_master WHERE name = 'change_log'"
            ).fetchone()
            settings = connection.execute("SELECT name FROM settings ORDER BY name").fetchall()
        finally:
            connection.close()
        assert SQLITE_VERSION == version  # and every migration after it
        assert (_CHANGE_LOG,) == change_log
        assert [("pepper_fingerprint",), ("secret_encryption_key_fingerprint",)] == settings


@pytest.mark.postgres
class TestPostgresVersion4:
    """A version 4 schema is upgraded to version 5 in place."""

    @pytest.fixture
    def old_schema(self, postgres_url: str, postgres_schema: str) -> str:
        from appregistry.storage.postgres import _MIGRATIONS, _TABLES

        names = {key: sql.Identifier(postgres_schema, t) for key, t in _TABLES.items()}
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(postgres_schema)))
            for script in _MIGRATIONS[:4]:
                admin.execute(sql.SQL(script).format(**names))
            admin.execute(
                sql.SQL(
                    "CREATE TABLE {} (singleton boolean PRIMARY KEY DEFAULT true "
                    "CHECK (singleton), version integer NOT NULL); "
                    "INSERT INTO {} (version) VALUES (4)"
                ).format(names["version"], names["version"])
            )
            admin.execute(
                sql.SQL(
                    "INSERT INTO {} (app_key, owner, name, homepage, admin_email, redirect_url, "
                    "created_at, trusted, enabled, name_folded, search_text, secret_digest, "
                    "secret_ciphertext) VALUES (%s, %s, %s, %s, %s, %s, %s, true, true, %s, "
                    "'', %s, %s)"
                ).format(names["apps"]),
                (
                    APP.key,
                    APP.owner,
                    APP.name,
                    APP.homepage,
                    APP.admin_email,
                    APP.redirect_url,
                    T0,
                    APP.name.casefold(),
                    _STORED.digest,
                    _STORED.ciphertext,
                ),
            )
            admin.execute(
                sql.SQL("INSERT INTO {} VALUES ('acme', 'root', %s)").format(names["permissions"]),
                (T0,),
            )
            admin.execute(
                sql.SQL("INSERT INTO {} VALUES (%s, 'acme', 'alice', %s, false)").format(
                    names["installations"]
                ),
                (APP.key, T0),
            )
            admin.execute(
                sql.SQL(
                    "INSERT INTO {} (token_id, digest, app_key, account, grant_type, issued_at, "
                    "expires_at, search_text, family_id) "
                    "VALUES ('t1', %s, %s, 'acme', 'authorization_code', %s, %s, '', 'f1')"
                ).format(names["tokens"]),
                (_CREDENTIALS.token_digest(ACCESS), APP.key, T0, T0 + timedelta(hours=1)),
            )
            admin.execute(
                sql.SQL(
                    "INSERT INTO {} (token_id, digest, family_id, app_key, account, grant_type, "
                    "issued_at, expires_at) "
                    "VALUES ('r1', %s, 'f1', %s, 'acme', 'authorization_code', %s, %s)"
                ).format(names["refresh_tokens"]),
                (_CREDENTIALS.refresh_digest(REFRESH), APP.key, T0, T0 + timedelta(days=1)),
            )
        return postgres_schema

    def test_every_row_works_after_the_upgrade(
        self, postgres_storage_factory: Any, postgres_url: str, old_schema: str
    ) -> None:
        _check_upgraded(lambda: postgres_storage_factory(schema=old_schema))
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            version = admin.execute(
                sql.SQL("SELECT version FROM {}").format(
                    sql.Identifier(old_schema, "appregistry_schema_version")
                )
            ).fetchall()
            settings = admin.execute(
                sql.SQL("SELECT name FROM {} ORDER BY name").format(
                    sql.Identifier(old_schema, "appregistry_settings")
                )
            ).fetchall()
        assert [(POSTGRES_VERSION,)] == version  # and every migration after it
        assert [("pepper_fingerprint",), ("secret_encryption_key_fingerprint",)] == settings
