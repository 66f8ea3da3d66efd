"""The storage contract suite: every backend, ours or yours, passes these same tests.

The suite is a set of pytest test classes. To run it on a backend, subclass `StorageContract`
in a test module and override one fixture, ``storage_factory``: a callable that returns a
**fresh, empty** `appregistry.ports.Storage` every time it is called. The suite closes every
storage it opens.

.. code-block:: python

    import itertools
    import pytest
    from appregistry.testing.contract import StorageContract
    from mybackend import MyStorage

    class TestMyStorage(StorageContract):
        @pytest.fixture
        def storage_factory(self, tmp_path):
            names = (tmp_path / f"db{n}" for n in itertools.count())
            return lambda: MyStorage(next(names))

Capability fixtures describe what a backend can do beyond the core contract; override them
to switch on the tests that need them (the defaults suit an in-process backend):

``storage_reopener`` (default ``None``)
    ``Callable[[Storage], Storage]``: open a second, independent handle on the same data as
    the given storage (the same file, the same database schema). Enables the persistence
    tests, and the race tests then check through a second handle.
``storage_contents`` (default ``None``)
    ``Callable[[Storage], bytes]``: everything the backend has written, as raw bytes (the
    file and its journal, a dump of the tables). Enables the test that no plaintext secret
    or token is at rest.
``refuses_nested_transactions`` (default ``True``)
    Opening a transaction inside another on the same thread raises
    `appregistry.errors.StorageError` instead of deadlocking.
``race_rounds`` (default ``3``)
    How many rounds each race test runs; raise it for a slower, more thorough run.

The parts can also be used alone (``class TestMine(TokenRepositoryContract): ...``): each
needs only the fixtures of `StorageFixtures`.

The suite checks: (a) each port method's documented edge behaviour (`appregistry.ports`),
authorization codes and refresh tokens included; (b) the Registry's rules end to end on the
storage, the OAuth grants and the all-or-nothing bulk removals included; (c) that a
transaction which raises leaves nothing written; (d) that no plaintext secret, token or code
ever reaches the ports; (e) that keys, peppers and secrets rotate without losing what they
protect, and that a registry refuses a pepper or key that is not its storage's own
(`appregistry.ports.SettingsRepository`); (f) that expired rows are counted as they are
purged, every kind in one purge, a retention period kept; and that racing operations
serialize (a code is exchanged once, a refresh token rotated once).

This module needs pytest and Hypothesis (``pip install 'appregistry[testing]'``).
"""

from __future__ import annotations

from ._apps import AppRepositoryContract
from ._codes import CodeRepositoryContract
from ._concurrency import ConcurrencyContract
from ._installations import InstallationRepositoryContract
from ._last_use import LastUseContract
from ._permissions import PermissionRepositoryContract
from ._purge import PurgeContract
from ._refresh_tokens import RefreshTokenRepositoryContract
from ._registry import REDIRECT as REDIRECT
from ._registry import VERIFIER as VERIFIER
from ._registry import RegistryContract
from ._secrets import NoPlaintextContract, RotationContract
from ._selections import SelectionContract
from ._settings import FingerprintContract, SettingsRepositoryContract
from ._support import CODE_LIFETIME as CODE_LIFETIME
from ._support import DAY as DAY
from ._support import EVERYTHING as EVERYTHING
from ._support import HOUR as HOUR
from ._support import T0 as T0
from ._support import (
    StorageContents,
    StorageFactory,
    StorageFixtures,
    StorageReopener,
)
from ._support import make_app as make_app
from ._support import make_code as make_code
from ._support import make_refresh as make_refresh
from ._support import make_token as make_token
from ._support import new_digest as new_digest
from ._support import new_key as new_key
from ._tokens import TokenContextContract, TokenRepositoryContract
from ._transactions import PersistenceContract, TransactionContract

__all__ = [
    "AppRepositoryContract",
    "CodeRepositoryContract",
    "ConcurrencyContract",
    "FingerprintContract",
    "InstallationRepositoryContract",
    "LastUseContract",
    "NoPlaintextContract",
    "PermissionRepositoryContract",
    "PersistenceContract",
    "PurgeContract",
    "RefreshTokenRepositoryContract",
    "RegistryContract",
    "RotationContract",
    "SelectionContract",
    "SettingsRepositoryContract",
    "StorageContents",
    "StorageContract",
    "StorageFactory",
    "StorageFixtures",
    "StorageReopener",
    "TokenContextContract",
    "TokenRepositoryContract",
    "TransactionContract",
]


# -- the whole suite -------------------------------------------------------------------------


class StorageContract(
    AppRepositoryContract,
    PermissionRepositoryContract,
    InstallationRepositoryContract,
    TokenRepositoryContract,
    LastUseContract,
    CodeRepositoryContract,
    RefreshTokenRepositoryContract,
    PurgeContract,
    SettingsRepositoryContract,
    TokenContextContract,
    TransactionContract,
    PersistenceContract,
    RegistryContract,
    SelectionContract,
    NoPlaintextContract,
    RotationContract,
    FingerprintContract,
    ConcurrencyContract,
):
    """The whole contract: subclass it and override ``storage_factory`` (see the module docs)."""
