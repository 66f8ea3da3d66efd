"""The PostgreSQL schema: its tables, its migrations, and the code that applies them."""

from __future__ import annotations

from typing import Final, LiteralString

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow

from ...errors import SchemaError

Connection = psycopg.Connection[TupleRow]

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
    "settings": "appregistry_settings",
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
    """
    -- A used code is kept, marked used with the grant family its exchange issued, until it
    -- expires: a replay then revokes that family (RFC 6749 section 10.5). Codes stored before
    -- were never used (taking one deleted it), and named their redirect URL.
    ALTER TABLE {codes} ADD COLUMN redirect_url_given boolean NOT NULL DEFAULT true,
                        ADD COLUMN used_at timestamptz,
                        ADD COLUMN family_id text COLLATE "C";
    """,
    """
    -- Who approved a token for its account (issue_token's approved_by, or the authorization
    -- code's user), on the token and on its family's refresh tokens, so that a rotation
    -- passes it on; NULL for client credentials and for the tokens stored before. And when a
    -- token was last used, which nothing records yet.
    ALTER TABLE {tokens} ADD COLUMN approved_by text,
                         ADD COLUMN last_used_at timestamptz;
    ALTER TABLE {refresh_tokens} ADD COLUMN approved_by text;
    -- The storage's own settings: the fingerprints of the pepper and of the secret encryption
    -- key its digests and ciphertexts were made with (ports.SettingsRepository).
    CREATE TABLE {settings} (name text COLLATE "C" PRIMARY KEY, value bytea NOT NULL);
    """,
    """
    -- A purge finds the apps whose previous secret's grace has ended from this index, which
    -- holds only the apps that keep a previous secret.
    CREATE INDEX IF NOT EXISTS appregistry_apps_by_grace_deadline
        ON {apps} (previous_secret_valid_until) WHERE previous_secret_valid_until IS NOT NULL;
    """,
)

#: The schema version this code creates and understands.
SCHEMA_VERSION: Final = len(_MIGRATIONS)

# Advisory lock keys. The one-key and two-key spaces of PostgreSQL do not overlap.
_MIGRATION_LOCK: Final = 0x6170_7072_6567_6973  # "appregis"
_OWNER_LOCK_CLASS: Final = 0x6170_7072  # "appr", with hashtext(owner) as the second key


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
