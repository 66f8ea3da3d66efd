"""Storage backends, and `open_storage` to choose one by URL.

- ``memory:``: `appregistry.storage.memory.MemoryStorage`, nothing kept after exit.

SQL backends are imported only when their URL is opened, so ``import appregistry`` never
imports a database driver.

>>> storage = open_storage("memory:")
>>> type(storage).__name__
'MemoryStorage'
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
        from .memory import MemoryStorage

        return MemoryStorage()
    raise StorageUnavailable(
        f"unsupported storage URL {redact_url(url)!r}: expected memory:, sqlite:///PATH "
        "or postgresql://..."
    )
