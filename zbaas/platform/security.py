"""Password hashing, platform tokens, API keys and encryption of stored secrets."""

from __future__ import annotations

import base64
import hashlib
import secrets
import string
import zlib
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

BASE62 = string.digits + string.ascii_letters
PUBLISHABLE_PREFIX = "zmesh_pk_"
SECRET_PREFIX = "zmesh_sk_"
KEY_PREFIXES = {"publishable": PUBLISHABLE_PREFIX, "secret": SECRET_PREFIX}
KEY_RANDOM_BYTES = 32
KEY_CHECKSUM_LENGTH = 6
# Characters of the key kept in clear for display; the rest is stored only as SHA-256.
KEY_DISPLAY_LENGTH = len(PUBLISHABLE_PREFIX) + 6

_hasher = PasswordHasher()  # argon2id with the library's RFC 9106 low-memory profile
# A hash of a random password, verified when the email is unknown so that the
# two failures take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Check ``password``; a missing hash still costs one verification."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def _base62(data: bytes, length: int | None = None) -> str:
    number = int.from_bytes(data, "big")
    chars = []
    while number:
        number, rem = divmod(number, 62)
        chars.append(BASE62[rem])
    text = "".join(reversed(chars)) or "0"
    return text.rjust(length, "0") if length else text


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()).to_bytes(4, "big"), KEY_CHECKSUM_LENGTH)


# 32 random bytes are at most 43 base62 digits; padding keeps every key one length.
_KEY_BODY_LENGTH = 43


def generate_api_key(key_type: str) -> str:
    """Return a new key: prefix, 32 random bytes in base62, and a CRC32 checksum."""
    body = KEY_PREFIXES[key_type] + _base62(secrets.token_bytes(KEY_RANDOM_BYTES), _KEY_BODY_LENGTH)
    return body + _checksum(body)


def api_key_type(key: str) -> str | None:
    """Return ``publishable`` or ``secret`` for a well-formed key, None for anything else.

    The checksum lets a malformed or mistyped key fail without a database lookup.
    """
    for key_type, prefix in KEY_PREFIXES.items():
        expected_length = len(prefix) + _KEY_BODY_LENGTH + KEY_CHECKSUM_LENGTH
        if key.startswith(prefix) and len(key) == expected_length:
            body, checksum = key[:-KEY_CHECKSUM_LENGTH], key[-KEY_CHECKSUM_LENGTH:]
            if all(c in BASE62 for c in key[len(prefix) :]) and secrets.compare_digest(
                checksum, _checksum(body)
            ):
                return key_type
    return None


def hash_token(token: str) -> bytes:
    """SHA-256 of a high-entropy token; such tokens need no slow hash."""
    return hashlib.sha256(token.encode()).digest()


def new_refresh_token() -> str:
    return secrets.token_urlsafe(32)


class TokenSigner:
    """Signs and checks platform access tokens (HS256)."""

    def __init__(self, secret_key: str, ttl_seconds: int) -> None:
        self._key = hashlib.sha256(b"zbaas-access-token:" + secret_key.encode()).digest()
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: str, session_id: str) -> str:
        now = datetime.now(UTC)
        claims = {
            "sub": user_id,
            "sid": session_id,
            "iat": now,
            "exp": now + timedelta(seconds=self.ttl_seconds),
            "typ": "access",
        }
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: str) -> dict[str, Any] | None:
        try:
            claims = jwt.decode(
                token, self._key, algorithms=["HS256"], options={"require": ["exp", "sub", "sid"]}
            )
        except jwt.PyJWTError:
            return None
        return claims if claims.get("typ") == "access" else None


DECRYPTED_MAX = 4096


class SecretBox:
    """Encrypts credentials kept in the control database (Fernet: AES-128-CBC + HMAC)."""

    def __init__(self, secret_key: str) -> None:
        derived = hashlib.sha256(b"zbaas-secret-box:" + secret_key.encode()).digest()
        self._fernet = Fernet(base64.urlsafe_b64encode(derived))
        # Stored credentials are decrypted on every data API request; a
        # ciphertext always decrypts to the same text, so it is kept.
        self._decrypted: dict[str, str] = {}

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        plain = self._decrypted.get(token)
        if plain is not None:
            return plain
        try:
            plain = self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise RuntimeError(
                "a stored credential cannot be decrypted: ZBAAS_SECRET_KEY differs from "
                "the key it was written with"
            ) from exc
        if len(self._decrypted) >= DECRYPTED_MAX:
            self._decrypted.clear()
        self._decrypted[token] = plain
        return plain
