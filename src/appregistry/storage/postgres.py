"""The PostgreSQL backend: one registry shared by many app servers.

Install it with the ``postgres`` extra (``pip install 'appregistry[postgres]'``), which brings
psycopg 3 and its connection pool. ``import appregistry`` never imports this module; it is
loaded when a ``postgresql://`` URL is opened or when you import it yourself.

- **Opening**: `PostgresStorage.from_url` connects once up front, so an unreachable server or
  a refused login fails at once (within ``connect_timeout``) with
  `appregistry.errors.StorageUnavailable` naming the host and port, never the password. Then
  it keeps a pool of connections (``min_size`` to ``max_size``) shared by the threads.
- **Schema** (S4): tables are named ``appregistry_*``; ``schema`` puts them in a PostgreSQL
  schema of their own (created if missing), otherwise they go where the connection's
  ``search_path`` points (usually ``public``). The schema version lives in
  ``appregistry_schema_version``; forward migrations are applied **when the storage is
  opened**, in one transaction, under an advisory lock so that app servers starting together
  migrate once. A schema newer than this code, or tables named like ours without a version,
  are refused with `appregistry.errors.SchemaError` and left untouched.
- **Token checks** (S3): `PostgresStorage.token_context` is one prepared ``SELECT`` joining
  the token to its app, installation and permission, in autocommit (no transaction), so it
  sees committed data only and takes no locks.
- **Transactions** (S2): see `PostgresStorage.transaction`: READ COMMITTED with row locks, the
  app's row guarding everything that belongs to the app; pipelined, so that issuing a token
  takes two round trips.
- **Values**: timestamps are ``timestamptz`` and come back as UTC datetimes; secrets,
  tokens, authorization codes and refresh tokens are only ever digests and ciphertext
  (``bytea``); the keys of removed apps are kept (R13). Names are stored beside their
  case-folded form and their `appregistry.search_text`, computed in Python and compared with
  ``COLLATE "C"`` (byte order of UTF-8 is code-point order), so order and search agree with the
  other backends for any Unicode text.

>>> from appregistry import Registry
>>> storage = PostgresStorage.from_url(  # doctest: +SKIP
...     "postgresql://postgres@127.0.0.1:5432/test", schema="apps")
>>> registry = Registry(storage=storage)  # doctest: +SKIP
"""

from __future__ import annotations

import math
import threading
import urllib.parse
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from datetime import UTC, datetime
from typing import Any, Final, LiteralString, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg_pool import ConnectionPool

from .._records import (
    AccessToken,
    App,
    AppContext,
    AppListing,
    AppsPermission,
    AuthorizationCode,
    Grant,
    Installation,
    InstallationListing,
    Page,
    RefreshToken,
    StoredSecret,
    TokenContext,
)
from .._validation import search_text
from ..errors import SchemaError, StorageError, StorageUnavailable
from ..ports import ListQuery
from . import redact_url

__all__ = ["SCHEMA_VERSION", "PostgresStorage"]

Connection = psycopg.Connection[TupleRow]
Cursor = psycopg.Cursor[TupleRow]
_Cursors = tuple[Cursor, Cursor]  # a transaction's reader and writer (see _Unit)
Pool = ConnectionPool[Connection]
Row = Sequence[Any]
T = TypeVar("T")

# Every table of ours; the keys are the names the SQL below uses as {placeholders}.
_TABLES: Final = {
    "version": "appregistry_schema_version",
    "apps": "appregistry_apps",
    "permissions": "appregistry_permissions",
    "installations": "appregistry_installations",
    "tokens": "appregistry_tokens",
    "retired": "appregistry_retired_keys",
    "codes": "appregistry_codes",
    "refresh_tokens": "appregistry_refresh_tokens",
}

# _MIGRATIONS[n] takes a schema from version n to n + 1. Append, never edit: a released
# migration may already have run on someone's database. Text that is compared or sorted is
# COLLATE "C": byte order of UTF-8 is code-point order, the order Python sorts str in.
_MIGRATIONS: Final[tuple[LiteralString, ...]] = (
    """
    CREATE TABLE {apps} (
        app_key text COLLATE "C" PRIMARY KEY,
        owner text COLLATE "C" NOT NULL,
        name text NOT NULL,
        homepage text NOT NULL,
        admin_email text NOT NULL,
        redirect_url text NOT NULL,
        created_at timestamptz NOT NULL,
        description text,
        image_url text,
        admin_phone text,
        trusted boolean NOT NULL,
        enabled boolean NOT NULL,
        name_folded text COLLATE "C" NOT NULL,
        search_text text COLLATE "C" NOT NULL,
        secret_digest bytea NOT NULL,
        secret_ciphertext bytea
    );
    CREATE INDEX appregistry_apps_by_name ON {apps} (name_folded, app_key);
    CREATE INDEX appregistry_apps_by_owner ON {apps} (owner, name_folded, app_key);
    CREATE TABLE {permissions} (
        account text COLLATE "C" PRIMARY KEY,
        granted_by text NOT NULL,
        granted_at timestamptz NOT NULL
    );
    CREATE TABLE {installations} (
        app_key text COLLATE "C" NOT NULL REFERENCES {apps} (app_key) ON DELETE CASCADE,
        account text COLLATE "C" NOT NULL,
        installed_by text NOT NULL,
        installed_at timestamptz NOT NULL,
        suspended boolean NOT NULL,
        PRIMARY KEY (app_key, account)
    );
    CREATE INDEX appregistry_installations_by_account ON {installations} (account, app_key);
    CREATE TABLE {tokens} (
        token_id text COLLATE "C" PRIMARY KEY,
        digest bytea NOT NULL UNIQUE,
        app_key text COLLATE "C" NOT NULL REFERENCES {apps} (app_key) ON DELETE CASCADE,
        account text COLLATE "C" NOT NULL,
        grant_type text NOT NULL,
        issued_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        user_agent text,
        search_text text COLLATE "C" NOT NULL
    );
    -- Counts, lists (ordered by expiry) and removals of one app on one account.
    CREATE INDEX appregistry_tokens_by_pair ON {tokens} (app_key, account, expires_at, token_id);
    CREATE INDEX appregistry_tokens_by_expiry ON {tokens} (expires_at);
    """,
    """
    -- R13: keys of removed apps, so that they never authenticate again.
    CREATE TABLE {retired} (app_key text COLLATE "C" PRIMARY KEY);
    ALTER TABLE {tokens} ADD COLUMN family_id text COLLATE "C";
    CREATE INDEX appregistry_tokens_by_family ON {tokens} (family_id)
        WHERE family_id IS NOT NULL;
    CREATE TABLE {codes} (
        digest bytea PRIMARY KEY,
        app_key text COLLATE "C" NOT NULL REFERENCES {apps} (app_key) ON DELETE CASCADE,
        account text COLLATE "C" NOT NULL,
        redirect_url text NOT NULL,
        approved_by text NOT NULL,
        issued_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        code_challenge text,
        code_challenge_method text
    );
    CREATE INDEX appregistry_codes_by_pair ON {codes} (app_key, account);
    CREATE INDEX appregistry_codes_by_expiry ON {codes} (expires_at);
    CREATE TABLE {refresh_tokens} (
        token_id text COLLATE "C" PRIMARY KEY,
        digest bytea NOT NULL UNIQUE,
        family_id text COLLATE "C" NOT NULL,
        app_key text COLLATE "C" NOT NULL REFERENCES {apps} (app_key) ON DELETE CASCADE,
        account text COLLATE "C" NOT NULL,
        grant_type text NOT NULL,
        issued_at timestamptz NOT NULL,
        expires_at timestamptz NOT NULL,
        rotated_at timestamptz
    );
    CREATE INDEX appregistry_refresh_tokens_by_family ON {refresh_tokens} (family_id);
    CREATE INDEX appregistry_refresh_tokens_by_pair ON {refresh_tokens} (app_key, account);
    CREATE INDEX appregistry_refresh_tokens_by_expiry ON {refresh_tokens} (expires_at);
    """,
    """
    -- Secret rotation with a grace window: the replaced secret's digest, and until when it
    -- still authenticates.
    ALTER TABLE {apps} ADD COLUMN previous_secret_digest bytea,
                       ADD COLUMN previous_secret_valid_until timestamptz;
    """,
)

#: The schema version this code creates and understands.
SCHEMA_VERSION: Final = len(_MIGRATIONS)

