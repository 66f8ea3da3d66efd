"""The settings repository's part of the storage contract suite, and the fingerprint checks.

A Registry stores the fingerprints of its pepper and secret encryption key in the settings,
and refuses a configuration whose pepper or key is not the storage's own
(`appregistry.errors.ConfigurationError`). These tests run that on every backend, through a
second handle too when the backend has one.
"""

# A test suite states its expectations with assert, as `assert expected == actual`.
# ruff: noqa: S101, SIM300

from __future__ import annotations

from typing import Any

import pytest
from cryptography.fernet import Fernet

from ..._registry import Registry
from ...errors import ConfigurationError
from ...ports import Storage
from .. import ManualClock
from ._secrets import _leaves, _RecordingStorage
from ._support import StorageFixtures, StorageReopener

_FIELDS: Any = {
    "name": "MyApp",
    "homepage": "http://example.com/",
    "admin_email": "admin@example.com",
    "redirect_url": "https://example.com/cb",
}


class SettingsRepositoryContract(StorageFixtures):
    """Named byte values are stored, replaced and read back; a rollback keeps none."""

    def test_an_unknown_name_is_none(self, storage: Storage) -> None:
        """``get`` of a name never stored gives ``None``."""
        with storage.transaction() as tx:
            assert tx.settings.get("nothing here") is None

    def test_values_round_trip_and_are_replaced(self, storage: Storage) -> None:
        """``put`` stores bytes exactly (NUL and high bytes too); a second ``put`` replaces."""
        first, second = bytes(range(256)), b"\x00second"
        with storage.transaction() as tx:
            tx.settings.put("a", first)
            tx.settings.put("b", b"")
        with storage.transaction() as tx:
            got = (tx.settings.get("a"), tx.settings.get("b"))
            tx.settings.put("a", second)
        with storage.transaction() as tx:
            assert (first, b"") == got
            assert (second, b"") == (tx.settings.get("a"), tx.settings.get("b"))

    def test_a_rolled_back_put_leaves_nothing(self, storage: Storage) -> None:
        """A transaction that raises takes its settings with it."""
        with storage.transaction() as tx:
            tx.settings.put("kept", b"1")

        def change_then_fail() -> None:
            with storage.transaction() as tx:
                tx.settings.put("kept", b"2")
                tx.settings.put("new", b"3")
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError):
            change_then_fail()
        with storage.transaction() as tx:
            assert (b"1", None) == (tx.settings.get("kept"), tx.settings.get("new"))


class FingerprintContract(StorageFixtures):
    """A Registry refuses a pepper or key that is not the storage's; rotation still opens."""

    def test_the_same_pepper_opens_and_another_is_refused(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """The first registry records its pepper; a different one is refused with a way out."""
        first = Registry(storage=storage, clock=clock, pepper=b"first pepper")
        new = first.register_app("acme", trusted=True, **_FIELDS)
        Registry(storage=storage, clock=clock, pepper=b"first pepper")
        with pytest.raises(ConfigurationError) as refused:
            Registry(storage=storage, clock=clock, pepper=b"other pepper")
        with pytest.raises(ConfigurationError):
            Registry(storage=storage, clock=clock)  # the built-in default is another pepper
        message = str(refused.value)
        assert "pepper" in message
        assert "rotat" in message
        assert "first pepper" not in message
        assert "other pepper" not in message
        # Nothing was written by the refusals: the first pepper still authenticates.
        assert first.authenticate_client(new.app.key, new.secret).allowed

    def test_a_pepper_rotation_opens_and_records_the_new_pepper(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """``[new, old]`` opens; from then on the new pepper alone opens, the old one not."""
        Registry(storage=storage, clock=clock, pepper=b"old pepper")
        Registry(storage=storage, clock=clock, pepper=[b"new pepper", b"old pepper"])
        Registry(storage=storage, clock=clock, pepper=b"new pepper")
        with pytest.raises(ConfigurationError):
            Registry(storage=storage, clock=clock, pepper=b"old pepper")

    def test_a_storage_without_a_pepper_rotates_to_one(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """``None`` (the built-in default) is a pepper too: ``[new, None]`` moves off it."""
        Registry(storage=storage, clock=clock)
        Registry(storage=storage, clock=clock, pepper=[b"own pepper", None])
        Registry(storage=storage, clock=clock, pepper=b"own pepper")

    def test_a_wrong_key_is_refused_and_a_rotation_opens(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """The key is checked like the pepper, any configured key matching."""
        old, new, wrong = (Fernet.generate_key() for _ in range(3))
        first = Registry(storage=storage, clock=clock, secret_encryption_key=old)
        app = first.register_app("acme", **_FIELDS)
        with pytest.raises(ConfigurationError) as refused:
            Registry(storage=storage, clock=clock, secret_encryption_key=wrong)
        during = Registry(storage=storage, clock=clock, secret_encryption_key=[new, old])
        during.reencrypt_secrets()
        after = Registry(storage=storage, clock=clock, secret_encryption_key=new)
        assert app.secret == after.reveal_secret(app.app.key)
        with pytest.raises(ConfigurationError):
            Registry(storage=storage, clock=clock, secret_encryption_key=old)
        message = str(refused.value)
        assert "key" in message
        assert [] == [k for k in (old, new, wrong) if k.decode() in message]

    def test_no_key_is_checked_without_one(self, storage: Storage, clock: ManualClock) -> None:
        """A registry without a key opens on a storage that has one (secrets as digests)."""
        keyed = Registry(storage=storage, clock=clock, secret_encryption_key=Fernet.generate_key())
        app = keyed.register_app("acme", **_FIELDS)
        plain = Registry(storage=storage, clock=clock)
        assert plain.authenticate_client(app.app.key, app.secret).allowed

    def test_the_pepper_and_key_never_reach_the_ports(
        self, storage: Storage, clock: ManualClock
    ) -> None:
        """The settings hold fingerprints: no argument the ports receive holds either."""
        pepper, key = b"a pepper of some length", Fernet.generate_key()
        recording = _RecordingStorage(storage)
        Registry(storage=recording, clock=clock, pepper=pepper, secret_encryption_key=key)
        values = [v for v in _leaves(recording.received) if isinstance(v, bytes)]
        assert values  # the fingerprints went through
        assert [] == [v for v in values if pepper in v or key in v]

    def test_the_fingerprints_hold_through_another_handle(
        self, storage: Storage, clock: ManualClock, reopen: StorageReopener
    ) -> None:
        """What one handle recorded refuses a wrong pepper on another (the same data)."""
        Registry(storage=storage, clock=clock, pepper=b"stored pepper")
        other = reopen(storage)
        with pytest.raises(ConfigurationError):
            Registry(storage=other, clock=clock, pepper=b"wrong pepper")
        Registry(storage=other, clock=clock, pepper=b"stored pepper")
