"""Misconfiguration is loud: a registry refuses a pepper or key that is not its storage's.

The fingerprint itself (a property over peppers), the Registry's checks on a SQLite file
reopened as a restarted server would reopen it, and the CLI's one-line refusal, for its
commands and for ``serve``. The same checks run on every backend in the contract suite
(`appregistry.testing.contract.FingerprintContract`).
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

from _support import APP_FIELDS
from appregistry import AppRegistryError, ConfigurationError, Registry
from appregistry._credentials import Credentials, fingerprint
from appregistry.storage.memory import MemoryStorage
from appregistry.storage.sqlite import SQLiteStorage
from appregistry.testing import ManualClock

# Long enough that 16 pseudo-random bytes hold one by chance with odds below 2**-60.
peppers = st.binary(min_size=8, max_size=64)


class TestFingerprint:
    """A fingerprint tells peppers apart, and nothing else about them."""

    @given(peppers, peppers)
    def test_distinct_peppers_have_distinct_fingerprints(self, one: bytes, two: bytes) -> None:
        assert (one == two) == (fingerprint(one) == fingerprint(two))

    @given(peppers)
    def test_the_same_pepper_has_the_same_fingerprint(self, pepper: bytes) -> None:
        assert fingerprint(pepper) == fingerprint(bytes(pepper))
        assert 16 == len(fingerprint(pepper))

    @given(peppers)
    def test_a_fingerprint_never_holds_its_pepper(self, pepper: bytes) -> None:
        assert pepper not in fingerprint(pepper)

    @given(st.binary(min_size=32, max_size=32))
    def test_a_key_and_a_pepper_of_the_same_bytes_differ(self, material: bytes) -> None:
        key = base64.urlsafe_b64encode(material)
        credentials = Credentials(pepper=material, encryption_key=key)
        assert credentials.pepper_fingerprints[0] != credentials.key_fingerprints[0]

    def test_credentials_list_every_configured_fingerprint_newest_first(self) -> None:
        new, old = Fernet.generate_key(), Fernet.generate_key()
        credentials = Credentials(pepper=[b"new pepper", None], encryption_key=[new, old.decode()])
        assert fingerprint(b"new pepper") == credentials.pepper_fingerprints[0]
        assert credentials.pepper_fingerprints[1] == Credentials().pepper_fingerprints[0]
        assert (2, ()) == (len(credentials.key_fingerprints), Credentials().key_fingerprints)
        assert (
            credentials.key_fingerprints[1] == Credentials(encryption_key=old).key_fingerprints[0]
        )


@pytest.fixture
def open_file(tmp_path: Path) -> Iterator[Callable[..., Registry]]:
    """Registries on one SQLite file, each on its own handle, as restarted servers open it."""
    opened: list[Registry] = []

    def open_(**options: Any) -> Registry:
        storage = SQLiteStorage(tmp_path / "registry.db")
        try:
            registry = Registry(storage=storage, clock=ManualClock(), **options)
        except BaseException:
            storage.close()
            raise
        opened.append(registry)
        return registry

    yield open_
    for registry in opened:
        registry.close()


class TestOnAFile:
    """A file remembers its pepper and key across restarts, and refuses others."""

    def test_the_right_pepper_opens_and_keeps_working(
        self, open_file: Callable[..., Registry]
    ) -> None:
        first = open_file(pepper=b"pepper")
        new = first.register_app("acme", trusted=True, **APP_FIELDS)
        first.permit_account("acme", by="admin")
        token = first.issue_token(new.app.key, new.secret).token
        assert open_file(pepper=b"pepper").check_token(token).allowed

    def test_a_wrong_pepper_refuses_to_open(self, open_file: Callable[..., Registry]) -> None:
        open_file(pepper=b"pepper")
        with pytest.raises(ConfigurationError) as refused:
            open_file(pepper=b"peppex")
        assert isinstance(refused.value, AppRegistryError)
        assert "docs/rotation.md" in str(refused.value)

    def test_rotation_lists_both_and_opens(self, open_file: Callable[..., Registry]) -> None:
        first = open_file(pepper=b"old")
        new = first.register_app("acme", trusted=True, **APP_FIELDS)
        first.permit_account("acme", by="admin")
        old_token = first.issue_token(new.app.key, new.secret).token
        both = open_file(pepper=[b"new", b"old"])
        assert both.check_token(old_token).allowed
        new_token = both.issue_token(new.app.key, new.secret).token
        assert open_file(pepper=b"new").check_token(new_token).allowed
        with pytest.raises(ConfigurationError):
            open_file(pepper=b"old")

    def test_a_wrong_key_refuses_to_open(self, open_file: Callable[..., Registry]) -> None:
        key = Fernet.generate_key()
        open_file(secret_encryption_key=key).register_app("acme", **APP_FIELDS)
        with pytest.raises(ConfigurationError, match="encryption key"):
            open_file(secret_encryption_key=Fernet.generate_key())
        open_file(secret_encryption_key=[Fernet.generate_key(), key])

    def test_a_refusal_writes_nothing(self) -> None:
        storage = MemoryStorage()
        Registry(storage=storage, pepper=b"one")
        with pytest.raises(ConfigurationError):
            Registry(storage=storage, pepper=[b"two", b"three"])
        Registry(storage=storage, pepper=b"one")  # still the storage's pepper


def _cli(database: Path, *args: str, pepper: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("APPREGISTRY_")}
    env["PYTHONIOENCODING"] = "utf-8"
    if pepper is not None:
        env["APPREGISTRY_PEPPER"] = pepper
    return subprocess.run(  # noqa: S603 - our own CLI, with arguments from the test
        [sys.executable, "-m", "appregistry", "--database", f"sqlite:///{database}", *args],
        capture_output=True,
        text=True,
        cwd=database.parent,
        env=env,
        timeout=60,
        check=False,
    )


class TestCommandLine:
    """The CLI says what is wrong in one line, exits 2, and never prints the pepper."""

    @pytest.fixture
    def database(self, tmp_path: Path) -> Path:
        path = tmp_path / "cli.sqlite3"
        first = _cli(path, "apps", "list", pepper="the-right-pepper")
        assert 0 == first.returncode, first.stderr
        return path

    def test_a_command_with_the_wrong_pepper(self, database: Path) -> None:
        text = _cli(database, "apps", "list", pepper="a-wrong-pepper")
        as_json = _cli(database, "--json", "apps", "list", pepper="a-wrong-pepper")
        right = _cli(database, "apps", "list", pepper="the-right-pepper")

        assert (2, "") == (text.returncode, text.stdout)
        assert 1 == len(text.stderr.splitlines())
        assert text.stderr.startswith("appregistry: configuration error: the pepper")
        assert (2, "configuration") == (as_json.returncode, json.loads(as_json.stdout)["error"])
        assert 0 == right.returncode
        said = text.stdout + text.stderr + as_json.stdout + as_json.stderr
        assert [] == [p for p in ("a-wrong-pepper", "the-right-pepper") if p in said]

    def test_serve_with_the_wrong_pepper(self, database: Path) -> None:
        served = _cli(database, "serve", "--port", "0", pepper="a-wrong-pepper")

        assert 2 == served.returncode
        assert "configuration error: the pepper" in served.stderr
        assert "a-wrong-pepper" not in served.stderr
