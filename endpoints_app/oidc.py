"""Identity tokens from the configured OpenID provider: validation with PyJWT and its JWKS client.

Used by the gateway (`auth_mode: aad_token` endpoints, the model inference API), the REST API and
batch scoring URIs. Nothing here validates by hand: PyJWT checks the signature (RS/ES/PS/EdDSA only,
never a shared-secret algorithm), `iss`, `aud`, `exp` and `nbf` (with STUDIO_OIDC_LEEWAY_SECONDS of
clock skew). The provider's keys come from its `jwks_uri` (discovered from its metadata), are kept for
STUDIO_OIDC_JWKS_CACHE_SECONDS, and fetched again when a token names a key id not seen yet (the
provider rotated its keys), at most every STUDIO_OIDC_JWKS_MIN_REFRESH_SECONDS so made-up key ids
cannot make the studio hammer the provider.

A validated token is kept (in this process) until it expires: the gateway's hot path then costs one
dict look-up. Whether the identity may act is decided afterwards, each time, from the caller's roles
(the gateway's route table, or the database for the API), so a role taken away applies at once."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import jwt
import requests
from django.conf import settings

# Asymmetric algorithms only: a token signed with a shared secret (HS256) is refused whatever its key says.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]
# Validated tokens kept per process; past this the expired ones go, then the oldest half.
MAX_CACHED_TOKENS = 10_000
HTTP_TIMEOUT_SECONDS = 5


class TokenRejected(Exception):
    """Why a token was refused: `code` and a message that names the reason (never the token)."""

    def __init__(self, code: str, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


@dataclass(frozen=True, slots=True)
class Identity:
    issuer: str
    subject: str
    client_id: str  # azp, client_id or appid
    expires: float
    # A client-credentials token: no person behind it (sub is the client, or the provider says so).
    is_app: bool
    # Its keys in the gateway's role tables (made once here, not per request).
    user_key: str = ""
    app_key: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "user_key", user_key(self.issuer, self.subject))
        object.__setattr__(self, "app_key", app_key(self.client_id))

    def audit_label(self) -> str:
        """How the audit log names it: issuer and subject, or the service principal."""
        return f"service principal {self.client_id}" if self.is_app else f"{self.issuer} {self.subject}"

    def describe(self) -> str:
        if self.is_app:
            return f"service principal '{self.client_id}'"
        return f"'{self.subject}' of {self.issuer}"


def user_key(issuer: str, subject: str) -> str:
    return f"user\n{issuer}\n{subject}"


def app_key(client_id: str) -> str:
    return f"app\n{client_id}"


def bearer(authorization: bytes | str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header, else ""."""
    if not authorization:
        return ""
    if isinstance(authorization, bytes):
        authorization = authorization.decode("latin-1")
    scheme, _, token = authorization.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def looks_like_jwt(token: str) -> bool:
    """Three dot-separated parts: an identity token rather than a studio key or API token."""
    return token.count(".") == 2 and token[:2] == "ey"