# Advisory lock keys. The one-key and two-key spaces of PostgreSQL do not overlap.
_MIGRATION_LOCK: Final = 0x6170_7072_6567_6973  # "appregis"
_OWNER_LOCK_CLASS: Final = 0x6170_7072  # "appr", with hashtext(owner) as the second key
_MAX_IDENTIFIER_BYTES: Final = 63  # longer names are silently truncated by PostgreSQL
_DEFAULT_PORT: Final = "5432"
# Grant(value) goes through the enum's lookup machinery; a dict is ten times faster.
_GRANTS: Final = {grant.value: grant for grant in Grant}
# How many distinct app records token checks keep to share (see PostgresStorage._shared_app).
_SHARED_APPS: Final = 4096

_APP_COLUMNS: Final = (
    "app_key",
    "owner",
    "name",
    "homepage",
    "admin_email",
    "redirect_url",
    "created_at",
    "description",
    "image_url",
    "admin_phone",
    "trusted",
    "enabled",
)
_TOKEN_COLUMNS: Final = (
    "token_id",
    "app_key",
    "account",
    "grant_type",
    "issued_at",
    "expires_at",
    "user_agent",
    "family_id",
)
_CODE_COLUMNS: Final = (
    "app_key",
    "account",
    "redirect_url",
    "approved_by",
    "issued_at",
    "expires_at",
    "code_challenge",
    "code_challenge_method",
)
_REFRESH_COLUMNS: Final = (
    "token_id",
    "family_id",
    "app_key",
    "account",
    "grant_type",
    "issued_at",
    "expires_at",
    "rotated_at",
)
_INSTALLATION_COLUMNS: Final = ("app_key", "account", "installed_by", "installed_at", "suspended")
_SECRET_COLUMNS: Final = (
    "secret_digest",
    "secret_ciphertext",
    "previous_secret_digest",
    "previous_secret_valid_until",
)
_APP_WIDTH: Final = len(_APP_COLUMNS)
_TOKEN_WIDTH: Final = len(_TOKEN_COLUMNS)
_INSTALLATION_WIDTH: Final = len(_INSTALLATION_COLUMNS)
_SECRET_WIDTH: Final = len(_SECRET_COLUMNS)


# -- values -----------------------------------------------------------------------------------


def _storable(*texts: str) -> bool:
    """Whether PostgreSQL can hold these strings: no NUL, valid UTF-8 (no lone surrogates).

    Ids that come from outside (an app key in a URL) are looked up unvalidated; one that
    cannot be stored cannot name anything, so look-ups answer "not found" instead of failing.
    """
    for text in texts:
        if "\x00" in text:
            return False
        try:
            text.encode()
        except UnicodeEncodeError:
            return False
    return True


def _utc(value: datetime) -> datetime:
    # psycopg returns timestamptz in the session's time zone; records are UTC whatever it is.
    return value.astimezone(UTC)


def _app(row: Row) -> App:
    return App(
        key=row[0],
        owner=row[1],
        name=row[2],
        homepage=row[3],
        admin_email=row[4],
        redirect_url=row[5],
        created_at=_utc(row[6]),
        description=row[7],
        image_url=row[8],
        admin_phone=row[9],
        trusted=row[10],
        enabled=row[11],
    )


def _token(row: Row) -> AccessToken:
    return AccessToken(
        token_id=row[0],
        app_key=row[1],
        account=row[2],
        grant=_GRANTS[row[3]],
        issued_at=_utc(row[4]),
        expires_at=_utc(row[5]),
        user_agent=row[6],
        family_id=row[7],
    )


def _code(row: Row) -> AuthorizationCode:
    return AuthorizationCode(
        app_key=row[0],
        account=row[1],
        redirect_url=row[2],
        approved_by=row[3],
        issued_at=_utc(row[4]),
        expires_at=_utc(row[5]),
        code_challenge=row[6],
        code_challenge_method=row[7],
    )


def _refresh(row: Row) -> RefreshToken:
    return RefreshToken(
        token_id=row[0],
        family_id=row[1],
        app_key=row[2],
        account=row[3],
        grant=Grant(row[4]),
        issued_at=_utc(row[5]),
        expires_at=_utc(row[6]),
        rotated_at=_utc(row[7]) if row[7] is not None else None,
    )


def _installation(row: Row) -> Installation:
    return Installation(
        app_key=row[0],
        account=row[1],
        installed_by=row[2],
        installed_at=_utc(row[3]),
        suspended=row[4],
    )


def _stored_secret(row: Row) -> StoredSecret:
    return StoredSecret(
        bytes(row[0]),
        bytes(row[1]) if row[1] is not None else None,
        bytes(row[2]) if row[2] is not None else None,
        _utc(row[3]) if row[3] is not None else None,
    )


def _secret_values(secret: StoredSecret) -> tuple[object, ...]:
    return (
        secret.digest,
        secret.ciphertext,
        secret.previous_digest,
        secret.previous_valid_until,
    )


def _permission(row: Row) -> AppsPermission:
    return AppsPermission(account=row[0], granted_by=row[1], granted_at=_utc(row[2]))


def _app_values(app: App) -> dict[str, object]:
    return {
        "app_key": app.key,
        "owner": app.owner,
        "name": app.name,
        "homepage": app.homepage,
        "admin_email": app.admin_email,
        "redirect_url": app.redirect_url,
        "created_at": app.created_at,
        "description": app.description,
        "image_url": app.image_url,
        "admin_phone": app.admin_phone,
        "trusted": app.trusted,
        "enabled": app.enabled,
        # Folded in Python, exactly as the memory backend sorts and searches.
        "name_folded": app.name.casefold(),
        "search_text": search_text(app.name, app.description),
    }


# -- connection details and errors -------------------------------------------------------------


def _place(conninfo: str) -> str:
    """``host:port/dbname`` of a connection string, for messages (never the password)."""
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError:
        return "an unparsable connection string"
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or _DEFAULT_PORT)
    dbname = params.get("dbname")
    return f"{host}:{port}" + (f"/{dbname}" if dbname else "")


def _scrub(message: str, conninfo: str) -> str:
    """``message`` on one line, with the connection's password (if any) masked."""
    try:
        password = conninfo_to_dict(conninfo).get("password")
    except psycopg.ProgrammingError:
        password = None
    text = " ".join(message.split())
    if password:
        text = text.replace(str(password), "***")
    return text


def _split_schema(url: str) -> tuple[str, str | None]:
    """``url`` without its ``schema`` query parameter (which libpq would refuse), and its value.

    The other parameters are kept byte for byte.

    >>> _split_schema("postgresql://db.example/apps?sslmode=require&schema=registry")
    ('postgresql://db.example/apps?sslmode=require', 'registry')
    """
    base, mark, query = url.partition("?")
    if not mark:
        return url, None
    kept, schema = [], None
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if urllib.parse.unquote(name) == "schema":
            schema = urllib.parse.unquote(value)
        else:
            kept.append(part)
    return (f"{base}?{'&'.join(kept)}" if kept else base), schema


def _check_schema_name(schema: object) -> str | None:
    if schema is None:
        return None
    if not isinstance(schema, str) or not schema or not _storable(schema):
        raise ValueError("schema must be a non-empty PostgreSQL schema name")
    if len(schema.encode()) > _MAX_IDENTIFIER_BYTES:
        raise ValueError(f"schema names are at most {_MAX_IDENTIFIER_BYTES} bytes long")
    return schema


# -- SQL ---------------------------------------------------------------------------------------


