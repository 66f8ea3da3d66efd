"""Keys, secrets and tokens: how they are made, digested, encrypted and compared (R6, R7, R17)."""

from __future__ import annotations

import base64
import math
import string
from collections import Counter
from collections.abc import Callable

import pytest
from cryptography.fernet import Fernet
from hypothesis import given
from hypothesis import strategies as st

from appregistry import AppRegistryError, ImportedCredentials, Registry, StoredSecret
from appregistry._credentials import (
    TOKEN_LENGTH,
    Credentials,
    generate_key,
    generate_secret,
    generate_token,
    generate_token_id,
    is_importable_credential,
)
from appregistry.storage.memory import MemoryStorage
from appregistry.testing import EventRecorder
from appregistry.testing import strategies as ars

ALPHABET = string.ascii_letters + string.digits
DRAWS = 2000


def chi_square(text: str, alphabet: str) -> float:
    """Pearson's statistic of ``text``'s character counts against a uniform ``alphabet``."""
    counts = Counter(text)
    expected = len(text) / len(alphabet)
    return sum((counts[ch] - expected) ** 2 / expected for ch in alphabet)


# With 61 degrees of freedom the statistic has mean 61 and standard deviation 11; a fair
# generator exceeds 150 about once in 10**8 runs, while one that skips upper case, digits
# or any letter lands far above it.
CHI_SQUARE_BOUND = 150.0


