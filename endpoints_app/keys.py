"""Endpoint keys and tokens.

A key is derived from SECRET_KEY and a random per-slot nonce, so the database
holds only the nonce and a SHA-256 digest: a dump reveals no key, yet the
studio can show the key again (list-keys) and the gateway checks a presented
key by digest in constant time. aml_token tokens are signed with SECRET_KEY
and carry their expiry."""

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


def derive_key(nonce: str) -> str:
    mac = hmac.new(settings.SECRET_KEY.encode(), f"endpoint-key:{nonce}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def matches(presented: str, stored_digests: tuple[str, ...]) -> bool:
    """Constant-time check of a presented key against the stored digests."""
    candidate = digest(presented)
    ok = False
    for stored in stored_digests:
        if stored and hmac.compare_digest(candidate, stored):
            ok = True
    return ok


def issue_token(endpoint_name: str, lifetime: int = TOKEN_LIFETIME_SECONDS) -> tuple[str, int]:
    """A signed token for an aml_token endpoint, and its expiry as a Unix time."""
    expiry = int(time.time()) + lifetime
    token = signing.dumps({"e": endpoint_name, "x": expiry}, salt=TOKEN_SALT, compress=False)
    return token, expiry


def verify_token(token: str, endpoint_name: str) -> bool:
    try:
        payload = signing.loads(token, salt=TOKEN_SALT)
    except signing.BadSignature:
        return False
    if not isinstance(payload, dict):
        return False
    return hmac.compare_digest(str(payload.get("e", "")), endpoint_name) and int(payload.get("x", 0)) > time.time()
