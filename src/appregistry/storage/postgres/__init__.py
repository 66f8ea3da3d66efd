"""The PostgreSQL backend: one registry shared by many app servers.

Install it with the ``postgres`` extra (``pip install 'appregistry[postgres]'``), which brings
psycopg 3 and its connection pool. ``import appregistry`` never imports this module; it is
loaded when a ``postgresql://`` URL is opened or when you import it yourself.

- **Opening**: `PostgresStorage.from_url` connects once up front, so an unreachable server or
  a refused login fails at once (within ``connect_timeout``) with
  `appregistry.errors.StorageUnavailable` naming the host and port, never the password. Then
  it keeps a pool of connections (``min_size`` to ``max_size``) shared by the threads.
- **Schema**: tables are named ``appregistry_*``; ``schema`` puts them in a PostgreSQL
  schema of their own (created if missing), otherwise they go where the connection's
  ``search_path`` points (usually ``public``). The schema version lives in
  ``appregistry_schema_version``; forward migrations are applied **when the storage is
  opened**, in one transaction, under an advisory lock so that app servers starting together
  migrate once. A schema newer than this code, or tables named like ours without a version,
  are refused with `appregistry.errors.SchemaError` and left untouched.
- **Token checks**: `PostgresStorage.token_context` is one prepared ``SELECT`` joining
  the token to its app, installation and permission, in autocommit (no transaction), so it
  sees committed data only and takes no locks. ``?prepare=off`` sends it (and everything
  else) unprepared, for a pooler in transaction mode such as PgBouncer.
- **Transactions**: see `PostgresStorage.transaction`: READ COMMITTED with row locks, the
  app's row guarding everything that belongs to the app; pipelined, so that issuing a token
  takes two round trips.
- **Values**: timestamps are ``timestamptz`` and come back as UTC datetimes; secrets,
  tokens, authorization codes and refresh tokens are only ever digests and ciphertext
  (``bytea``); the keys of removed apps are kept. Names are stored beside their
  case-folded form and their `appregistry.search_text`, computed in Python and compared with
  ``COLLATE "C"`` (byte order of UTF-8 is code-point order), so order and search agree with the
  other backends for any Unicode text.

>>> from appregistry import Registry
>>> storage = PostgresStorage.from_url(  # doctest: +SKIP
...     "postgresql://postgres@127.0.0.1:5432/test", schema="apps")
>>> registry = Registry(storage=storage)  # doctest: +SKIP
"""

from typing import Final

from ._repositories import _Unit as _Unit
from ._schema import _MIGRATIONS as _MIGRATIONS
from ._schema import _TABLES as _TABLES
from ._schema import SCHEMA_VERSION as _SCHEMA_VERSION
from ._storage import PostgresStorage

__all__ = ["SCHEMA_VERSION", "PostgresStorage"]

# Bound here, not only imported, so that Sphinx autodoc finds the #: comment and lists it.
#: The schema version this code creates and understands.
SCHEMA_VERSION: Final = _SCHEMA_VERSION