class TestChiSquare:
    """The uniformity bound separates a fair draw from a broken generator."""

    def test_lowercase_only_generator_fails(self) -> None:
        broken = "".join(string.ascii_lowercase[i % 26] for i in range(DRAWS * 32))
        assert chi_square(broken, ALPHABET) > CHI_SQUARE_BOUND

    def test_generator_missing_one_character_fails(self) -> None:
        skewed = ALPHABET[:-1] * (DRAWS * 32 // 61)
        assert chi_square(skewed, ALPHABET) > CHI_SQUARE_BOUND

    def test_perfectly_even_text_passes(self) -> None:
        assert 0.0 == chi_square(ALPHABET * 10, ALPHABET)


@pytest.mark.parametrize("generate", [generate_key, generate_secret], ids=["key", "secret"])
class TestKeysAndSecrets:
    """Keys and secrets are 32 characters of [A-Za-z0-9], unique and uniformly drawn (R6)."""

    def test_length_and_alphabet(self, generate: Callable[[], str]) -> None:
        for _ in range(200):
            value = generate()
            assert 32 == len(value)
            assert set(value) <= set(ALPHABET)

    def test_unique_over_many_draws(self, generate: Callable[[], str]) -> None:
        values = [generate() for _ in range(DRAWS)]
        assert DRAWS == len(set(values))

    def test_characters_are_roughly_uniform(self, generate: Callable[[], str]) -> None:
        text = "".join(generate() for _ in range(DRAWS))
        assert set(ALPHABET) == set(text)
        assert chi_square(text, ALPHABET) < CHI_SQUARE_BOUND

    def test_every_position_varies(self, generate: Callable[[], str]) -> None:
        values = [generate() for _ in range(DRAWS)]
        # 2000 fair draws show nearly all 62 characters at each position; a constant prefix
        # or a counter would show one or a few.
        distinct = [len({v[i] for v in values}) for i in range(32)]
        assert min(distinct) >= 55


class TestTokens:
    """Access tokens carry at least 256 random bits; token ids are short and unique (R17)."""

    def test_token_has_at_least_256_bits(self) -> None:
        token = generate_token()
        assert TOKEN_LENGTH == len(token)
        assert set(token) <= set(ALPHABET)
        assert TOKEN_LENGTH * math.log2(len(ALPHABET)) >= 256

    def test_tokens_are_unique(self) -> None:
        assert DRAWS == len({generate_token() for _ in range(DRAWS)})

    def test_token_characters_are_roughly_uniform(self) -> None:
        # 1455 tokens of 44 characters: as many characters as 2000 keys of 32.
        text = "".join(generate_token() for _ in range(DRAWS * 32 // TOKEN_LENGTH))
        assert set(ALPHABET) == set(text)
        assert chi_square(text, ALPHABET) < CHI_SQUARE_BOUND

    def test_token_ids_are_unique_and_short(self) -> None:
        ids = {generate_token_id() for _ in range(DRAWS)}
        assert DRAWS == len(ids)
        assert {16} == {len(i) for i in ids}
        assert set(ALPHABET) >= set("".join(ids))


class TestImportable:
    """Imported credentials are exactly 32 characters of the RFC 3986 unreserved set (R6)."""

    @given(value=ars.importable_credentials())
    def test_unreserved_32_are_importable(self, value: str) -> None:
        assert is_importable_credential(value)

    @given(value=ars.app_keys())
    def test_generated_keys_are_importable(self, value: str) -> None:
        assert is_importable_credential(value)

    @given(value=st.text(alphabet=ALPHABET + "-._~").filter(lambda s: len(s) != 32))
    def test_other_lengths_are_not(self, value: str) -> None:
        assert not is_importable_credential(value)

    @given(
        value=ars.importable_credentials(),
        position=st.integers(0, 31),
        bad=st.characters().filter(lambda ch: ch not in ALPHABET + "-._~"),
    )
    def test_one_reserved_character_spoils_it(self, value: str, position: int, bad: str) -> None:
        spoiled = value[:position] + bad + value[position + 1 :]
        assert not is_importable_credential(spoiled)

    @pytest.mark.parametrize("value", [None, 32, b"a" * 32, ["a"] * 32])
    def test_non_text_is_not(self, value: object) -> None:
        assert not is_importable_credential(value)


SECRET = "jaZK33AmjGFEUXOtcJhyc9h7hlv4Oo8N"


class TestDigests:
    """Secrets and tokens are kept as keyed digests that depend on the pepper."""

    def test_digests_differ_per_pepper(self) -> None:
        one, two = Credentials(pepper=b"one"), Credentials(pepper=b"two")
        assert one.token_digest(SECRET) != two.token_digest(SECRET)
        assert one.store_secret(SECRET).digest != two.store_secret(SECRET).digest

    def test_same_pepper_same_digest(self) -> None:
        assert Credentials(pepper=b"p").token_digest(SECRET) == Credentials(
            pepper=b"p"
        ).token_digest(SECRET)

    def test_default_pepper_differs_from_a_host_pepper(self) -> None:
        assert Credentials().token_digest(SECRET) != Credentials(pepper=b"p").token_digest(SECRET)

    def test_token_and_secret_digests_are_separated(self) -> None:
        creds = Credentials(pepper=b"p")
        assert creds.token_digest(SECRET) != creds.store_secret(SECRET).digest

    def test_empty_pepper_is_refused(self) -> None:
        with pytest.raises(ValueError, match="pepper"):
            Credentials(pepper=b"")

    @given(secret=ars.app_secrets())
    def test_secret_never_appears_in_what_is_stored(self, secret: str) -> None:
        creds = Credentials(pepper=b"p", encryption_key=Fernet.generate_key())
        stored = creds.store_secret(secret)
        assert stored.ciphertext is not None
        assert secret.encode() not in stored.digest
        assert secret.encode() not in stored.ciphertext
        assert secret.encode() not in base64.urlsafe_b64decode(stored.ciphertext)
        for shown in (repr(stored), repr(creds), str(stored)):
            assert secret not in shown

    @given(token=st.text(min_size=1))
    def test_token_digest_is_fixed_size(self, token: str) -> None:
        assert 32 == len(Credentials().token_digest(token))


class TestSecretMatches:
    """Secrets are compared against the digest; an unknown key never matches (R25)."""

    @given(secret=ars.app_secrets(), other=ars.app_secrets())
    def test_only_the_secret_matches(self, secret: str, other: str) -> None:
        creds = Credentials(pepper=b"p")
        stored = creds.store_secret(secret)
        assert creds.secret_matches(stored, secret)
        assert (other == secret) == creds.secret_matches(stored, other)

    @given(secret=st.text())
    def test_unknown_key_is_false(self, secret: str) -> None:
        assert not Credentials().secret_matches(None, secret)

    def test_digest_under_another_pepper_does_not_match(self) -> None:
        stored = Credentials(pepper=b"one").store_secret(SECRET)
        assert not Credentials(pepper=b"two").secret_matches(stored, SECRET)


class TestEncryption:
    """With an encryption key, secrets round-trip; a wrong key fails without leaking (R7)."""

    @given(secret=st.one_of(ars.app_secrets(), ars.importable_credentials()))
    def test_round_trip(self, secret: str) -> None:
        creds = Credentials(encryption_key=Fernet.generate_key())
        assert secret == creds.reveal_secret(creds.store_secret(secret))

    def test_without_a_key_nothing_is_revealed(self) -> None:
        creds = Credentials()
        stored = creds.store_secret(SECRET)
        assert (False, None, None) == (
            creds.can_reveal,
            stored.ciphertext,
            creds.reveal_secret(stored),
        )

    def test_digest_only_record_is_not_revealed_by_a_keyed_registry(self) -> None:
        digest_only = Credentials().store_secret(SECRET)
        assert None is Credentials(encryption_key=Fernet.generate_key()).reveal_secret(digest_only)

    def test_wrong_key_fails_without_the_secret(self) -> None:
        stored = Credentials(encryption_key=Fernet.generate_key()).store_secret(SECRET)
        other = Credentials(encryption_key=Fernet.generate_key())
        with pytest.raises(AppRegistryError) as caught:
            other.reveal_secret(stored)
        shown = [str(caught.value), repr(caught.value), str(caught.value.__cause__)]
        assert [] == [text for text in shown if SECRET in text]

    def test_tampered_ciphertext_fails(self) -> None:
        creds = Credentials(encryption_key=Fernet.generate_key())
        stored = creds.store_secret(SECRET)
        assert stored.ciphertext is not None
        tampered = StoredSecret(stored.digest, stored.ciphertext[:-4] + b"AAAA")
        with pytest.raises(AppRegistryError, match="cannot be decrypted"):
            creds.reveal_secret(tampered)

    @pytest.mark.parametrize(
        "key", [b"not a fernet key", "x" * 44, base64.urlsafe_b64encode(b"sixteen byte key")]
    )
    def test_bad_encryption_key_is_refused_without_echoing_it(self, key: bytes | str) -> None:
        with pytest.raises(ValueError, match="Fernet key") as caught:
            Credentials(encryption_key=key)
        text = key.decode() if isinstance(key, bytes) else key
        assert text not in str(caught.value)

    def test_ciphertexts_differ_for_one_secret(self) -> None:
        creds = Credentials(encryption_key=Fernet.generate_key())
        assert creds.store_secret(SECRET).ciphertext != creds.store_secret(SECRET).ciphertext


class TestSecretsThroughTheRegistry:
    """Secrets and tokens stay out of every repr and event, yet an encrypted secret reveals."""

    def test_nothing_shows_the_secret_or_the_token(self) -> None:
        recorder = EventRecorder()
        registry = Registry(
            storage=MemoryStorage(),
            pepper=b"server pepper",
            secret_encryption_key=Fernet.generate_key(),
            listeners=[recorder],
        )
        new = registry.register_app(
            "acme",
            name="MyApp",
            homepage="http://example.com/",
            admin_email="myapp@example.com",
            redirect_url="https://example.com/cb",
            trusted=True,
        )
        registry.permit_account("acme", by="admin")
        issued = registry.issue_token(new.app.key, new.secret)
        imported = ImportedCredentials(key="k" * 32, secret=new.secret)
        shown = [
            repr(new),
            repr(issued),
            repr(imported),
            repr(registry),
            *(repr(event) for event in recorder.events),
        ]
        assert [] == [text for text in shown if new.secret in text or issued.token in text]
        assert new.secret == registry.reveal_secret(new.app.key)