class TokenValidator:
    def __init__(self, issuer: str, audience: str, leeway: int, jwks_cache_seconds: int,
                 min_refresh_seconds: float) -> None:
        self.issuer, self.audience, self.leeway = issuer, audience, leeway
        self.jwks_cache_seconds = jwks_cache_seconds
        self.min_refresh_seconds = min_refresh_seconds
        self._jwks: jwt.PyJWKClient | None = None
        self._refreshed_at = 0.0
        self._lock = threading.Lock()
        self._cache: dict[str, Identity] = {}

    # ------------------------------------------------------------------ hot path

    def cached(self, token: str) -> Identity | None:
        """The identity of a token validated before and not expired yet; no I/O."""
        identity = self._cache.get(token)
        if identity is not None and identity.expires > time.time():
            return identity
        return None

    # ------------------------------------------------------------------ off the hot path (blocking)

    def validate(self, token: str) -> Identity:
        """Check the token and keep it until it expires; raises TokenRejected naming the reason.
        Blocking (it may fetch the provider's keys): the gateway calls it in a thread."""
        identity = self.cached(token)
        if identity is not None:
            return identity
        if not looks_like_jwt(token):
            raise TokenRejected("InvalidToken", "The bearer credential is not a JWT from the identity provider.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise TokenRejected("InvalidToken", "The token is not a well-formed JWT.") from None
        if header.get("alg") not in ALGORITHMS:
            raise TokenRejected("InvalidToken", f"Tokens signed with {header.get('alg')!r} are not accepted.")
        key = self._signing_key(str(header.get("kid") or ""))
        try:
            claims = jwt.decode(
                token, key, algorithms=ALGORITHMS, audience=self.audience, issuer=self.issuer,
                leeway=self.leeway, options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("TokenExpired", "The token has expired; get a new one from the provider.") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("TokenNotYetValid", "The token is not valid yet (nbf or iat is in the future).") \
                from None
        except jwt.InvalidAudienceError:
            raise TokenRejected("InvalidAudience", f"The token's audience is not this studio's ({self.audience}).") \
                from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("InvalidIssuer", f"The token was not issued by {self.issuer}.") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("InvalidSignature", "The token's signature does not verify.") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("InvalidToken", f"The token lacks the '{exc.claim}' claim.") from None
        except jwt.PyJWTError as exc:
            raise TokenRejected("InvalidToken", f"The token is invalid: {type(exc).__name__}.") from None
        client_id = str(claims.get("azp") or claims.get("client_id") or claims.get("appid") or "")
        subject = str(claims["sub"])
        identity = Identity(
            issuer=str(claims["iss"]), subject=subject, client_id=client_id or subject,
            expires=float(claims["exp"]),
            is_app=claims.get("idtyp") == "app" or not client_id or subject == client_id,
        )
        self._remember(token, identity)
        return identity

    def _remember(self, token: str, identity: Identity) -> None:
        if len(self._cache) >= MAX_CACHED_TOKENS:
            now = time.time()
            live = {t: i for t, i in self._cache.items() if i.expires > now}
            if len(live) >= MAX_CACHED_TOKENS:
                live = dict(list(live.items())[MAX_CACHED_TOKENS // 2:])
            self._cache = live
        self._cache[token] = identity

    def _client(self) -> jwt.PyJWKClient:
        with self._lock:
            if self._jwks is None:
                try:
                    metadata = discover(self.issuer)
                except (requests.RequestException, ValueError) as exc:
                    raise TokenRejected("IdentityProviderUnavailable",
                                        f"The identity provider's metadata could not be read: {type(exc).__name__}.",
                                        status=503) from None
                self._jwks = jwt.PyJWKClient(metadata["jwks_uri"], cache_keys=False, cache_jwk_set=True,
                                             lifespan=self.jwks_cache_seconds, timeout=HTTP_TIMEOUT_SECONDS)
            return self._jwks

    def _signing_key(self, kid: str):
        client = self._client()
        try:
            keys = client.get_signing_keys()
            key = client.match_kid(keys, kid) if kid else (keys[0] if len(keys) == 1 else None)
            if key is None and time.monotonic() - self._refreshed_at >= self.min_refresh_seconds:
                # A key id not seen yet: the provider may have rotated its keys.
                self._refreshed_at = time.monotonic()
                key = client.match_kid(client.get_signing_keys(refresh=True), kid) if kid else None
        except jwt.PyJWKClientConnectionError:
            raise TokenRejected("IdentityProviderUnavailable", "The identity provider's keys could not be fetched.",
                                status=503) from None
        except jwt.PyJWKClientError:
            key = None
        if key is None:
            raise TokenRejected("UnknownSigningKey", "The token is signed with a key the identity provider does not "
                                f"publish (kid {kid!r}).")
        return key.key


def discover(issuer: str) -> dict:
    """The provider's OpenID metadata (RFC 8414 / OpenID Discovery); its `issuer` must be ours."""
    response = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=HTTP_TIMEOUT_SECONDS)
    response.raise_for_status()
    metadata = response.json()
    if metadata.get("issuer", "").rstrip("/") != issuer.rstrip("/") or not metadata.get("jwks_uri"):
        raise ValueError("metadata issuer mismatch or no jwks_uri")
    return metadata


_validator: TokenValidator | None = None
_validator_settings: tuple = ()


def validator() -> TokenValidator | None:
    """This process's validator for the configured provider (None when identity tokens are off).
    Settings are compared each call so tests that change them get a new one (five attribute reads)."""
    global _validator, _validator_settings
    current = (settings.STUDIO_OIDC_ISSUER, settings.STUDIO_OIDC_AUDIENCE, settings.STUDIO_OIDC_LEEWAY_SECONDS,
               settings.STUDIO_OIDC_JWKS_CACHE_SECONDS, settings.STUDIO_OIDC_JWKS_MIN_REFRESH_SECONDS)
    if current != _validator_settings:
        _validator = TokenValidator(*current) if current[0] else None
        _validator_settings = current
    return _validator
