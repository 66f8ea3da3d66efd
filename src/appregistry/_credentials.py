"""Keys, secrets and tokens: how they are made, digested, encrypted and compared.

- App keys and secrets are 32 characters drawn uniformly from ``[A-Za-z0-9]`` by `secrets`
  (R6): about 190 bits each.
- Access tokens are 44 characters of ``[A-Za-z0-9]`` from `secrets`: 262 bits (R17);
  authorization codes and refresh tokens are made the same way.
- Secrets, tokens, codes and refresh tokens are stored only as keyed BLAKE2s-256 digests,
  under a key per kind derived from the host's optional pepper; a digest cannot be turned
  back into its plaintext, nor presented as a digest of another kind.
- With a host-supplied encryption key, secrets are also kept as Fernet ciphertext, so they
  can be revealed again (R7).
- Both the pepper and the encryption key can be rotated: each may be a sequence, newest
  first. The newest makes every new digest and ciphertext; the older ones keep what they
  made readable (look-ups try every pepper, `MultiFernet` every key).
- Comparisons are constant-time (R25).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
from collections.abc import Callable, Sequence
from typing import Final

import attrs
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from ._records import StoredSecret
from .errors import AppRegistryError

__all__ = [
    "CREDENTIAL_LENGTH",
    "TOKEN_LENGTH",
    "Credentials",
    "fingerprint",
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


#: What a prepared digest state is: a copier of a keyed hash state, finished per text.
_Mac = Callable[[], "hashlib.blake2s"]


def _keyed_mac(pepper: bytes, label: bytes) -> _Mac:
    """A copier of a BLAKE2s-256 state keyed for one kind of digest under one pepper.

    The key is HMAC-SHA256(pepper, label): 32 bytes, BLAKE2s's whole key size, and a key of
    its own for each kind, so a digest of one kind is never one of another. BLAKE2 in keyed
    mode is a MAC by design (RFC 7693, section 2.5), and finishing a copy of the keyed state
    costs a single compression for a token, where HMAC-SHA256 costs two hash passes and
    more: every token check computes one.

    >>> mac = _keyed_mac(b"pepper", b"label")
    >>> state = mac()
    >>> state.update(b"token")
    >>> key = hmac.digest(b"pepper", b"label", "sha256")
    >>> state.digest() == hashlib.blake2s(b"token", key=key).digest()
    True
    """
    return hashlib.blake2s(key=hmac.digest(pepper, label, "sha256")).copy


def _finish(mac: _Mac, text: str) -> bytes:
    # A copy of the keyed state, finished on the text.
    state = mac()
    state.update(text.encode("utf-8", "surrogatepass"))
    return state.digest()


# Without a host pepper, digests are still keyed (with a public constant) so the code path
# is the same; the pepper adds protection for a stolen database, not for the algorithm.
_DEFAULT_PEPPER: Final = b"appregistry default pepper: set Registry(pepper=...) in production"


def _peppers(pepper: bytes | Sequence[bytes | None] | None) -> tuple[bytes, ...]:
    """The configured peppers, newest first; the public default when none is given.

    ``None`` in a sequence stands for that default, so that a registry which ran without a
    pepper can rotate to one.

    >>> _peppers([b"new", None]) == (b"new", _DEFAULT_PEPPER)
    True
    """
    if pepper is None:
        return (_DEFAULT_PEPPER,)
    given = (pepper,) if isinstance(pepper, bytes | bytearray) else tuple(pepper)
    if not given:
        raise ValueError("pepper must be bytes or a non-empty sequence of bytes, newest first")
    peppers = []
    for each in given:
        if each is None:
            each = _DEFAULT_PEPPER  # noqa: PLW2901 - the default stands in, as documented
        if not isinstance(each, bytes | bytearray):
            raise TypeError("each pepper must be bytes")
        if not each:
            raise ValueError("pepper must not be empty")
        peppers.append(bytes(each))
    return tuple(peppers)


# What a fingerprint is of, as its label says: a pepper's and a key's never coincide.
_PEPPER_PRINT_LABEL: Final = b"appregistry fingerprint v1: pepper"
_KEY_PRINT_LABEL: Final = b"appregistry fingerprint v1: secret encryption key"
_FINGERPRINT_LENGTH: Final = 16


def fingerprint(material: bytes, label: bytes = _PEPPER_PRINT_LABEL) -> bytes:
    """A keyed fingerprint of a pepper or key: HMAC-SHA256(material, label), 16 bytes.

    Storage keeps it so that a registry opened with another pepper or key refuses to run
    instead of finding every token unknown. It tells whether two peppers are the same and
    nothing else: without the pepper it cannot be made, and it cannot be turned back into
    the pepper, which is its HMAC key. Sixteen bytes make two peppers' fingerprints equal
    by chance with a probability of 2**-128.

    >>> mine = fingerprint(b"pepper")
    >>> mine == fingerprint(b"pepper"), mine == fingerprint(b"other"), len(mine)
    (True, False, 16)
    """
    return hmac.digest(material, label, "sha256")[:_FINGERPRINT_LENGTH]


def _key_material(key: bytes | str) -> bytes:
    # A Fernet key's 32 bytes, whichever spelling (str or bytes, padded or not) it came in.
    text = key.encode("ascii") if isinstance(key, str) else bytes(key)
    return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))


def _fernets(key: bytes | str | Sequence[bytes | str] | None) -> tuple[MultiFernet, Fernet] | None:
    """A `MultiFernet` over the encryption keys (newest first) and the newest key's `Fernet`.

    ``None`` without a key.
    """
    if key is None:
        return None
    keys = [key] if isinstance(key, bytes | bytearray | str) else list(key)
    if not keys:
        raise ValueError("encryption_key must be a Fernet key or a non-empty sequence of them")
    try:
        fernets = [Fernet(each) for each in keys]
    except (ValueError, TypeError) as exc:
        # Say what is wrong without echoing the key itself.
        raise ValueError(
            "encryption_key must be a Fernet key (32 url-safe base64-encoded bytes), "
            "or a sequence of them, newest first"
        ) from exc
    return MultiFernet(fernets), fernets[0]


class Credentials:
    """Digests and (optionally) encrypts secrets and tokens for one registry.

    Both keys can be rotated: give a sequence, newest first. The newest pepper digests
    everything new, and look-ups try every pepper, so what was digested under an older one
    keeps working; the newest encryption key encrypts, and every key decrypts.

    Args:
        pepper: Optional server-side key for the digests, or a sequence of them, newest
            first (``None`` in it: the built-in default). Keep it outside the database.
        encryption_key: Optional Fernet key (``Fernet.generate_key()``), or a sequence of
            them, newest first; when given, secrets are also stored encrypted and can be
            revealed.

    >>> creds = Credentials(pepper=b"server pepper")
    >>> stored = creds.store_secret("jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8N")
    >>> creds.secret_matches(stored, "jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8N")
    True
    >>> creds.secret_matches(stored, "jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8n")
    False
    >>> b"jaZK33" in stored.digest
    False
    >>> rotated = Credentials(pepper=[b"new pepper", b"server pepper"])
    >>> rotated.secret_matches(stored, "jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8N")
    True
    """

    __slots__ = (
        "_code_mac",
        "_code_macs",
        "_dummy_digest",
        "_fernet",
        "_key_prints",
        "_newest_fernet",
        "_pepper_prints",
        "_refresh_mac",
        "_refresh_macs",
        "_secret_mac",
        "_secret_macs",
        "_token_mac",
        "_token_macs",
    )

    def __init__(
        self,
        *,
        pepper: bytes | Sequence[bytes | None] | None = None,
        encryption_key: bytes | str | Sequence[bytes | str] | None = None,
    ) -> None:
        peppers = _peppers(pepper)
        fernets = _fernets(encryption_key)
        self._secret_macs = tuple(_keyed_mac(key, _SECRET_LABEL) for key in peppers)
        self._secret_mac = self._secret_macs[0]
        self._token_macs = tuple(_keyed_mac(key, _TOKEN_LABEL) for key in peppers)
        self._token_mac = self._token_macs[0]
        self._code_macs = tuple(_keyed_mac(key, _CODE_LABEL) for key in peppers)
        self._code_mac = self._code_macs[0]
        self._refresh_macs = tuple(_keyed_mac(key, _REFRESH_LABEL) for key in peppers)
        self._refresh_mac = self._refresh_macs[0]
        # MultiFernet does not say which key decrypted; the newest alone tells "up to date".
        self._fernet: MultiFernet | None = fernets[0] if fernets is not None else None
        self._newest_fernet: Fernet | None = fernets[1] if fernets is not None else None
        self._dummy_digest = _finish(self._secret_mac, secrets.token_urlsafe(32))
        self._pepper_prints = tuple(fingerprint(each) for each in peppers)
        self._key_prints: tuple[bytes, ...] = ()
        if encryption_key is not None:
            # _fernets checked them: each is a valid Fernet key.
            keys = (
                [encryption_key]
                if isinstance(encryption_key, bytes | bytearray | str)
                else list(encryption_key)
            )
            self._key_prints = tuple(
                fingerprint(_key_material(each), _KEY_PRINT_LABEL) for each in keys
            )

    def __repr__(self) -> str:
        return f"Credentials(can_reveal={self.can_reveal}, peppers={len(self._secret_macs)})"

    @property
    def can_reveal(self) -> bool:
        """Whether secrets are stored encrypted and so can be revealed."""
        return self._fernet is not None

    @property
    def rotating_peppers(self) -> bool:
        """Whether older peppers are configured beside the newest (look-ups try each)."""
        return len(self._secret_macs) > 1

    @property
    def pepper_fingerprints(self) -> tuple[bytes, ...]:
        """The `fingerprint` of each configured pepper, newest first."""
        return self._pepper_prints

    @property
    def key_fingerprints(self) -> tuple[bytes, ...]:
        """The `fingerprint` of each encryption key, newest first; empty without a key."""
        return self._key_prints

    def decrypts(self, ciphertext: bytes) -> bool:
        """Whether one of the configured encryption keys decrypts ``ciphertext``.

        ``False`` without a key. The plaintext is dropped at once.
        """
        if self._fernet is None:
            return False
        try:
            self._fernet.decrypt(ciphertext)
        except InvalidToken:
            return False
        return True

    def token_digest(self, token: str) -> bytes:
        """The keyed digest under which a token is stored and looked up (newest pepper).

        Every token check computes it, so it is `_finish` written out.
        """
        state = self._token_mac()
        state.update(token.encode("utf-8", "surrogatepass"))
        return state.digest()

    def token_digests(self, token: str) -> tuple[bytes, ...]:
        """The token's digest under every pepper, newest first: what a look-up tries.

        >>> creds = Credentials(pepper=[b"new", b"old"])
        >>> new, old = creds.token_digests("token")
        >>> new == creds.token_digest("token")
        True
        >>> old == Credentials(pepper=b"old").token_digest("token")
        True
        """
        return tuple(_finish(mac, token) for mac in self._token_macs)

    def code_digest(self, code: str) -> bytes:
        """The keyed digest under which an authorization code is stored (newest pepper)."""
        return _finish(self._code_mac, code)

    def code_digests(self, code: str) -> tuple[bytes, ...]:
        """The code's digest under every pepper, newest first: what taking it tries."""
        return tuple(_finish(mac, code) for mac in self._code_macs)

    def refresh_digest(self, token: str) -> bytes:
        """The keyed digest under which a refresh token is stored (newest pepper)."""
        return _finish(self._refresh_mac, token)

    def refresh_digests(self, token: str) -> tuple[bytes, ...]:
        """The refresh token's digest under every pepper, newest first."""
        return tuple(_finish(mac, token) for mac in self._refresh_macs)

    def _secret_digest(self, secret: str) -> bytes:
        return _finish(self._secret_mac, secret)

    def store_secret(self, secret: str) -> StoredSecret:
        """What storage keeps of ``secret``: its digest, and its ciphertext if configured."""
        ciphertext = self._fernet.encrypt(secret.encode()) if self._fernet else None
        return StoredSecret(self._secret_digest(secret), ciphertext)

    def secret_matches(
        self, stored: StoredSecret | None, secret: str, *, previous_valid: bool = False
    ) -> bool:
        """Constant-time comparison of ``secret`` with what is stored (R25).

        The secret is digested under every pepper and compared with the current digest and
        with the previous one (a secret in its grace window, see
        `appregistry.Registry.rotate_secret`); the previous one counts only when
        ``previous_valid``, which the caller decides from its clock. Every comparison is
        made whatever the outcome: with ``stored=None`` (an unknown key), or without a
        previous secret, a dummy digest stands in, so an unknown key, a wrong secret and an
        app in its grace window all take the same time.
        """
        dummy = self._dummy_digest
        current = stored.digest if stored is not None else dummy
        previous = dummy
        if stored is not None and stored.previous_digest is not None:
            previous = stored.previous_digest
        current_matches = previous_matches = False
        for mac in self._secret_macs:
            digest = _finish(mac, secret)
            current_matches |= hmac.compare_digest(current, digest)
            previous_matches |= hmac.compare_digest(previous, digest)
        if stored is None:
            return False
        return current_matches or (previous_matches and previous_valid)

    def reveal_secret(self, stored: StoredSecret) -> str | None:
        """The plaintext secret, or ``None`` when it was stored without encryption."""
        if self._fernet is None or stored.ciphertext is None:
            return None
        return self._decrypt(stored.ciphertext).decode()

    def refresh_secret(self, stored: StoredSecret) -> StoredSecret | None:
        """``stored`` under the newest encryption key and pepper, or ``None`` if it is already.

        The ciphertext is re-encrypted with the newest key (`MultiFernet.rotate`). When
        older peppers are configured, the digest is made again under the newest pepper from
        the decrypted secret, provided the secret matches the stored digest under one of
        them. A secret stored without ciphertext cannot be re-digested: ``None``. The
        previous (grace) secret is left as it is.

        Raises:
            AppRegistryError: No configured key decrypts the ciphertext.
        """
        fernet, newest = self._fernet, self._newest_fernet
        ciphertext = stored.ciphertext
        if fernet is None or newest is None or ciphertext is None:
            return None
        try:
            newest.decrypt(ciphertext)
        except InvalidToken:
            try:
                ciphertext = fernet.rotate(ciphertext)
            except InvalidToken as exc:
                raise _undecryptable() from exc
        digest = stored.digest
        if self.rotating_peppers:
            secret = self._decrypt(ciphertext).decode()
            fresh = self._secret_digest(secret)
            older = [_finish(mac, secret) for mac in self._secret_macs[1:]]
            if not hmac.compare_digest(fresh, digest) and any(
                hmac.compare_digest(old, digest) for old in older
            ):
                digest = fresh
        if ciphertext == stored.ciphertext and digest == stored.digest:
            return None
        return attrs.evolve(stored, digest=digest, ciphertext=ciphertext)

    def _decrypt(self, ciphertext: bytes) -> bytes:
        assert self._fernet is not None  # noqa: S101 - callers checked; for the type checker
        try:
            return self._fernet.decrypt(ciphertext)
        except InvalidToken as exc:
            raise _undecryptable() from exc


def _undecryptable() -> AppRegistryError:
    return AppRegistryError(
        "the stored secret cannot be decrypted with the configured encryption key(s)"
    )
