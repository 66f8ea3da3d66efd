"""Keys, secrets and tokens: how they are made, digested, encrypted and compared.

- App keys and secrets are 32 characters drawn uniformly from ``[A-Za-z0-9]`` by `secrets`
  (R6): about 190 bits each.
- Access tokens are 44 characters of ``[A-Za-z0-9]`` from `secrets`: 262 bits (R17).
- Secrets and tokens are stored only as HMAC-SHA256 digests, keyed with the host's optional
  pepper; a digest of a token cannot be turned back into the token.
- With a host-supplied encryption key, secrets are also kept as Fernet ciphertext, so they
  can be revealed again (R7).
- Comparisons are constant-time (R25).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from typing import Final

from cryptography.fernet import Fernet, InvalidToken

from ._records import StoredSecret
from .errors import AppRegistryError

__all__ = [
    "CREDENTIAL_LENGTH",
    "TOKEN_LENGTH",
    "Credentials",
    "generate_key",
    "generate_secret",
    "generate_token",
    "generate_token_id",
    "is_importable_credential",
]

#: Length of an app key and of an app secret.
CREDENTIAL_LENGTH: Final = 32
_GENERATED_ALPHABET: Final = string.ascii_letters + string.digits
# RFC 3986 "unreserved": what imported credentials may contain.
_IMPORTABLE_ALPHABET: Final = frozenset(string.ascii_letters + string.digits + "-._~")
#: Length of an access token: 44 * log2(62) = 262 bits, at least the 256 that R17 asks.
TOKEN_LENGTH: Final = 44
_TOKEN_ID_LENGTH: Final = 16


def _random_string(length: int) -> str:
    # secrets.choice draws each character uniformly with the OS CSPRNG.
    return "".join(secrets.choice(_GENERATED_ALPHABET) for _ in range(length))


def generate_key() -> str:
    """A new 32-character app key.

    >>> key = generate_key()
    >>> len(key), key.isalnum(), key.isascii()
    (32, True, True)
    """
    return _random_string(CREDENTIAL_LENGTH)


def generate_secret() -> str:
    """A new 32-character app secret, drawn like a key but independently."""
    return _random_string(CREDENTIAL_LENGTH)


def generate_token() -> str:
    """A new access token: 44 characters of ``[A-Za-z0-9]``, about 262 random bits (R17).

    Letters and digits only, so a token never starts with ``-`` (mistaken for an option on a
    command line) and survives URLs, headers and double-click selection unchanged.

    >>> token = generate_token()
    >>> len(token), token.isalnum()
    (44, True)
    """
    return _random_string(TOKEN_LENGTH)


def generate_token_id() -> str:
    """A public token id for lists and removal: 16 characters of ``[A-Za-z0-9]`` (95 bits).

    It is not a credential; it only has to be unique and hard to guess.
    """
    return _random_string(_TOKEN_ID_LENGTH)


def is_importable_credential(value: object) -> bool:
    """Whether ``value`` can be imported as a key or secret: 32 RFC 3986 unreserved characters.

    >>> is_importable_credential("PVui7jiATDKcWhPOpAUkXAliGahUvEdf")
    True
    >>> is_importable_credential("too-short")
    False
    """
    return (
        isinstance(value, str)
        and len(value) == CREDENTIAL_LENGTH
        and all(ch in _IMPORTABLE_ALPHABET for ch in value)
    )


# Domain separation: a token digest can never be presented as a secret digest, or the reverse.
_TOKEN_LABEL: Final = b"appregistry/token/v1\x00"
_SECRET_LABEL: Final = b"appregistry/secret/v1\x00"
# Without a host pepper, digests are still keyed (with a public constant) so the code path
# is the same; the pepper adds protection for a stolen database, not for the algorithm.
_DEFAULT_PEPPER: Final = b"appregistry default pepper: set Registry(pepper=...) in production"


class Credentials:
    """Digests and (optionally) encrypts secrets and tokens for one registry.

    Args:
        pepper: Optional server-side key for the digests. Keep it outside the database.
        encryption_key: Optional Fernet key (``Fernet.generate_key()``); when given, secrets
            are also stored encrypted and can be revealed.

    >>> creds = Credentials(pepper=b"server pepper")
    >>> stored = creds.store_secret("jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8N")
    >>> creds.secret_matches(stored, "jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8N")
    True
    >>> creds.secret_matches(stored, "jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8n")
    False
    >>> b"jaZK33" in stored.digest
    False
    """

    __slots__ = ("_dummy_digest", "_fernet", "_secret_mac", "_token_mac")

    def __init__(
        self, *, pepper: bytes | None = None, encryption_key: bytes | str | None = None
    ) -> None:
        key = pepper if pepper is not None else _DEFAULT_PEPPER
        if not key:
            raise ValueError("pepper must not be empty")
        token_mac = hmac.new(key, _TOKEN_LABEL, hashlib.sha256)
        secret_mac = hmac.new(key, _SECRET_LABEL, hashlib.sha256)
        fernet: Fernet | None = None
        if encryption_key is not None:
            try:
                fernet = Fernet(encryption_key)
            except (ValueError, TypeError) as exc:
                # Say what is wrong without echoing the key itself.
                raise ValueError(
                    "encryption_key must be a Fernet key: 32 url-safe base64-encoded bytes"
                ) from exc
        dummy_mac = secret_mac.copy()
        dummy_mac.update(secrets.token_bytes(32))
        self._token_mac = token_mac
        self._secret_mac = secret_mac
        self._fernet = fernet
        self._dummy_digest = dummy_mac.digest()

    def __repr__(self) -> str:
        return f"Credentials(can_reveal={self.can_reveal})"

    @property
    def can_reveal(self) -> bool:
        """Whether secrets are stored encrypted and so can be revealed."""
        return self._fernet is not None

    def token_digest(self, token: str) -> bytes:
        """The keyed digest under which a token is stored and looked up."""
        # Copying a prepared HMAC skips re-deriving the padded key on every check.
        mac = self._token_mac.copy()
        mac.update(token.encode("utf-8", "surrogatepass"))
        return mac.digest()

    def _secret_digest(self, secret: str) -> bytes:
        mac = self._secret_mac.copy()
        mac.update(secret.encode("utf-8", "surrogatepass"))
        return mac.digest()

    def store_secret(self, secret: str) -> StoredSecret:
        """What storage keeps of ``secret``: its digest, and its ciphertext if configured."""
        ciphertext = self._fernet.encrypt(secret.encode()) if self._fernet else None
        return StoredSecret(self._secret_digest(secret), ciphertext)

    def secret_matches(self, stored: StoredSecret | None, secret: str) -> bool:
        """Constant-time comparison of ``secret`` with what is stored (R25).

        With ``stored=None`` (an unknown key) the same work is done against a dummy digest,
        so an unknown key and a wrong secret take the same time.
        """
        expected = stored.digest if stored is not None else self._dummy_digest
        matches = hmac.compare_digest(expected, self._secret_digest(secret))
        return matches and stored is not None

    def reveal_secret(self, stored: StoredSecret) -> str | None:
        """The plaintext secret, or ``None`` when it was stored without encryption."""
        if self._fernet is None or stored.ciphertext is None:
            return None
        try:
            return self._fernet.decrypt(stored.ciphertext).decode()
        except InvalidToken as exc:
            raise AppRegistryError(
                "the stored secret cannot be decrypted with the configured encryption key"
            ) from exc
