"""The PostgreSQL backend's SQL text, and the conversions between rows and records."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Final, LiteralString, TypeVar

from psycopg import sql

from ..._records import (
    AccessToken,
    App,
    AppsPermission,
    AuthorizationCode,
    Grant,
    Installation,
    Page,
    RefreshToken,
    StoredSecret,
)
from ..._validation import search_text
from ...ports import ListQuery
from ._lists import ListQueries
from ._purge import PurgeQueries
from ._schema import _TABLES, Connection

Row = Sequence[Any]
T = TypeVar("T")

# Grant(value) goes through the enum's lookup machinery; a dict is ten times faster.
_GRANTS: Final = {grant.value: grant for grant in Grant}

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
    "approved_by",
    "last_used_at",
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
    "redirect_url_given",
    "used_at",
    "family_id",
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
    "approved_by",
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
        approved_by=row[8],
        last_used_at=_utc(row[9]) if row[9] is not None else None,
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
        redirect_url_given=row[8],
        used_at=_utc(row[9]) if row[9] is not None else None,
        family_id=row[10],
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
        approved_by=row[8],
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
        # Lists: the total and the page in one statement, so both come from one snapshot
        # (see _lists).
        self.lists = ListQueries(
            r,
            self._names,
            {
                "apps": _APP_COLUMNS,
                "installations": _INSTALLATION_COLUMNS,
                "tokens": _TOKEN_COLUMNS,
            },
        )

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
        # Tokens.
        self.token_add = r(
            """INSERT INTO {tokens} ({token_cols}, digest, search_text)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""
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
        # A batch of last uses, in one statement. It locks token rows only, in no set order,
        # so it skips those another transaction holds (a removal, which takes the app's row
        # first, or another process's batch): waiting could close a circle with a removal,
        # and a use skipped is only a little less recent. Never moves a time backwards.
        self.token_record_uses = r(
            """UPDATE {tokens} AS t SET last_used_at = v.at
               FROM (SELECT s.token_id, u.at FROM {tokens} AS s
                     JOIN unnest(%s::text[], %s::timestamptz[]) AS u (id, at)
                       ON s.token_id = u.id
                     WHERE s.last_used_at IS NULL OR s.last_used_at < u.at
                     FOR NO KEY UPDATE OF s SKIP LOCKED) AS v
               WHERE t.token_id = v.token_id"""
        )

        self._grant_queries()
        # Counts of expired rows, and the purge of ended grace secrets (see _purge).
        self.purge = PurgeQueries(r, self._counted)

    def _grant_queries(self) -> None:
        r = self._render
        # Authorization codes. A code is read only by redeeming it: the UPDATE locks the row
        # and sees the latest committed version, so of several transactions redeeming one
        # code, only the first finds it unused; the others read it as that one left it.
        self.code_add = r(
            """INSERT INTO {codes} (digest, {code_cols})
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""
        )
        self.code_app = r("SELECT app_key FROM {codes} WHERE digest = %s")
        self.code_redeem = r(
            """UPDATE {codes} SET used_at = %s, family_id = %s
               WHERE digest = %s AND used_at IS NULL RETURNING {code_cols}"""
        )
        self.code_get = r("SELECT {code_cols} FROM {codes} WHERE digest = %s")
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
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"""
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

        # The storage's settings (see ports.SettingsRepository).
        self.setting_get = r("SELECT value FROM {settings} WHERE name = %s FOR UPDATE")
        self.setting_put = r(
            """INSERT INTO {settings} (name, value) VALUES (%s, %s)
               ON CONFLICT (name) DO UPDATE SET value = excluded.value"""
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


def _page(rows: Sequence[Row], query: ListQuery, item: Callable[[Row], T]) -> Page[T]:
    # Every row carries the total; with an empty page there is one row of total and NULLs.
    total = int(rows[0][0]) if rows else 0
    items = tuple(item(row[1:]) for row in rows if row[1] is not None)
    return Page(items=items, total=total, page=query.page, per_page=query.per_page)


def _list_params(query: ListQuery, **values: object) -> dict[str, object]:
    return {**values, "search": query.search, "limit": query.per_page, "offset": query.offset}