class _Queries:
    """Every statement, rendered once for this schema; bytes are what psycopg sends as-is."""

    def __init__(self, conn: Connection, schema: str | None) -> None:
        def name(table: str) -> sql.Identifier:
            return sql.Identifier(schema, table) if schema else sql.Identifier(table)

        self._names: dict[str, sql.Composable] = {key: name(t) for key, t in _TABLES.items()}
        self._names |= {
            "app_cols": _columns(_APP_COLUMNS),
            "a_cols": _columns(_APP_COLUMNS, "a"),
            "token_cols": _columns(_TOKEN_COLUMNS),
            "t_cols": _columns(_TOKEN_COLUMNS, "t"),
            "inst_cols": _columns(_INSTALLATION_COLUMNS),
            "code_cols": _columns(_CODE_COLUMNS),
            "refresh_cols": _columns(_REFRESH_COLUMNS),
            "secret_cols": _columns(_SECRET_COLUMNS),
            "a_secret_cols": _columns(_SECRET_COLUMNS, "a"),
            "i_cols": _columns(_INSTALLATION_COLUMNS, "i"),
            # The app's columns but its key, which the installation's app_key already is.
            "a_rest": _columns(_APP_COLUMNS[1:], "a"),
        }
        self._conn = conn
        r = self._render

        # One query answers a token check (S3). LEFT JOIN to the app too: the foreign key
        # makes a token without its app impossible, and should one ever appear, the policy
        # reports app_unknown as the memory backend does, rather than token_unknown.
        self.token_context = r(
            """SELECT {t_cols}, {a_cols}, i.installed_by, i.installed_at, i.suspended,
                      p.granted_by, p.granted_at
               FROM {tokens} AS t
               LEFT JOIN {apps} AS a ON a.app_key = t.app_key
               LEFT JOIN {installations} AS i ON i.app_key = t.app_key AND i.account = t.account
               LEFT JOIN {permissions} AS p ON p.account = t.account
               WHERE t.digest = %s"""
        )
        # The same over the token's digests under every pepper, while older ones are
        # configured: still one query, on the digest index.
        self.token_context_any = r(
            """SELECT {t_cols}, {a_cols}, i.installed_by, i.installed_at, i.suspended,
                      p.granted_by, p.granted_at
               FROM {tokens} AS t
               LEFT JOIN {apps} AS a ON a.app_key = t.app_key
               LEFT JOIN {installations} AS i ON i.app_key = t.app_key AND i.account = t.account
               LEFT JOIN {permissions} AS p ON p.account = t.account
               WHERE t.digest = ANY(%s)
               LIMIT 1"""
        )

        # Apps. Reads inside a transaction lock the app's row (see PostgresStorage.transaction).
        # The secret comes along: issuing a token reads both, and a round trip is saved.
        self.app_get = r(
            "SELECT {app_cols}, {secret_cols} FROM {apps} WHERE app_key = %s FOR NO KEY UPDATE"
        )
        # Issuing a token reads the app, its secret, and the installation and permission of
        # the account it would act for (its owner's when none is given) in one query. Each
        # row is locked as app_get, installation_get and permission_get lock it, app first.
        # In one statement all three are read under one snapshot, taken before the app's lock
        # was granted: the locks are what make the answer current, since a locked row is
        # re-read in its latest committed version (READ COMMITTED follows the update), and a
        # row deleted meanwhile is not returned. The installation and permission are locked
        # in LATERAL subqueries: PostgreSQL refuses FOR UPDATE on the nullable side of an
        # outer join.
        self.app_context = r(
            """SELECT {a_cols}, {a_secret_cols},
                      i.installed_by, i.installed_at, i.suspended, p.granted_by, p.granted_at
               FROM (SELECT {app_cols}, {secret_cols} FROM {apps}
                     WHERE app_key = %(key)s FOR NO KEY UPDATE) AS a
               LEFT JOIN LATERAL (
                   SELECT installed_by, installed_at, suspended FROM {installations}
                   WHERE app_key = a.app_key AND account = coalesce(%(account)s, a.owner)
                   FOR NO KEY UPDATE
               ) AS i ON true
               LEFT JOIN LATERAL (
                   SELECT granted_by, granted_at FROM {permissions}
                   WHERE account = coalesce(%(account)s, a.owner)
                   FOR NO KEY UPDATE
               ) AS p ON true"""
        )
        self.app_lock = r("SELECT 1 FROM {apps} WHERE app_key = %s FOR NO KEY UPDATE")
        self.app_secret = r("SELECT {secret_cols} FROM {apps} WHERE app_key = %s FOR NO KEY UPDATE")
        # Batches of secrets to re-encrypt, locked as a get_secret locks them; each starts
        # where the last ended, on the primary key.
        self.app_secrets_first = r(
            """SELECT app_key, {secret_cols} FROM {apps}
               ORDER BY app_key LIMIT %s FOR NO KEY UPDATE"""
        )
        self.app_secrets_after = r(
            """SELECT app_key, {secret_cols} FROM {apps} WHERE app_key > %s
               ORDER BY app_key LIMIT %s FOR NO KEY UPDATE"""
        )
        self.app_add = r(
            """INSERT INTO {apps} ({app_cols}, name_folded, search_text, {secret_cols})
               VALUES (%(app_key)s, %(owner)s, %(name)s, %(homepage)s, %(admin_email)s,
                       %(redirect_url)s, %(created_at)s, %(description)s, %(image_url)s,
                       %(admin_phone)s, %(trusted)s, %(enabled)s, %(name_folded)s,
                       %(search_text)s, %(secret_digest)s, %(secret_ciphertext)s,
                       %(previous_secret_digest)s, %(previous_secret_valid_until)s)"""
        )
        self.app_update = r(
            """UPDATE {apps} SET owner = %(owner)s, name = %(name)s, homepage = %(homepage)s,
                   admin_email = %(admin_email)s, redirect_url = %(redirect_url)s,
                   created_at = %(created_at)s, description = %(description)s,
                   image_url = %(image_url)s, admin_phone = %(admin_phone)s,
                   trusted = %(trusted)s, enabled = %(enabled)s,
                   name_folded = %(name_folded)s, search_text = %(search_text)s
               WHERE app_key = %(app_key)s"""
        )
        self.app_set_secret = r(
            """UPDATE {apps} SET secret_digest = %s, secret_ciphertext = %s,
                   previous_secret_digest = %s, previous_secret_valid_until = %s
               WHERE app_key = %s"""
        )
        # Removing an app retires its key in the same statement (R13).
        self.app_remove = r(
            """WITH gone AS (DELETE FROM {apps} WHERE app_key = %s RETURNING app_key)
               INSERT INTO {retired} (app_key) SELECT app_key FROM gone
               ON CONFLICT (app_key) DO NOTHING"""
        )
        self.key_retired = r("SELECT 1 FROM {retired} WHERE app_key = %s")
        # Two registrations by one owner racing must not both pass the quota check (R9): an
        # advisory lock per owner, held to the end of the transaction, puts them in a line.
        self.owner_lock = r("SELECT pg_advisory_xact_lock(%s, hashtext(%s))")
        self.app_count_owned = r("SELECT count(*) FROM {apps} WHERE owner = %s")
        # Lists: the total and the page in one statement, so both come from one snapshot.
        self.app_list = {
            (by_owner, searching): r(
                """SELECT c.total, {page_cols},
                          (SELECT count(*) FROM {installations} AS i
                           WHERE i.app_key = p.app_key)
                   FROM (SELECT count(*) FROM {apps} WHERE {where}) AS c (total)
                   LEFT JOIN LATERAL (
                       SELECT {app_cols}, name_folded FROM {apps} WHERE {where}
                       ORDER BY name_folded, app_key LIMIT %(limit)s OFFSET %(offset)s
                   ) AS p ON true
                   ORDER BY p.name_folded, p.app_key""",
                page_cols=_columns(_APP_COLUMNS, "p"),
                where=_where(
                    ("owner = %(owner)s", by_owner),
                    ("strpos(search_text, %(search)s) > 0", searching),
                ),
            )
            for by_owner in (False, True)
            for searching in (False, True)
        }

        # Permissions.
        self.permission_get = r(
            "SELECT account, granted_by, granted_at FROM {permissions} WHERE account = %s "
            "FOR NO KEY UPDATE"
        )
        self.permission_put = r(
            """INSERT INTO {permissions} (account, granted_by, granted_at) VALUES (%s, %s, %s)
               ON CONFLICT (account) DO UPDATE
               SET granted_by = excluded.granted_by, granted_at = excluded.granted_at"""
        )
        self.permission_remove = r("DELETE FROM {permissions} WHERE account = %s")

        # Installations.
        self.installation_get = r(
            "SELECT {inst_cols} FROM {installations} WHERE app_key = %s AND account = %s "
            "FOR NO KEY UPDATE"
        )
        self.installation_put = r(
            """INSERT INTO {installations} ({inst_cols}) VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (app_key, account) DO UPDATE
               SET installed_by = excluded.installed_by, installed_at = excluded.installed_at,
                   suspended = excluded.suspended"""
        )
        self.installation_remove = r(
            "DELETE FROM {installations} WHERE app_key = %s AND account = %s"
        )
        self.installation_remove_app = self._counted(
            "DELETE FROM {installations} WHERE app_key = %s"
        )
        self.installation_list = {
            searching: r(
                """SELECT c.total, {page_cols},
                          (SELECT count(*) FROM {tokens} AS t
                           WHERE t.app_key = p.app_key AND t.account = p.account
                             AND t.expires_at > %(now)s)
                   FROM (SELECT count(*) FROM {installations} AS i
                         JOIN {apps} AS a ON a.app_key = i.app_key WHERE {where}) AS c (total)
                   LEFT JOIN LATERAL (
                       SELECT {i_cols}, {a_rest}, a.name_folded AS app_order
                       FROM {installations} AS i JOIN {apps} AS a ON a.app_key = i.app_key
                       WHERE {where}
                       ORDER BY a.name_folded, a.app_key LIMIT %(limit)s OFFSET %(offset)s
                   ) AS p ON true
                   ORDER BY p.app_order, p.app_key""",
                # The app's key is the installation's app_key, so it comes twice.
                page_cols=_columns((*_INSTALLATION_COLUMNS, *_APP_COLUMNS), "p"),
                where=_where(
                    ("i.account = %(account)s", True),
                    ("strpos(a.search_text, %(search)s) > 0", searching),
                ),
            )
            for searching in (False, True)
        }

        # Tokens.
        self.token_add = r(
            """INSERT INTO {tokens} ({token_cols}, digest, search_text)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""
        )
        self.token_app = r("SELECT app_key FROM {tokens} WHERE token_id = %s")
        self.token_get = r("SELECT {token_cols} FROM {tokens} WHERE token_id = %s FOR UPDATE")
        self.token_app_by_digest = r("SELECT app_key FROM {tokens} WHERE digest = %s")
        self.token_get_by_digest = r(
            "SELECT {token_cols} FROM {tokens} WHERE digest = %s FOR UPDATE"
        )
        self.token_family_apps = r("SELECT DISTINCT app_key FROM {tokens} WHERE family_id = %s")
        self.token_remove_family = self._counted("DELETE FROM {tokens} WHERE family_id = %s")
        self.token_remove = self._counted("DELETE FROM {tokens} WHERE token_id = ANY(%s)")
        self.token_remove_pair = self._counted(
            "DELETE FROM {tokens} WHERE app_key = %s AND account = %s"
        )
        self.token_remove_app = self._counted("DELETE FROM {tokens} WHERE app_key = %s")
        self.token_count_live = r(
            "SELECT count(*) FROM {tokens} WHERE app_key = %s AND account = %s AND expires_at > %s"
        )
        # The page's ids come from the pair's index alone (an index-only scan once vacuumed),
        # so skipping to a late page reads no table rows; only the page's rows are fetched.
        # OFFSET still steps over every row it skips, so the ids are read from whichever end
        # of the list is nearer (the total decides, and only that branch runs): no page
        # costs more than the count plus half the list (R26).
        self.token_list = {
            searching: r(
                """SELECT c.total, {page_cols}
                   FROM (SELECT count(*) FROM {tokens} WHERE {where}) AS c (total)
                   LEFT JOIN LATERAL (
                       SELECT {token_cols} FROM {tokens} WHERE token_id IN (
                           (SELECT token_id FROM {tokens}
                            WHERE {where} AND 2 * %(offset)s + %(limit)s <= c.total
                            ORDER BY expires_at, token_id LIMIT %(limit)s OFFSET %(offset)s)
                           UNION ALL
                           (SELECT token_id FROM {tokens}
                            WHERE {where} AND 2 * %(offset)s + %(limit)s > c.total
                            ORDER BY expires_at DESC, token_id DESC
                            LIMIT greatest(0, least(%(limit)s, c.total - %(offset)s))
                            OFFSET greatest(0, c.total - %(offset)s - %(limit)s)))
                   ) AS p ON true
                   ORDER BY p.expires_at, p.token_id""",
                page_cols=_columns(_TOKEN_COLUMNS, "p"),
                where=_where(
                    ("app_key = %(app_key)s", True),
                    ("account = %(account)s", True),
                    ("expires_at > %(now)s", True),
                    ("strpos(search_text, %(search)s) > 0", searching),
                ),
            )
            for searching in (False, True)
        }
        # Several servers may purge at once: each skips the rows another has locked, so
        # purges never wait on each other, nor deadlock with a removal (R22). The rows are
        # deleted by their physical address (ctid), which stays put while they are locked:
        # a TID scan, three times faster than looking each one up again by token id.
        self.token_purge = self._counted(
            """DELETE FROM {tokens} WHERE ctid = ANY(ARRAY(
                   SELECT ctid FROM {tokens} WHERE expires_at <= %s
                   LIMIT %s FOR UPDATE SKIP LOCKED))"""
        )

        self._grant_queries()

    def _grant_queries(self) -> None:
        r = self._render
        # Authorization codes. A code is read only by taking it: the DELETE locks the row, so
        # of several transactions taking one code, only the first gets a row back.
        self.code_add = r(
            """INSERT INTO {codes} (digest, {code_cols})
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"""
        )
        self.code_app = r("SELECT app_key FROM {codes} WHERE digest = %s")
        self.code_take = r("DELETE FROM {codes} WHERE digest = %s RETURNING {code_cols}")
        self.code_remove_pair = self._counted(
            "DELETE FROM {codes} WHERE app_key = %s AND account = %s"
        )
        self.code_remove_app = self._counted("DELETE FROM {codes} WHERE app_key = %s")
        self.code_purge = self._counted(
            """DELETE FROM {codes} WHERE digest IN (
                   SELECT digest FROM {codes} WHERE expires_at <= %s
                   LIMIT %s FOR UPDATE SKIP LOCKED)"""
        )

        # Refresh tokens.
        self.refresh_add = r(
            """INSERT INTO {refresh_tokens} ({refresh_cols}, digest)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"""
        )
        self.refresh_app_by_digest = r("SELECT app_key FROM {refresh_tokens} WHERE digest = %s")
        self.refresh_app_by_id = r("SELECT app_key FROM {refresh_tokens} WHERE token_id = %s")
        self.refresh_get = r(
            "SELECT {refresh_cols} FROM {refresh_tokens} WHERE digest = %s FOR UPDATE"
        )
        self.refresh_rotate = r("UPDATE {refresh_tokens} SET rotated_at = %s WHERE token_id = %s")
        self.refresh_family_apps = r(
            "SELECT DISTINCT app_key FROM {refresh_tokens} WHERE family_id = %s"
        )
        self.refresh_remove_family = self._counted(
            "DELETE FROM {refresh_tokens} WHERE family_id = %s"
        )
        self.refresh_remove_pair = self._counted(
            "DELETE FROM {refresh_tokens} WHERE app_key = %s AND account = %s"
        )
        self.refresh_remove_app = self._counted("DELETE FROM {refresh_tokens} WHERE app_key = %s")
        self.refresh_purge = self._counted(
            """DELETE FROM {refresh_tokens} WHERE token_id IN (
                   SELECT token_id FROM {refresh_tokens} WHERE expires_at <= %s
                   LIMIT %s FOR UPDATE SKIP LOCKED)"""
        )

    def _render(self, template: LiteralString, **parts: sql.Composable) -> bytes:
        return sql.SQL(template).format(**self._names, **parts).as_bytes(self._conn)

    def _counted(self, delete: LiteralString) -> bytes:
        # The DELETE's row count as a row: a row comes back with a Flush, where a command's
        # count would need a Sync, which would end the transaction (see _Unit).
        return self._render(
            "WITH gone AS ({delete} RETURNING 1) SELECT count(*) FROM gone",
            delete=sql.SQL(delete).format(**self._names),
        )


def _columns(names: Sequence[str], alias: str | None = None) -> sql.Composable:
    return sql.SQL(", ").join(
        sql.Identifier(alias, name) if alias else sql.Identifier(name) for name in names
    )


def _where(*conditions: tuple[LiteralString, bool]) -> sql.Composable:
    wanted = [sql.SQL(text) for text, wanted in conditions if wanted]
    return sql.SQL(" AND ").join(wanted) if wanted else sql.SQL("true")


# -- schema ------------------------------------------------------------------------------------


def _schema_exists(conn: Connection, schema: str) -> bool:
    found = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,)
    ).fetchone()
    return found is not None


def _migrate(conn: Connection, schema: str | None, place: str) -> None:
    """Bring the schema to `SCHEMA_VERSION`, in one transaction, or refuse it untouched."""

    def table(name: str) -> sql.Identifier:
        return sql.Identifier(schema, name) if schema else sql.Identifier(name)

    names = {key: table(t) for key, t in _TABLES.items()}
    where = f"schema {schema!r}" if schema else "the default schema"
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        # Created only when missing: CREATE SCHEMA needs a privilege that a registry on an
        # existing schema should not need, and IF NOT EXISTS still asks for it.
        if schema and not _schema_exists(conn, schema):
            conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        found = {
            row[0]
            for row in conn.execute(
                """SELECT tablename FROM pg_catalog.pg_tables
                   WHERE schemaname = coalesce(%s, current_schema()) AND tablename = ANY(%s)""",
                (schema, list(_TABLES.values())),
            )
        }
        if _TABLES["version"] in found:
            rows = conn.execute(
                sql.SQL("SELECT version FROM {}").format(names["version"])
            ).fetchall()
            if len(rows) != 1:
                raise SchemaError(
                    f"the appregistry schema in {where} at {place} has a damaged version table"
                )
            version = int(rows[0][0])
        elif found:
            raise SchemaError(
                f"{where} at {place} is not an appregistry database: it has tables named like "
                f"appregistry's ({', '.join(sorted(found))}) but no schema version; "
                "nothing was changed"
            )
        else:
            version = 0
            conn.execute(
                sql.SQL(
                    """CREATE TABLE {} (
                           singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                           version integer NOT NULL)"""
                ).format(names["version"])
            )
            conn.execute(sql.SQL("INSERT INTO {} (version) VALUES (0)").format(names["version"]))
        if version > SCHEMA_VERSION:
            raise SchemaError(
                f"the appregistry schema in {where} at {place} has version {version}, newer "
                f"than this code knows ({SCHEMA_VERSION}): upgrade appregistry"
            )
        for script in _MIGRATIONS[version:]:
            conn.execute(sql.SQL(script).format(**names))
        if version < SCHEMA_VERSION:
            conn.execute(
                sql.SQL("UPDATE {} SET version = %s").format(names["version"]), (SCHEMA_VERSION,)
            )


# -- the unit of work --------------------------------------------------------------------------


class _Unit:
    """One transaction on one connection; the repositories share its app locks.

    How a transaction travels (see `PostgresStorage.transaction` for why): with libpq's
    pipeline mode (libpq 14 and later), the connection enters it at the first statement and
    sends no BEGIN. Statements sent before a Sync message run as one implicit transaction,
    which the Sync at the end commits, or rolls back if any statement failed (PostgreSQL's
    protocol documentation, "Pipelining"). Writes are sent without waiting for their
    answers; a read sends a Flush and waits for its rows (and for the answers before them).
    So issuing a token costs two round trips: the read of the app, and the INSERT with the
    Sync that commits it. Nothing may send a Sync before the end, as it would commit: so
    DELETEs whose count is needed answer it as a row (`_Queries._counted`), which comes back
    with a Flush. Without pipeline mode, BEGIN, every statement and COMMIT each wait for
    their answer.

    Statements go through two cursors: ``reader`` for those whose rows the caller needs,
    ``writer`` for the rest. They must not share one: the answer to a write arrives late and
    is attached to the cursor that sent it, where it would take the place of a read's rows.
    """

    def __init__(
        self, storage: PostgresStorage, conn: Connection, cursors: _Cursors, *, pipelined: bool
    ) -> None:
        self._storage = storage
        self._conn = conn
        self._pipelined = pipelined
        self._pipeline: psycopg.Pipeline | None = None
        self._leave_pipeline = ExitStack()
        self._reader, self._writer = cursors
        self._begun = False  # a statement was sent
        self._explicit = False  # BEGIN was sent (only without pipeline mode)
        self._wrote = False  # a statement that may change rows was sent
        self._in_pipeline = False  # in pipeline mode, not yet left by commit or roll_back
        self.q = storage._queries
        self.locked_apps: set[str] = set()
        self.apps = _Apps(self)
        self.permissions = _Permissions(self)
        self.installations = _Installations(self)
        self.tokens = _Tokens(self)
        self.codes = _Codes(self)
        self.refresh_tokens = _RefreshTokens(self)

    def _begin(self) -> None:
        # Only when the first statement comes: a transaction that sends nothing costs
        # nothing.
        self._begun = True
        if self._pipelined:
            self._pipeline = self._leave_pipeline.enter_context(self._conn.pipeline())
            self._in_pipeline = True
        else:
            self._explicit = True
            self._writer.execute(_BEGIN, prepare=False)

    def execute(self, query: bytes, params: Sequence[Any] | Mapping[str, Any] = ()) -> None:
        """Run a statement whose answer the caller does not need (in a pipeline: send it)."""
        self._wrote = True
        try:
            if not self._begun:
                self._begin()
            self._writer.execute(query, params)
        except (psycopg.Error, UnicodeError) as exc:
            raise self._storage._failure(exc) from exc

    def one(self, query: bytes, params: Sequence[Any] | Mapping[str, Any]) -> Row | None:
        self._wrote = self._wrote or not query.startswith(_SELECT)
        try:
            if not self._begun:
                self._begin()
            row: Row | None = self._reader.execute(query, params).fetchone()
        except (psycopg.Error, UnicodeError) as exc:
            raise self._storage._failure(exc) from exc
        return row

    def all(self, query: bytes, params: Sequence[Any] | Mapping[str, Any]) -> list[TupleRow]:
        self._wrote = self._wrote or not query.startswith(_SELECT)
        try:
            if not self._begun:
                self._begin()
            rows = self._reader.execute(query, params).fetchall()
        except (psycopg.Error, UnicodeError) as exc:
            raise self._storage._failure(exc) from exc
        return rows

    def count(self, query: bytes, params: Sequence[Any]) -> int:
        """Run a statement that answers one row holding a count (see `_Queries._counted`)."""
        row = self.one(query, params)
        return int(row[0]) if row is not None else 0

    def lock_app(self, key: str) -> None:
        """Lock the app's row until the transaction ends, unless this transaction already has."""
        if key not in self.locked_apps and self.one(self.q.app_lock, (key,)) is not None:
            self.locked_apps.add(key)

    def commit(self) -> None:
        """Commit, and wait for every answer still due: any statement's error is raised here.

        Raises:
            psycopg.Error: A statement or the commit failed. An implicit transaction is then
                rolled back already; an explicit one is still open, failed (see `end`).
        """
        if not self._begun:
            return
        if self._explicit:
            self._writer.execute(_COMMIT, prepare=False)
        self._sync()  # commits an implicit transaction

    def _sync(self) -> None:
        # Leave pipeline mode: the Sync, then every answer still due (errors are raised).
        self._in_pipeline = False
        self._leave_pipeline.close()

    def roll_back(self) -> None:
        """Roll back, swallowing errors: the caller is already raising one of its own.

        A transaction that only read is committed instead: that undoes nothing and releases
        its locks all the same, and spares the connection's prepared statements, which
        psycopg forgets (DEALLOCATE ALL) on every ROLLBACK.

        Otherwise, an implicit transaction must not meet a Sync before it is rolled back (the
        Sync would commit it): BEGIN makes it explicit, with what it did so far, and `end`
        sends ROLLBACK once the pipeline is left. (ROLLBACK in the pipeline would make
        psycopg forget its prepared statements only after the next one is prepared, which
        is then lost.) If a statement has failed, the server skips BEGIN up to the Sync,
        which rolls back.
        """
        if not self._begun:
            return
        if not self._wrote:
            with suppress(psycopg.Error):
                self.commit()
            return
        if not self._explicit:
            # Should this fail, a statement has failed (the Sync then rolls back) or the
            # connection is lost: either way the Sync commits nothing.
            with suppress(psycopg.Error):
                self._writer.execute(_BEGIN, prepare=False)
        with suppress(psycopg.Error):
            self._sync()

    def end(self) -> None:
        """Leave the connection idle, out of pipeline mode and out of any transaction.

        An explicit transaction still open (left so by `roll_back`, or failed) is rolled
        back here, by psycopg, which then forgets its prepared statements on both sides at
        once. A broken connection is left alone; the pool discards it.
        """
        if self._in_pipeline:
            # Interrupted (KeyboardInterrupt, say) before commit or roll_back left the
            # pipeline: a Sync now could commit what the block wrote. Closing the connection
            # rolls it back on the server; the pool opens another.
            self._conn.close()
            return
        with suppress(psycopg.Error):
            if self._conn.pgconn.transaction_status in _IN_TRANSACTION:
                self._conn.rollback()


def _page(rows: Sequence[Row], query: ListQuery, item: Callable[[Row], T]) -> Page[T]:
    # Every row carries the total; with an empty page there is one row of total and NULLs.
    total = int(rows[0][0]) if rows else 0
    items = tuple(item(row[1:]) for row in rows if row[1] is not None)
    return Page(items=items, total=total, page=query.page, per_page=query.per_page)


def _list_params(query: ListQuery, **values: object) -> dict[str, object]:
    return {**values, "search": query.search, "limit": query.per_page, "offset": query.offset}


class _Apps:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q
        # Secrets read along with their app; its row stays locked by this transaction, so
        # they stay current until it ends, unless it changes them itself.
        self._secrets: dict[str, StoredSecret] = {}

    def get(self, key: str) -> App | None:
        if not _storable(key):
            return None
        row = self._unit.one(self._q.app_get, (key,))
        if row is None:
            return None
        self._unit.locked_apps.add(key)
        self._secrets[key] = _stored_secret(row[_APP_WIDTH:])
        return _app(row)

    def get_secret(self, key: str) -> StoredSecret | None:
        if not _storable(key):
            return None
        known = self._secrets.get(key)
        if known is not None:
            return known
        row = self._unit.one(self._q.app_secret, (key,))
        if row is None:
            return None
        self._unit.locked_apps.add(key)
        return _stored_secret(row)

    def get_context(self, key: str, account: str | None) -> AppContext | None:
        if not _storable(key):
            return None
        if account is not None and not _storable(account):
            # No row can name such an account: it has no installation and no permission.
            app = self.get(key)
            if app is None:
                return None
            return AppContext(app, self._secrets[key], account, None, None)
        row = self._unit.one(self._q.app_context, {"key": key, "account": account})
        if row is None:
            return None
        self._unit.locked_apps.add(key)
        app = _app(row)
        at = _APP_WIDTH + _SECRET_WIDTH
        secret = self._secrets[key] = _stored_secret(row[_APP_WIDTH:at])
        acting_for = app.owner if account is None else account
        installation = (
            Installation(key, acting_for, row[at], _utc(row[at + 1]), row[at + 2])
            if row[at] is not None
            else None
        )
        permission = (
            AppsPermission(acting_for, row[at + 3], _utc(row[at + 4]))
            if row[at + 3] is not None
            else None
        )
        return AppContext(app, secret, acting_for, installation, permission)

    def add(self, app: App, secret: StoredSecret) -> None:
        values = _app_values(app) | dict(zip(_SECRET_COLUMNS, _secret_values(secret), strict=True))
        self._unit.execute(self._q.app_add, values)
        self._unit.locked_apps.add(app.key)  # a new row is ours until commit

    def update(self, app: App) -> None:
        if _storable(app.key):
            self._unit.execute(self._q.app_update, _app_values(app))

    def set_secret(self, key: str, secret: StoredSecret) -> None:
        if _storable(key):
            self._secrets.pop(key, None)
            self._unit.execute(self._q.app_set_secret, (*_secret_values(secret), key))

    def list_secrets(self, *, after: str | None, limit: int) -> list[tuple[str, StoredSecret]]:
        if after is not None and not _storable(after):
            return []
        if after is None:
            rows = self._unit.all(self._q.app_secrets_first, (limit,))
        else:
            rows = self._unit.all(self._q.app_secrets_after, (after, limit))
        self._unit.locked_apps.update(row[0] for row in rows)
        return [(row[0], _stored_secret(row[1:])) for row in rows]

    def remove(self, key: str) -> None:
        if _storable(key):
            self._secrets.pop(key, None)
            self._unit.execute(self._q.app_remove, (key,))

    def key_retired(self, key: str) -> bool:
        if not _storable(key):
            return False
        return self._unit.one(self._q.key_retired, (key,)) is not None

    def count_owned(self, owner: str) -> int:
        if not _storable(owner):
            return 0
        self._unit.execute(self._q.owner_lock, (_OWNER_LOCK_CLASS, owner))
        row = self._unit.one(self._q.app_count_owned, (owner,))
        return int(row[0]) if row is not None else 0

    def list(self, query: ListQuery, *, owner: str | None = None) -> Page[AppListing]:
        if not _storable(owner or "", query.search or ""):
            return Page((), 0, query.page, query.per_page)
        rows = self._unit.all(
            self._q.app_list[owner is not None, query.search is not None],
            _list_params(query, owner=owner),
        )
        return _page(rows, query, lambda row: AppListing(_app(row), int(row[_APP_WIDTH])))


class _Permissions:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def get(self, account: str) -> AppsPermission | None:
        if not _storable(account):
            return None
        row = self._unit.one(self._q.permission_get, (account,))
        return _permission(row) if row is not None else None

    def put(self, permission: AppsPermission) -> None:
        self._unit.execute(
            self._q.permission_put,
            (permission.account, permission.granted_by, permission.granted_at),
        )

    def remove(self, account: str) -> None:
        if _storable(account):
            self._unit.execute(self._q.permission_remove, (account,))


class _Installations:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def get(self, app_key: str, account: str) -> Installation | None:
        if not _storable(app_key, account):
            return None
        self._unit.lock_app(app_key)
        row = self._unit.one(self._q.installation_get, (app_key, account))
        return _installation(row) if row is not None else None

    def put(self, installation: Installation) -> None:
        self._unit.lock_app(installation.app_key)
        self._unit.execute(
            self._q.installation_put,
            (
                installation.app_key,
                installation.account,
                installation.installed_by,
                installation.installed_at,
                installation.suspended,
            ),
        )

    def remove(self, app_key: str, account: str) -> None:
        if _storable(app_key, account):
            self._unit.lock_app(app_key)
            self._unit.execute(self._q.installation_remove, (app_key, account))

    def remove_all_of_app(self, app_key: str) -> int:
        if not _storable(app_key):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.installation_remove_app, (app_key,))

    def list(self, account: str, query: ListQuery, *, now: datetime) -> Page[InstallationListing]:
        if not _storable(account, query.search or ""):
            return Page((), 0, query.page, query.per_page)
        rows = self._unit.all(
            self._q.installation_list[query.search is not None],
            _list_params(query, account=account, now=now),
        )
        width = _INSTALLATION_WIDTH

        def listing(row: Row) -> InstallationListing:
            app = _app(row[width : width + _APP_WIDTH])
            return InstallationListing(
                _installation(row[:width]), app, int(row[width + _APP_WIDTH])
            )

        return _page(rows, query, listing)


