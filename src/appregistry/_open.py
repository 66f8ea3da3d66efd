"""Opening a Registry on a storage named by URL: the one place the CLI and hosts share."""

from __future__ import annotations

from typing import Any

from ._registry import Registry
from .storage import open_storage

__all__ = ["open_registry"]


def open_registry(url: str, **options: Any) -> Registry:
    """A `Registry` on the storage that ``url`` names (see `appregistry.storage.open_storage`).

    Args:
        url: ``sqlite:///path/to/file.sqlite3``, ``postgresql://user@host/db`` or ``memory:``.
        **options: Passed to `Registry` (``clock``, ``policy``, ``token_lifetime``, ``pepper``,
            ``secret_encryption_key``, ``listeners``, ...).

    Raises:
        StorageUnavailable: The storage cannot be opened; the message names it (no password).
        SchemaError: It is not an appregistry database, or its schema is newer than this code.

    >>> with open_registry("memory:") as registry:
    ...     registry.list_apps().total
    0
    """
    storage = open_storage(url)
    try:
        return Registry(storage=storage, **options)
    except BaseException:
        storage.close()
        raise
