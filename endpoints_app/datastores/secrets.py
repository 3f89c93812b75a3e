"""Datastore credentials, encrypted at rest.

The key is derived from SECRET_KEY (HMAC-SHA256 with a purpose label), so a database dump alone
reveals no credential. Tokens are Fernet (AES-CBC + HMAC): encrypt() uses the current SECRET_KEY,
decrypt() accepts SECRET_KEY and every SECRET_KEY_FALLBACKS entry, and rotate() re-encrypts a token
made under a fallback with the current secret, so rotating the secret keeps datastores working and
a secret dropped from the fallbacks stops opening them (as endpoint keys do: endpoints_app/keys.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from endpoints_app.keys import secrets_in_force

PURPOSE = b"studio.datastore-credentials.v1"


class UnreadableCredentials(Exception):
    """Encrypted under a secret no longer in force (SECRET_KEY and its fallbacks)."""


UNREADABLE = ("the datastore's credentials were encrypted with a secret key no longer in force "
              "(SECRET_KEY or SECRET_KEY_FALLBACKS); delete the datastore and create it again")


def _fernet(secret: str) -> Fernet:
    raw = hmac.new(secret.encode(), PURPOSE, hashlib.sha256).digest()
    return Fernet(base64.urlsafe_b64encode(raw))


def _multi() -> MultiFernet:
    return MultiFernet([_fernet(s) for s in secrets_in_force()])


def encrypt(credentials: dict[str, str]) -> str:
    if not credentials:
        return ""
    return _multi().encrypt(json.dumps(credentials, sort_keys=True).encode()).decode()


def decrypt(token: str) -> dict[str, str]:
    if not token:
        return {}
    try:
        return json.loads(_multi().decrypt(token.encode()))
    except InvalidToken:
        raise UnreadableCredentials(UNREADABLE) from None


def needs_rotation(token: str) -> bool:
    """True when `token` opens only under a fallback secret."""
    if not token:
        return False
    try:
        _fernet(secrets_in_force()[0]).decrypt(token.encode())
        return False
    except InvalidToken:
        return True


def rotate(token: str) -> str:
    """The same credentials encrypted under the current SECRET_KEY."""
    try:
        return _multi().rotate(token.encode()).decode()
    except InvalidToken:
        raise UnreadableCredentials(UNREADABLE) from None
