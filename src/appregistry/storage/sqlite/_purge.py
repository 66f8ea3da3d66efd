"""The SQLite backend's counts of expired rows and its purge of ended grace secrets.

Kept apart from `_repositories` (which calls these) so that module stays readable. Every
statement reads an expiry index (``*_by_expiry``, or ``apps_by_grace_deadline`` for the
previous secrets), never the live rows.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Final, Literal

from ._queries import _to_db

if TYPE_CHECKING:
    from ._repositories import _Session

#: The tables whose rows expire, each with an index on ``expires_at``.
ExpiringTable = Literal["tokens", "codes", "refresh_tokens"]

_COUNT: Final[dict[str, str]] = {
    table: f"SELECT count(*) FROM {table} WHERE expires_at <= ?"  # noqa: S608 - constant names
    for table in ("tokens", "codes", "refresh_tokens")
}
_COUNT_GRACE: Final = "SELECT count(*) FROM apps WHERE previous_secret_valid_until <= ?"
# By rowid, which the partial index holds: the batch is chosen from the index alone.
_PURGE_GRACE: Final = (
    "UPDATE apps SET previous_secret_digest = NULL, previous_secret_valid_until = NULL "
    "WHERE rowid IN (SELECT rowid FROM apps WHERE previous_secret_valid_until <= ? LIMIT ?)"
)


def count_expired(session: _Session, table: ExpiringTable, now: datetime) -> int:
    """How many rows of ``table`` are expired at ``now`` (``expires_at <= now``)."""
    return int(session.one(_COUNT[table], (_to_db(now),))[0])


def count_expired_grace(session: _Session, now: datetime) -> int:
    """`appregistry.ports.AppRepository.count_expired_grace`."""
    return int(session.one(_COUNT_GRACE, (_to_db(now),))[0])


def purge_expired_grace(session: _Session, now: datetime, limit: int) -> int:
    """`appregistry.ports.AppRepository.purge_expired_grace`."""
    return session.execute(_PURGE_GRACE, (_to_db(now), limit)).rowcount
