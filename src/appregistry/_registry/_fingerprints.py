"""Loud misconfiguration: a registry refuses a pepper or key that is not its storage's own.

Digests are keyed by the pepper, and secrets encrypted with the secret encryption key. A
registry started with another pepper (a typo in an environment variable, a staging value in
production) would not fail: every token, code and secret would just be unknown, and new ones
would be digested under the wrong pepper. So the storage keeps a fingerprint of each (see
`appregistry._credentials.fingerprint`; never the pepper or key itself), and the Registry
compares them when it is constructed, in one transaction:

- Nothing stored (a new storage, or one from before fingerprints): the newest pepper's and
  key's fingerprints are stored. A key is first tried on a stored secret's ciphertext, if
  there is one, so that an upgraded storage is not stamped with a key that cannot read it.
- The stored fingerprint is the newest pepper's (key's): nothing to do.
- It is an older configured one's (a rotation under way): the newest one's is stored, so
  that once the older one is dropped from the configuration the storage still opens.
- It is none of them: `appregistry.errors.ConfigurationError`, and nothing is written.

Without an encryption key nothing is checked or stored for the key: secrets are then kept as
digests only, which any configuration can check (a warning is logged when the storage has
recorded a key, as its ciphertexts can no longer be revealed).
"""

from __future__ import annotations

import hmac
import logging
from typing import Final

from .._credentials import Credentials
from ..errors import ConfigurationError
from ..ports import Storage, UnitOfWork

logger = logging.getLogger("appregistry")

#: The settings names the fingerprints are stored under.
PEPPER_FINGERPRINT: Final = "pepper_fingerprint"
KEY_FINGERPRINT: Final = "secret_encryption_key_fingerprint"
# How many stored secrets are looked at for one with a ciphertext to try the key on.
_SAMPLED_SECRETS: Final = 16

_WRONG_PEPPER: Final = (
    "the pepper does not match the one this storage was created with: every token, code "
    "and app secret would be unknown. If you are rotating peppers, configure the new pepper "
    "first and the old one after it (see docs/rotation.md)"
)
_WRONG_KEY: Final = (
    "the secret encryption key does not match the one this storage's secrets were "
    "encrypted with: no secret could be revealed. If you are rotating keys, configure the "
    "new key first and the old one after it until reencrypt_secrets has run "
    "(see docs/rotation.md)"
)


def check_fingerprints(storage: Storage, credentials: Credentials) -> None:
    """Compare the configured pepper and key with the storage's fingerprints; store new ones.

    Raises:
        ConfigurationError: The pepper, or the key, is none the storage was used with.
    """
    with storage.transaction() as tx:
        _check(tx, PEPPER_FINGERPRINT, credentials.pepper_fingerprints, _WRONG_PEPPER)
        keys = credentials.key_fingerprints
        if not keys:
            if tx.settings.get(KEY_FINGERPRINT) is not None:
                logger.warning(
                    "no secret encryption key is configured, but this storage's secrets "
                    "were stored encrypted: they cannot be revealed, and new secrets are "
                    "stored as digests only"
                )
            return
        if tx.settings.get(KEY_FINGERPRINT) is None and not _key_reads_storage(tx, credentials):
            raise ConfigurationError(_WRONG_KEY)
        _check(tx, KEY_FINGERPRINT, keys, _WRONG_KEY)


def _check(tx: UnitOfWork, name: str, configured: tuple[bytes, ...], wrong: str) -> None:
    stored = tx.settings.get(name)
    newest = configured[0]
    if stored is not None and hmac.compare_digest(stored, newest):
        return
    if stored is not None and not any(hmac.compare_digest(stored, each) for each in configured):
        raise ConfigurationError(wrong)
    tx.settings.put(name, newest)


def _key_reads_storage(tx: UnitOfWork, credentials: Credentials) -> bool:
    # Whether the configured keys decrypt a stored secret, when one was stored encrypted.
    secrets = tx.apps.list_secrets(after=None, limit=_SAMPLED_SECRETS)
    sample = next((s.ciphertext for _, s in secrets if s.ciphertext is not None), None)
    return sample is None or credentials.decrypts(sample)
