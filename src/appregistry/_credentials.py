"""Keys, secrets and tokens: how they are made, digested, encrypted and compared.

- App keys and secrets are 32 characters drawn uniformly from ``[A-Za-z0-9]`` by `secrets`
  (R6): about 190 bits each.
- Access tokens are 44 characters of ``[A-Za-z0-9]`` from `secrets`: 262 bits (R17);
  authorization codes and refresh tokens are made the same way.
- Secrets, tokens, codes and refresh tokens are stored only as HMAC-SHA256 digests, keyed
  with the host's optional pepper and a label per kind; a digest cannot be turned back into
  its plaintext, nor presented as a digest of another kind.
- With a host-supplied encryption key, secrets are also kept as Fernet ciphertext, so they
  can be revealed again (R7).
- Comparisons are constant-time (R25).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from cryptography.fernet import Fernet, InvalidToken

from ._records import StoredSecret
from .errors import AppRegistryError

if TYPE_CHECKING:
    from _hashlib import HASH

__all__ = [
    "CREDENTIAL_LENGTH",
    "TOKEN_LENGTH",
    "Credentials",
    "generate_key",
    "generate_secret",
    "generate_token",
    "generate_token_id",
    "is_code_verifier",
    "is_importable_credential",
    "is_s256_challenge",
    "pkce_s256",
]

#: Length of an app key and of an app secret.
CREDENTIAL_LENGTH: Final = 32
_GENERATED_ALPHABET: Final = string.ascii_letters + string.digits
# RFC 3986 "unreserved": what imported credentials may contain.
_IMPORTABLE_ALPHABET: Final = frozenset(string.ascii_letters + string.digits + "-._~")
#: Length of an access token: 44 * log2(62) = 262 bits, at least the 256 that R17 asks.
TOKEN_LENGTH: Final = 44
_TOKEN_ID_LENGTH: Final = 16


# Random bytes below 248 (4 * 62) map to the alphabet uniformly by their remainder modulo 62;
# the rest are dropped (rejection sampling), so every character is equally likely.
_ACCEPTED: Final = 4 * len(_GENERATED_ALPHABET)
_BYTE_TO_CHAR: Final = bytes(
    ord(_GENERATED_ALPHABET[b % len(_GENERATED_ALPHABET)]) if b < _ACCEPTED else 0
    for b in range(256)
)
_REJECTED: Final = bytes(range(_ACCEPTED, 256))


def _random_string(length: int) -> str:
    """``length`` characters drawn uniformly and independently from ``[A-Za-z0-9]``.

    The bytes come from the OS CSPRNG (`secrets`) in one read, not one per character, so an
    access token costs a microsecond to make, not tens of them.

    >>> text = _random_string(1000)
    >>> len(text), set(text) <= set(_GENERATED_ALPHABET)
    (1000, True)
    """
    chars = b""
    while len(chars) < length:
        # A few spare bytes make a second read (after rejections) rare.
        chars += secrets.token_bytes(length + 8).translate(_BYTE_TO_CHAR, _REJECTED)
    return chars[:length].decode("ascii")


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
_CODE_LABEL: Final = b"appregistry/code/v1\x00"
_REFRESH_LABEL: Final = b"appregistry/refresh/v1\x00"
# RFC 7636: a verifier is 43 to 128 characters of the unreserved set; an S256 challenge is
# the unpadded base64url of a SHA-256 digest, always 43 characters.
_VERIFIER_LENGTHS: Final = range(43, 129)
_S256_LENGTH: Final = 43
_BASE64URL_ALPHABET: Final = frozenset(string.ascii_letters + string.digits + "-_")


def is_code_verifier(value: object) -> bool:
    """Whether ``value`` is a well-formed PKCE code verifier (RFC 7636, section 4.1).

    >>> is_code_verifier("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    True
    >>> is_code_verifier("too-short")
    False
    """
    return (
        isinstance(value, str)
        and len(value) in _VERIFIER_LENGTHS
        and all(ch in _IMPORTABLE_ALPHABET for ch in value)
    )


def is_s256_challenge(value: object) -> bool:
    """Whether ``value`` has the shape of an S256 code challenge: 43 base64url characters."""
    return (
        isinstance(value, str)
        and len(value) == _S256_LENGTH
        and all(ch in _BASE64URL_ALPHABET for ch in value)
    )


def pkce_s256(verifier: str) -> str:
    """The S256 code challenge of a verifier: ``BASE64URL(SHA256(ASCII(verifier)))``.

    The example is RFC 7636's, appendix B.

    >>> pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
    'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM'
    """
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


_SHA256_BLOCK: Final = 64
_IPAD: Final = bytes(b ^ 0x36 for b in range(256))
_OPAD: Final = bytes(b ^ 0x5C for b in range(256))


def _hmac_states(key: bytes, label: bytes) -> tuple[Callable[[], HASH], Callable[[], HASH]]:
    """Copiers of HMAC-SHA256's inner state (after the padded key and ``label``) and outer one.

    Finishing a copy of each gives ``hmac.new(key, label + message, sha256)``'s digest in
    half the time of copying a prepared `hmac.HMAC`, whose copy is built in Python.

    >>> inner, outer = _hmac_states(b"key", b"label:")
    >>> mac = inner()
    >>> mac.update(b"message")
    >>> final = outer()
    >>> final.update(mac.digest())
    >>> final.digest() == hmac.new(b"key", b"label:message", hashlib.sha256).digest()
    True
    """
    if len(key) > _SHA256_BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_SHA256_BLOCK, b"\0")
    inner = hashlib.sha256(key.translate(_IPAD))
    inner.update(label)
    return inner.copy, hashlib.sha256(key.translate(_OPAD)).copy


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

    __slots__ = (
        "_code_mac",
        "_dummy_digest",
        "_fernet",
        "_refresh_mac",
        "_secret_mac",
        "_token_inner",
        "_token_outer",
    )

    def __init__(
        self, *, pepper: bytes | None = None, encryption_key: bytes | str | None = None
    ) -> None:
        key = pepper if pepper is not None else _DEFAULT_PEPPER
        if not key:
            raise ValueError("pepper must not be empty")
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
        self._token_inner, self._token_outer = _hmac_states(key, _TOKEN_LABEL)
        self._secret_mac = secret_mac
        self._code_mac = hmac.new(key, _CODE_LABEL, hashlib.sha256)
        self._refresh_mac = hmac.new(key, _REFRESH_LABEL, hashlib.sha256)
        self._fernet = fernet
        self._dummy_digest = dummy_mac.digest()

    def __repr__(self) -> str:
        return f"Credentials(can_reveal={self.can_reveal})"

    @property
    def can_reveal(self) -> bool:
        """Whether secrets are stored encrypted and so can be revealed."""
        return self._fernet is not None

    def token_digest(self, token: str) -> bytes:
        """The keyed digest under which a token is stored and looked up.

        HMAC-SHA256, as RFC 2104 defines it, from the two hash states that the padded key
        leaves (see `_hmac_states`): every token check computes it.
        """
        inner = self._token_inner()
        inner.update(token.encode("utf-8", "surrogatepass"))
        outer = self._token_outer()
        outer.update(inner.digest())
        return outer.digest()

    def code_digest(self, code: str) -> bytes:
        """The keyed digest under which an authorization code is stored and taken."""
        mac = self._code_mac.copy()
        mac.update(code.encode("utf-8", "surrogatepass"))
        return mac.digest()

    def refresh_digest(self, token: str) -> bytes:
        """The keyed digest under which a refresh token is stored and looked up."""
        mac = self._refresh_mac.copy()
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
