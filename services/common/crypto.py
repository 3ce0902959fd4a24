"""Encryption at rest for OAuth tokens (AES-256-GCM with key rotation).

Tokens are stored as ``v1.<key_id>.<base64url(nonce || ciphertext+tag)>``. The key
id travels with the ciphertext so old records stay readable after a new primary
key is introduced; ``needs_rotation`` tells a re-encryption job which ones to
rewrite. Callers pass the owning record's identifier (the QBO realmId) as
associated data, so a token copied onto another realm's record fails to decrypt.

Nonces are random (96 bits): keep well under 2**32 encryptions per key, i.e.
rotate keys periodically rather than using one forever.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.common import b64url

VERSION = "v1"
KEY_BYTES = 32
NONCE_BYTES = 12
_TAG_BYTES = 16
# No "." (token separator), ":" or "," (env string separators).
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]+={0,2}$")


class DecryptionError(Exception):
    """A token could not be decrypted: malformed, unknown key id, or failed authentication."""


def _b64url_decode(text: str) -> bytes:
    if not _B64URL_RE.fullmatch(text):
        raise DecryptionError("token payload is not base64url")
    try:
        return b64url.decode(text)
    except ValueError as exc:
        raise DecryptionError("token payload is not base64url") from exc


def _decode_key(text: str, key_id: str) -> bytes:
    """Decode a key given in standard or URL-safe base64 (padding optional)."""
    cleaned = text.strip().replace("-", "+").replace("_", "/").rstrip("=")
    try:
        key = base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"key {key_id!r} is not valid base64") from exc
    return key


def _aad(key_id: str, associated_data: str) -> bytes:
    # Bind the header too, so the version/key id cannot be altered unnoticed.
    return f"{VERSION}.{key_id}.".encode() + associated_data.encode("utf-8")


class KeyRing:
    """A set of named 256-bit keys, one of which (``primary``) encrypts new data."""

    def __init__(self, keys: Mapping[str, bytes], primary: str) -> None:
        if not keys:
            raise ValueError("a key ring needs at least one key")
        ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID_RE.fullmatch(key_id):
                raise ValueError(f"invalid key id {key_id!r}: use 1-32 of [A-Za-z0-9_-]")
            if not isinstance(key, bytes | bytearray) or len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} must be exactly {KEY_BYTES} bytes")
            ciphers[key_id] = AESGCM(bytes(key))
        if primary not in ciphers:
            raise ValueError(f"primary key id {primary!r} is not in the key ring")
        self._ciphers = ciphers
        self._primary = primary

    @classmethod
    def from_env_string(cls, value: str, primary: str) -> KeyRing:
        """Parse ``"k1:<base64 key>,k2:<base64 key>"`` (e.g. from an env variable)."""
        keys: dict[str, bytes] = {}
        for entry in value.split(","):
            entry = entry.strip()
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep or not key_id:
                # Never echo the entry: it may contain key material.
                raise ValueError("key ring entries must look like '<key_id>:<base64 key>'")
            if key_id in keys:
                raise ValueError(f"duplicate key id {key_id!r} in key ring")
            keys[key_id] = _decode_key(encoded, key_id)
        return cls(keys, primary)

    @classmethod
    def generate(cls, key_id: str = "dev") -> KeyRing:
        """A ring with one fresh random key: for development and tests only
        (the key is lost when the process exits)."""
        return cls({key_id: AESGCM.generate_key(bit_length=256)}, key_id)

    @property
    def primary(self) -> str:
        """Id of the key used for new encryptions."""
        return self._primary

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of all keys that can decrypt."""
        return frozenset(self._ciphers)

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={sorted(self._ciphers)!r}, primary={self._primary!r})"

    def encrypt(self, plaintext: str, associated_data: str) -> str:
        """Encrypt with the primary key and a random nonce."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self._primary].encrypt(
            nonce, plaintext.encode("utf-8"), _aad(self._primary, associated_data)
        )
        return f"{VERSION}.{self._primary}.{b64url.encode(nonce + sealed)}"

    def decrypt(self, token: str, associated_data: str) -> str:
        """Decrypt a token from ``encrypt``; raises ``DecryptionError`` on any failure."""
        key_id, payload = self._split(token)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError(f"unknown key id {key_id!r}")
        raw = _b64url_decode(payload)
        if len(raw) < NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("token payload is too short")
        nonce, sealed = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        try:
            plaintext = cipher.decrypt(nonce, sealed, _aad(key_id, associated_data))
        except InvalidTag:
            raise DecryptionError(
                "token failed authentication (tampered, or wrong associated data)"
            ) from None
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:  # cannot happen for tokens made by encrypt()
            raise DecryptionError("decrypted token is not UTF-8") from None

    def needs_rotation(self, token: str) -> bool:
        """Whether ``token`` was encrypted with a key other than the primary."""
        key_id, _ = self._split(token)
        return key_id != self._primary

    @staticmethod
    def _split(token: str) -> tuple[str, str]:
        if not isinstance(token, str):
            raise DecryptionError("token must be a string")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise DecryptionError(f"not a {VERSION} encrypted token")
        key_id, payload = parts[1], parts[2]
        if not _KEY_ID_RE.fullmatch(key_id):
            raise DecryptionError("malformed key id in token")
        return key_id, payload
