"""The SQLite backend: the embedded default, stdlib `sqlite3` only.

One file holds the registry. Many threads may share one `SQLiteStorage`; several processes may
open the same file.

- **Transactions**: every `SQLiteStorage.transaction` starts with ``BEGIN IMMEDIATE``, so
  transactions take the database's write lock up front and run one after another: a disable
  and an issue racing can never both see the app enabled. The lock is waited for up to
  ``timeout`` seconds (SQLite's busy timeout).
- **Token checks**: `SQLiteStorage.token_context` is one ``SELECT`` joining the token to
  its app, installation and permission, outside any transaction. The file is in WAL mode, so
  checks read the last committed state without waiting for writers. The app comes as one
  JSON text (``apps.record``), and the records built from it are shared between checks.
- **Purges**: each batch is its own short transaction, but while batches follow each other
  the connection keeps a larger page cache and lets the write-ahead log grow to the size of
  the database (at most 1 GiB) before checkpointing it (see ``_Session.tune_for_purge``); the
  last batch checkpoints.
- **Connections**: a small pool (``pool_size``) of connections shared by the threads; foreign
  keys are on in every connection.
- **Schema**: versioned with ``PRAGMA user_version`` and marked as an appregistry
  database with ``PRAGMA application_id``. Forward migrations are applied **when the storage
  is opened**, in one transaction. A file that is not an appregistry database (another
  SQLite database, or not SQLite at all) is refused with `appregistry.errors.SchemaError` and
  is not written to; so is a database whose schema is newer than this code.
- **Values**: datetimes are stored as whole microseconds since the Unix epoch (UTC), so they
  round-trip exactly and compare in SQL; they come back as aware UTC datetimes. Names are
  stored beside their case-folded form and their `appregistry.search_text`, so order and
  search agree with the other backends for any Unicode text.
- **Secrets**: only digests and ciphertext are stored. Tokens, authorization codes and
  refresh tokens are stored by digest.
- **Integrity**: installations, tokens, codes and refresh tokens reference their app; removing
  an app removes them too (``ON DELETE CASCADE``), so a token can never outlive its app. The
  keys of removed apps are kept in ``retired_keys``.

``:memory:`` opens a private in-memory database, for tests and demos. It has one connection,
so its operations run one at a time.

>>> storage = SQLiteStorage(":memory:")
>>> with storage.transaction() as tx:
...     tx.apps.count_owned("acme")
0
>>> storage.close()
"""

from __future__ import annotations

from typing import Final

from ._queries import _TOKEN_CONTEXT_SQL as _TOKEN_CONTEXT_SQL
from ._schema import _MIGRATIONS as _MIGRATIONS
from ._schema import APPLICATION_ID as APPLICATION_ID
from ._schema import SCHEMA_VERSION as _SCHEMA_VERSION
from ._storage import SQLiteStorage as SQLiteStorage

__all__ = ["SCHEMA_VERSION", "SQLiteStorage"]

# Bound here, not only imported, so that Sphinx autodoc finds the #: comment and lists it.
#: The schema version this code creates and understands.
SCHEMA_VERSION: Final = _SCHEMA_VERSION
