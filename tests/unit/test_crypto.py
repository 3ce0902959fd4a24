"""AES-256-GCM token encryption with key rotation."""

from __future__ import annotations

import base64
import os

import pytest

from services.common.crypto import DecryptionError, KeyRing

REALM = "9130350000000001"
SECRET = "AB11-refresh-token-value-that-must-stay-secret"
K1 = bytes(range(32))
K2 = bytes(range(32, 64))


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing({"k1": K1}, primary="k1")


def test_round_trip(ring: KeyRing) -> None:
    for plaintext in [SECRET, "", "ünïcødé ✓ token"]:
        token = ring.encrypt(plaintext, REALM)
        assert ring.decrypt(token, REALM) == plaintext


def test_token_format_and_random_nonce(ring: KeyRing) -> None:
    first, second = ring.encrypt(SECRET, REALM), ring.encrypt(SECRET, REALM)
    assert first != second  # fresh nonce each time
    version, key_id, payload = first.split(".")
    assert (version, key_id) == ("v1", "k1")
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert len(raw) == 12 + len(SECRET.encode()) + 16  # nonce | ciphertext | tag
    assert "=" not in payload and "+" not in payload and "/" not in payload


def test_ciphertext_does_not_contain_plaintext(ring: KeyRing) -> None:
    token = ring.encrypt(SECRET, REALM)
    payload = token.split(".")[2]
    raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    assert SECRET not in token
    assert SECRET.encode() not in raw
    assert base64.urlsafe_b64encode(SECRET.encode()).decode()[:20] not in token


def test_associated_data_mismatch_fails(ring: KeyRing) -> None:
    token = ring.encrypt(SECRET, REALM)
    with pytest.raises(DecryptionError, match="authentication"):
        ring.decrypt(token, "9130350000000002")


@pytest.mark.parametrize("position", [0, 5, 12, 20, -1])
def test_tampered_payload_fails(ring: KeyRing, position: int) -> None:
    token = ring.encrypt(SECRET, REALM)
    prefix, payload = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    raw[position] ^= 0x01
    forged = f"{prefix}.{base64.urlsafe_b64encode(bytes(raw)).decode().rstrip('=')}"
    with pytest.raises(DecryptionError):
        ring.decrypt(forged, REALM)


def test_swapping_key_id_fails() -> None:
    ring = KeyRing({"k1": K1, "k2": K1}, primary="k1")  # same key bytes, different ids
    token = ring.encrypt(SECRET, REALM)
    with pytest.raises(DecryptionError, match="authentication"):
        ring.decrypt(token.replace("v1.k1.", "v1.k2.", 1), REALM)


@pytest.mark.parametrize(
    "token",
    ["", "v1.k1", "v2.k1.AAAA", "v1.k1.not base64!", "v1.k1.AAAA", "v1.k.1.AAAA", "v1..AAAA"],
)
def test_malformed_tokens_fail_cleanly(ring: KeyRing, token: str) -> None:
    with pytest.raises(DecryptionError):
        ring.decrypt(token, REALM)


def test_unknown_key_id_fails(ring: KeyRing) -> None:
    other = KeyRing({"k9": K2}, primary="k9")
    with pytest.raises(DecryptionError, match="unknown key id 'k9'"):
        ring.decrypt(other.encrypt(SECRET, REALM), REALM)


def test_rotation() -> None:
    old_ring = KeyRing({"k1": K1}, primary="k1")
    old_token = old_ring.encrypt(SECRET, REALM)

    rotated = KeyRing({"k1": K1, "k2": K2}, primary="k2")
    assert rotated.decrypt(old_token, REALM) == SECRET  # old key still decrypts
    assert rotated.needs_rotation(old_token)

    new_token = rotated.encrypt(SECRET, REALM)
    assert new_token.startswith("v1.k2.")  # new data uses the primary
    assert not rotated.needs_rotation(new_token)
    with pytest.raises(DecryptionError, match="unknown key id"):
        old_ring.decrypt(new_token, REALM)


def test_needs_rotation_rejects_garbage(ring: KeyRing) -> None:
    with pytest.raises(DecryptionError):
        ring.needs_rotation("plaintext-token")


def test_from_env_string() -> None:
    urlsafe_unpadded = base64.urlsafe_b64encode(K2).decode().rstrip("=")
    ring = KeyRing.from_env_string(f" k1:{b64(K1)} , k2:{urlsafe_unpadded} ,", primary="k2")
    assert ring.primary == "k2"
    assert ring.key_ids == frozenset({"k1", "k2"})
    token = KeyRing({"k1": K1}, primary="k1").encrypt(SECRET, REALM)
    assert ring.decrypt(token, REALM) == SECRET


@pytest.mark.parametrize(
    ("value", "primary", "message"),
    [
        (f"k1:{b64(K1)}", "k2", "primary"),
        (f"k1:{b64(K1[:16])}", "k1", "32 bytes"),
        (f"k1:{b64(K1)},k1:{b64(K2)}", "k1", "duplicate"),
        (b64(K1), "k1", "key_id"),
        ("k1:!!!notbase64!!!", "k1", "base64"),
        (f"k.1:{b64(K1)}", "k.1", "invalid key id"),
        ("", "k1", "at least one key"),
    ],
)
def test_from_env_string_rejects_bad_config(value: str, primary: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as info:
        KeyRing.from_env_string(value, primary=primary)
    assert b64(K1) not in str(info.value)  # key material never ends up in errors


def test_generate_and_repr_do_not_leak_keys() -> None:
    ring = KeyRing.generate()
    assert ring.primary == "dev"
    assert ring.decrypt(ring.encrypt(SECRET, REALM), REALM) == SECRET
    with pytest.raises(DecryptionError):
        KeyRing.generate().decrypt(ring.encrypt(SECRET, REALM), REALM)
    ring_with_known_key = KeyRing({"k1": K1}, primary="k1")
    assert repr(ring_with_known_key) == "KeyRing(key_ids=['k1'], primary='k1')"
    assert b64(K1) not in repr(ring_with_known_key) and K1.hex() not in repr(ring_with_known_key)


def test_keys_must_be_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        KeyRing({"k1": os.urandom(16)}, primary="k1")
