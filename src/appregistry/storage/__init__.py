"""Storage backends, and `open_storage` to choose one by URL.

- ``memory:``: `appregistry.storage.memory.MemoryStorage`, nothing kept after exit.
- ``sqlite:///PATH``: `appregistry.storage.sqlite.SQLiteStorage`, the embedded default.
  ``sqlite:///registry.db`` is relative to the working directory, ``sqlite:////srv/registry.db``
  absolute (four slashes), ``sqlite:///:memory:`` a private in-memory database.
- ``postgresql://USER@HOST:PORT/DB``: `appregistry.storage.postgres.PostgresStorage`, for
  several app servers sharing one registry (needs ``appregistry[postgres]``).

SQL backends are imported only when their URL is opened, so ``import appregistry`` never
imports a database driver.

>>> storage = open_storage("memory:")
>>> type(storage).__name__
'MemoryStorage'
>>> open_storage("sqlite:///:memory:")
SQLiteStorage(':memory:')
"""

from __future__ import annotations

import urllib.parse

from ..errors import StorageUnavailable
from ..ports import Storage

__all__ = ["open_storage", "redact_url"]


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, safe for messages and logs.

    >>> redact_url("postgresql://app:hunter2@db.example:5432/apps")
    'postgresql://app:***@db.example:5432/apps'
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostinfo = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{hostinfo}"))


def open_storage(url: str) -> Storage:
    """Open the storage that ``url`` names.

    Raises:
        StorageUnavailable: The URL names no supported backend, or it cannot be opened.
    """
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "memory":
        from .memory import MemoryStorage  # noqa: PLC0415 - backends load when opened

        return MemoryStorage()
    if scheme == "sqlite":
        from .sqlite import SQLiteStorage  # noqa: PLC0415 - backends load when opened

        return SQLiteStorage.from_url(url)
    if scheme in {"postgresql", "postgres"}:
        return _open_postgres(url)
    raise StorageUnavailable(
        f"unsupported storage URL {redact_url(url)!r}: expected memory:, sqlite:///PATH "
        "or postgresql://..."
    )


def _open_postgres(url: str) -> Storage:
    try:
        from .postgres import PostgresStorage  # noqa: PLC0415 - needs the optional driver
    except ImportError as exc:
        raise StorageUnavailable(
            f"cannot open {redact_url(url)!r}: PostgreSQL support needs the "
            "'appregistry[postgres]' extra"
        ) from exc
    return PostgresStorage.from_url(url)