class _Tokens:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def add(self, token: AccessToken, digest: bytes) -> None:
        self._unit.lock_app(token.app_key)  # already held when the Registry issues
        self._unit.execute(
            self._q.token_add,
            (
                token.token_id,
                token.app_key,
                token.account,
                str(token.grant),
                token.issued_at,
                token.expires_at,
                token.user_agent,
                token.family_id,
                digest,
                search_text(token.user_agent),
            ),
        )

    def get(self, token_id: str) -> AccessToken | None:
        if not _storable(token_id):
            return None
        # Lock the token's app before the token itself: every transaction takes an app's
        # row before the rows that belong to the app, so two of them never wait on each other
        # in a circle (see PostgresStorage.transaction).
        row = self._unit.one(self._q.token_app, (token_id,))
        if row is None:
            return None
        self._unit.lock_app(row[0])
        row = self._unit.one(self._q.token_get, (token_id,))
        return _token(row) if row is not None else None

    def get_by_digest(self, digest: bytes) -> AccessToken | None:
        # The app's row first, then the token's, as everywhere (see PostgresStorage.transaction).
        row = self._unit.one(self._q.token_app_by_digest, (digest,))
        if row is None:
            return None
        self._unit.lock_app(row[0])
        row = self._unit.one(self._q.token_get_by_digest, (digest,))
        return _token(row) if row is not None else None

    def remove(self, token_ids: Collection[str]) -> int:
        ids = [token_id for token_id in set(token_ids) if _storable(token_id)]
        return self._unit.count(self._q.token_remove, (ids,)) if ids else 0

    def remove_family(self, family_id: str) -> int:
        if not _storable(family_id):
            return 0
        for (app_key,) in self._unit.all(self._q.token_family_apps, (family_id,)):
            self._unit.lock_app(app_key)
        return self._unit.count(self._q.token_remove_family, (family_id,))

    def remove_for(self, app_key: str, account: str) -> int:
        if not _storable(app_key, account):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.token_remove_pair, (app_key, account))

    def remove_all_of_app(self, app_key: str) -> int:
        if not _storable(app_key):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.token_remove_app, (app_key,))

    def count_live(self, app_key: str, account: str, *, now: datetime) -> int:
        if not _storable(app_key, account):
            return 0
        row = self._unit.one(self._q.token_count_live, (app_key, account, now))
        return int(row[0]) if row is not None else 0

    def list(
        self, app_key: str, account: str, query: ListQuery, *, now: datetime
    ) -> Page[AccessToken]:
        if not _storable(app_key, account, query.search or ""):
            return Page((), 0, query.page, query.per_page)
        rows = self._unit.all(
            self._q.token_list[query.search is not None],
            _list_params(query, app_key=app_key, account=account, now=now),
        )
        return _page(rows, query, _token)

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        return self._unit.count(self._q.token_purge, (now, limit))


