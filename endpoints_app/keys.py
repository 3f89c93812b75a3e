"""Endpoint keys and tokens.

A key is derived from SECRET_KEY and a random per-slot nonce, so the database
holds only the nonce: a dump reveals no key, yet the studio can show the key
again (list-keys). The gateway derives, off the hot path, the digest of each
slot's key under SECRET_KEY and under every SECRET_KEY_FALLBACKS entry, and
checks a presented key against them in constant time: rotating the secret keeps
the keys users hold working (the old secret is a fallback) while the UI shows
keys of the new one, and keys of a secret dropped from the fallbacks stop.

aml_token tokens are signed with SECRET_KEY (verified with the fallbacks too)
and carry the endpoint's id, its token generation (bumped by key regeneration
and deletion) and their expiry."""

import base64
import hashlib
import hmac
import secrets
import time

from django.conf import settings
from django.core import signing

TOKEN_SALT = "studio.aml_token"
TOKEN_LIFETIME_SECONDS = 3600


def new_nonce() -> str:
    return secrets.token_hex(16)


def secrets_in_force() -> tuple[str, ...]:
    return (settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)


def derive_key(nonce: str, secret: str | None = None) -> str:
    """The key of a slot under `secret` (the current SECRET_KEY unless told)."""
    secret = settings.SECRET_KEY if secret is None else secret
    mac = hmac.new(secret.encode(), f"endpoint-key:{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def accepted_digests(nonces: tuple[str, ...]) -> tuple[str, ...]:
    """Digests of every key a client may hold: each slot under each secret in force."""
    return tuple(digest(derive_key(nonce, secret)) for nonce in nonces if nonce for secret in secrets_in_force())


def matches(presented: str, stored_digests: tuple[str, ...]) -> bool:
    """Constant-time check of a presented key against the stored digests."""
    candidate = digest(presented)
    ok = False
    for stored in stored_digests:
        if stored and hmac.compare_digest(candidate, stored):
            ok = True
    return ok


def issue_token(endpoint_id: int, generation: int, lifetime: int = TOKEN_LIFETIME_SECONDS) -> tuple[str, int]:
    """A signed token for one aml_token endpoint (by id, not name) and generation, and its expiry."""
    expiry = int(time.time()) + lifetime
    token = signing.dumps({"i": endpoint_id, "g": generation, "x": expiry}, salt=TOKEN_SALT, compress=False)
    return token, expiry


def verify_token(token: str, endpoint_id: int, generation: int) -> bool:
    """signing.loads tries SECRET_KEY, then each SECRET_KEY_FALLBACKS entry."""
    try:
        payload = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature:
        return False
    if not isinstance(payload, dict):
        return False
    try:
        return (int(payload["i"]) == endpoint_id and int(payload["g"]) == generation
                and int(payload["x"]) > time.time())
    except (KeyError, TypeError, ValueError):
        return False
