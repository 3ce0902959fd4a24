"""OpenID Connect: the RS256 key behind ``jwks_uri`` and the ``id_token`` it signs.

Intuit's discovery document advertises ``id_token_signing_alg_values_supported:
["RS256"]``, a ``jwks_uri`` and the claims ``aud, exp, iat, iss, realmid, sub``
(developer.intuit.com, "Authorization discovery documents"). Its SDKs check the
token the same way - ``iss`` equals the discovery ``issuer``, ``aud`` is a list
whose first entry is the client id, ``exp`` is in the future, and the signature
verifies with the JWK whose ``kid`` the header names (intuit/oauth-pythonclient
``intuitlib/utils.py`` ``validate_id_token``; intuit/oauth-jsclient
``src/OAuthClient.js`` ``validateIdToken``) - so the emulator's token passes those
checks unchanged. The key is made per emulator instance, on first use.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

#: Intuit's issuer; clients compare the token's ``iss`` with it, so it is kept verbatim.
ISSUER = "https://oauth.platform.intuit.com/op/v1"
ID_TOKEN_TTL_S = 3600
_SUB_NAMESPACE = uuid.UUID("6f1c1e0a-7d0b-4c59-9d6e-2b8f3c5a9e41")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def subject(realm_id: str) -> str:
    """A stable user id (Intuit's ``sub`` is a UUID) for the user who connected ``realm_id``."""
    return str(uuid.uuid5(_SUB_NAMESPACE, realm_id))


class SigningKey:
    """One RSA key: published as a JWK set, used to sign id tokens."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = secrets.token_hex(8)

    def jwks(self) -> dict[str, Any]:
        numbers = self._key.public_key().public_numbers()
        return {
            "keys": [
                {
                    "kty": "RSA",
                    "alg": "RS256",
                    "use": "sig",
                    "kid": self.kid,
                    "e": _uint(numbers.e),
                    "n": _uint(numbers.n),
                }
            ]
        }

    def sign(self, claims: dict[str, Any]) -> str:
        header = {"kid": self.kid, "alg": "RS256"}
        signing_input = ".".join(
            _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        signature = self._key.sign(
            signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256()
        )
        return f"{signing_input}.{_b64url(signature)}"


def id_token_claims(client_id: str, realm_id: str, now: float) -> dict[str, Any]:
    issued = int(now)
    return {
        "sub": subject(realm_id),
        "aud": [client_id],
        "realmid": realm_id,
        "auth_time": issued,
        "iss": ISSUER,
        "exp": issued + ID_TOKEN_TTL_S,
        "iat": issued,
    }