class _Codes:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def add(self, code: AuthorizationCode, digest: bytes) -> None:
        self._unit.lock_app(code.app_key)
        self._unit.execute(
            self._q.code_add,
            (
                digest,
                code.app_key,
                code.account,
                code.redirect_url,
                code.approved_by,
                code.issued_at,
                code.expires_at,
                code.code_challenge,
                code.code_challenge_method,
            ),
        )

    def take(self, digest: bytes) -> AuthorizationCode | None:
        # Lock the code's app before the code (the order every transaction keeps); should the
        # code be taken in between, the DELETE finds nothing.
        row = self._unit.one(self._q.code_app, (digest,))
        if row is None:
            return None
        self._unit.lock_app(row[0])
        row = self._unit.one(self._q.code_take, (digest,))
        return _code(row) if row is not None else None

    def remove_for(self, app_key: str, account: str) -> int:
        if not _storable(app_key, account):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.code_remove_pair, (app_key, account))

    def remove_all_of_app(self, app_key: str) -> int:
        if not _storable(app_key):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.code_remove_app, (app_key,))

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        return self._unit.count(self._q.code_purge, (now, limit))


class _RefreshTokens:
    def __init__(self, unit: _Unit) -> None:
        self._unit = unit
        self._q = unit.q

    def add(self, token: RefreshToken, digest: bytes) -> None:
        self._unit.lock_app(token.app_key)
        self._unit.execute(
            self._q.refresh_add,
            (
                token.token_id,
                token.family_id,
                token.app_key,
                token.account,
                str(token.grant),
                token.issued_at,
                token.expires_at,
                token.rotated_at,
                digest,
            ),
        )

    def get(self, digest: bytes) -> RefreshToken | None:
        # Locked to the end of the transaction: two refreshes with one token run one after
        # the other, so the second sees the first's rotation.
        row = self._unit.one(self._q.refresh_app_by_digest, (digest,))
        if row is None:
            return None
        self._unit.lock_app(row[0])
        row = self._unit.one(self._q.refresh_get, (digest,))
        return _refresh(row) if row is not None else None

    def mark_rotated(self, token_id: str, at: datetime) -> None:
        if not _storable(token_id):
            return
        row = self._unit.one(self._q.refresh_app_by_id, (token_id,))
        if row is not None:
            self._unit.lock_app(row[0])
            self._unit.execute(self._q.refresh_rotate, (at, token_id))

    def remove_family(self, family_id: str) -> int:
        if not _storable(family_id):
            return 0
        for (app_key,) in self._unit.all(self._q.refresh_family_apps, (family_id,)):
            self._unit.lock_app(app_key)
        return self._unit.count(self._q.refresh_remove_family, (family_id,))

    def remove_for(self, app_key: str, account: str) -> int:
        if not _storable(app_key, account):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.refresh_remove_pair, (app_key, account))

    def remove_all_of_app(self, app_key: str) -> int:
        if not _storable(app_key):
            return 0
        self._unit.lock_app(app_key)
        return self._unit.count(self._q.refresh_remove_app, (app_key,))

    def purge_expired(self, *, now: datetime, limit: int) -> int:
        return self._unit.count(self._q.refresh_purge, (now, limit))


# -- the storage -------------------------------------------------------------------------------


class PostgresStorage:
    """Transactional storage in PostgreSQL, safe to share between threads and servers.

    Most hosts open it with `from_url`. The constructor takes a ready
    `psycopg_pool.ConnectionPool`, for hosts that configure their own (TLS, ``check``,
    sizes); the storage takes it over: it opens it if needed, and `close` closes it.
    Connections are used in autocommit mode, transactions are explicit.

    Args:
        pool: The connection pool. Opening the storage applies pending migrations through it.
        schema: A PostgreSQL schema to keep the tables in (created if missing); ``None``: the
            connection's ``search_path`` decides (usually ``public``).

    Raises:
        StorageUnavailable: The server cannot be reached.
        SchemaError: The schema is newer than this code, or is not appregistry's.
        ValueError: ``schema`` is not a valid schema name.
    """

    def __init__(self, pool: Pool, *, schema: str | None = None) -> None:
        self._pool = pool
        self._conninfo = pool.conninfo if isinstance(pool.conninfo, str) else ""
        self._place = _place(self._conninfo)
        self._schema: str | None = None
        self._local = threading.local()  # per thread: inside a transaction? (no nesting)
        self._closed = False
        # Cursors kept per connection (see token_context); for checks, and for transactions.
        self._check_cursors: dict[Connection, Cursor] = {}
        self._unit_cursors: dict[Connection, _Cursors] = {}
        self._shared_apps: dict[tuple[Any, ...], App] = {}
        # Pipeline mode needs libpq 14 or later; without it, each statement waits its turn.
        self._pipelined = psycopg.Pipeline.is_supported()
        try:
            self._schema = _check_schema_name(schema)
            try:
                # Wait for the first connections: asked for while the pool is still filling,
                # a connection makes the pool open one more, and checks would then take turns
                # on two connections, each colder than one would be.
                pool.open(wait=True, timeout=pool.timeout)
            except psycopg.Error as exc:
                raise self._failure(exc) from exc
            with self._connection() as conn:
                try:
                    _migrate(conn, self._schema, self._place)
                    self._queries = _Queries(conn, self._schema)
                except (psycopg.Error, UnicodeError) as exc:
                    raise self._failure(exc) from exc
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        schema: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 5,
        pool_timeout: float = 30,
    ) -> PostgresStorage:
        """Connect to the PostgreSQL server at ``url`` and open the registry there.

        Args:
            url: ``postgresql://user[:password]@host[:port]/dbname[?param=value...]``
                (``postgres://`` too); any libpq parameter may follow, such as
                ``sslmode=require``, and ``schema=NAME`` for the tables' schema.
            schema: See the class; the tables' PostgreSQL schema. It may also come from
                the URL; giving two different ones is an error.
            min_size, max_size: How many connections the pool keeps, and at most opens.
            connect_timeout: Seconds to wait for a connection (libpq counts whole seconds,
                at least 2).
            pool_timeout: Seconds an operation waits for a free connection before failing.

        Raises:
            StorageUnavailable: The server cannot be reached or refuses the login; the
                message names the host and port, never the password.
            SchemaError: The schema is newer than this code, or is not appregistry's.
            ValueError: A size, timeout or schema name is out of range.
        """
        scheme = url.split(":", 1)[0].lower()
        if scheme not in {"postgresql", "postgres"}:
            raise StorageUnavailable(f"not a PostgreSQL URL: {redact_url(url)!r}")
        url, url_schema = _split_schema(url)
        if url_schema is not None and schema is not None and url_schema != schema:
            raise ValueError(f"two schemas given: {url_schema!r} in the URL, {schema!r}")
        schema = schema if schema is not None else url_schema
        _check_schema_name(schema)
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError("need 0 <= min_size <= max_size and max_size >= 1")
        if connect_timeout <= 0 or pool_timeout <= 0:
            raise ValueError("timeouts must be positive")
        seconds = max(2, math.ceil(connect_timeout))  # libpq's unit and minimum
        place = _place(url)
        # One connection first: it fails fast with libpq's own reason (refused, timed out,
        # authentication failed) where a pool would only say it timed out.
        try:
            psycopg.connect(url, connect_timeout=seconds).close()
        except psycopg.Error as exc:
            raise StorageUnavailable(
                f"cannot connect to PostgreSQL at {place}: {_scrub(str(exc), url)}"
            ) from exc
        pool: Pool = ConnectionPool(
            url,
            kwargs={"autocommit": True, "connect_timeout": seconds},
            min_size=min_size,
            max_size=max_size,
            open=False,
            timeout=pool_timeout,
            name=f"appregistry@{place}",
        )
        return cls(pool, schema=schema)

    @property
    def schema(self) -> str | None:
        """The PostgreSQL schema holding the tables, or ``None`` for the connection's default."""
        return self._schema

    def __repr__(self) -> str:
        schema = f", schema={self._schema!r}" if self._schema else ""
        state = ", closed" if self._closed else ""
        return f"PostgresStorage({self._place!r}{schema}{state})"

    # -- plumbing ---------------------------------------------------------------------------

    def _failure(self, exc: BaseException) -> StorageError:
        """The appregistry error for a driver error; the caller chains ``exc``."""
        if isinstance(exc, UnicodeError):
            return StorageError("text that PostgreSQL cannot store (not valid Unicode)")
        if isinstance(exc, psycopg.errors.PipelineAborted):
            # Only seen after the failed statement's own error was raised (and caught).
            return StorageError(
                f"PostgreSQL at {self._place} failed: an earlier statement of this "
                "transaction failed"
            )
        state = getattr(exc, "sqlstate", None)
        diag = getattr(exc, "diag", None)
        # The primary message only: the detail can quote row values.
        primary = getattr(diag, "message_primary", None) or str(exc).split("\n", 1)[0]
        message = _scrub(primary, self._conninfo)
        if isinstance(exc, psycopg.OperationalError) and (
            state is None or state[:2] in _UNAVAILABLE_CLASSES or state in _UNAVAILABLE_STATES
        ):
            return StorageUnavailable(f"PostgreSQL at {self._place} is unavailable: {message}")
        code = f" [{state}]" if state else ""
        return StorageError(f"PostgreSQL at {self._place} failed{code}: {message}")

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        if self._closed:
            raise StorageError("the PostgreSQL storage is closed")
        try:
            with self._pool.connection() as conn:
                if not conn.autocommit:
                    conn.autocommit = True
                yield conn
        except psycopg.Error as exc:
            raise self._failure(exc) from exc

    # -- the port ---------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[_Unit]:
        """A transaction; see `appregistry.ports.Storage.transaction`.

        Transactions run at READ COMMITTED and lock what they read. The first read of an app
        in a transaction (or of an installation or token, which reads their app first) locks
        the app's row (``FOR NO KEY UPDATE``) until commit; permissions are locked the same
        way. So a disable and an issue of the same app run one after the other: either the
        issue commits first and the disable follows (the token is then refused, the app being
        disabled), or the issue waits and then sees the app disabled. The same holds for
        remove, uninstall, suspend, regenerate and forbid. Every transaction takes an app's
        row before the rows that belong to it, and apps before permissions, so they cannot
        deadlock on each other in the course of one operation of the Registry.

        SERIALIZABLE with retries was the alternative, but a retry has to re-run the
        caller's block, which a context manager cannot do; locks make the caller wait instead
        of fail. Token checks take no locks at all.

        Round trips: with libpq 14 or later a transaction runs in pipeline mode, without
        BEGIN or COMMIT statements (an implicit transaction, ended by the protocol's Sync):
        reads wait for their rows, writes go out without waiting, and the end commits them in
        one round trip. Issuing a token is two round trips, not four. The price: a failed
        write (a key taken meanwhile) is reported by the next read or by the end of the block,
        not by the call that sent it. Either way the whole transaction is rolled back and
        `appregistry.errors.StorageError` raised, before the block's changes are visible to
        anyone.

        Transactions do not nest: opening one inside another in the same thread raises
        `appregistry.errors.StorageError` (it would need a second connection and could wait
        on its own locks).
        """
        if getattr(self._local, "inside", False):
            raise StorageError("transactions do not nest")
        self._local.inside = True
        try:
            with self._connection() as conn:
                cursors = self._unit_cursors.get(conn) or self._new_unit_cursors(conn)
                unit = _Unit(self, conn, cursors, pipelined=self._pipelined)
                try:
                    try:
                        yield unit
                    except BaseException:
                        unit.roll_back()
                        raise
                    try:
                        unit.commit()
                    except psycopg.Error as exc:  # a statement's or the commit's own error
                        raise self._failure(exc) from exc
                finally:
                    unit.end()
        finally:
            self._local.inside = False

    def token_context(self, digest: bytes, *older: bytes) -> TokenContext | None:
        """See `appregistry.ports.Storage.token_context`: one prepared query, no transaction."""
        # The hot path: the pool is used without its context managers, and each connection
        # keeps a cursor for checks, which keeps its row loaders; a new cursor looks them up
        # again. Together that was a quarter of a check on top of the round trip.
        if self._closed:
            raise StorageError("the PostgreSQL storage is closed")
        pool = self._pool
        try:
            conn = pool.getconn()
            try:
                if not conn.autocommit:
                    conn.autocommit = True
                cursor = self._check_cursors.get(conn) or self._new_check_cursor(conn)
                if older:
                    cursor.execute(
                        self._queries.token_context_any, ([digest, *older],), prepare=True
                    )
                else:
                    cursor.execute(self._queries.token_context, (digest,), prepare=True)
                row = cursor.fetchone()
            finally:
                pool.putconn(conn)
        except psycopg.Error as exc:
            raise self._failure(exc) from exc
        if row is None:
            return None
        app_at = _TOKEN_WIDTH
        rest = app_at + _APP_WIDTH
        app = self._shared_app(row[app_at:rest]) if row[app_at] is not None else None
        installation = (
            Installation(row[1], row[2], row[rest], _utc(row[rest + 1]), row[rest + 2])
            if row[rest] is not None
            else None
        )
        permission = (
            AppsPermission(row[2], row[rest + 3], _utc(row[rest + 4]))
            if row[rest + 3] is not None
            else None
        )
        return TokenContext(_token(row), app, installation, permission)

    def _new_check_cursor(self, conn: Connection) -> Cursor:
        cursors = self._check_cursors
        if len(cursors) >= self._pool.max_size:
            # Forget the cursors of connections the pool has closed (and replaced).
            self._check_cursors = cursors = {c: cur for c, cur in cursors.items() if not c.closed}
        cursor = cursors[conn] = conn.cursor()
        return cursor

    def _new_unit_cursors(self, conn: Connection) -> _Cursors:
        # Kept, as the check's cursor is: a cursor that runs the same statement again keeps
        # what it looked up for its parameters and rows.
        cursors = self._unit_cursors
        if len(cursors) >= self._pool.max_size:
            self._unit_cursors = cursors = {c: pair for c, pair in cursors.items() if not c.closed}
        pair = cursors[conn] = (conn.cursor(), conn.cursor())
        return pair

    def _shared_app(self, row: tuple[Any, ...]) -> App:
        """The app record of these column values, made once and shared by later checks.

        Records are immutable, so checks that read the same values may share one. Apps are
        few and their records the dearest to build; looking one up by its values costs a
        fraction of building it. Any change to the app changes the values: never stale.
        """
        shared = self._shared_apps
        app = shared.get(row)
        if app is None:
            if len(shared) >= _SHARED_APPS:
                shared.clear()
            app = shared[row] = _app(row)
        return app

    def close(self) -> None:
        """Close the pool; the storage cannot be used afterwards. Closing twice is harmless."""
        self._closed = True
        self._check_cursors = {}
        self._unit_cursors = {}
        self._pool.close()


# Transactions are begun and ended by these statements, never prepared (see _Unit).
_BEGIN: Final = b"BEGIN"
_SELECT: Final = b"SELECT"  # a statement that starts so changes no rows (see _Unit.roll_back)
_COMMIT: Final = b"COMMIT"
_IN_TRANSACTION: Final = frozenset(
    {psycopg.pq.TransactionStatus.INTRANS, psycopg.pq.TransactionStatus.INERROR}
)

# SQLSTATEs that mean "the server cannot serve us now", not "the request was wrong":
# connection exceptions (08), insufficient resources (53), system errors (58), and the
# shutdowns and restarts of class 57 (not its query cancellations). A client-side failure
# (connection lost, no free connection in the pool) has no SQLSTATE at all.
_UNAVAILABLE_CLASSES: Final = frozenset({"08", "53", "58"})
_UNAVAILABLE_STATES: Final = frozenset({"57P01", "57P02", "57P03", "57P04", "57P05"})
