"""API token authentication: knox's hashed tokens, presented as `Authorization: Token <t>`
or `Authorization: Bearer <t>` (what most HTTP clients send)."""

from datetime import timedelta
from hmac import compare_digest

from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from knox.auth import TokenAuthentication
from knox.crypto import hash_token
from knox.settings import CONSTANTS
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from endpoints_app import oidc
from endpoints_app.models import ApiToken
from endpoints_app.services.identity import user_for_identity

KEYWORDS = (b"token", b"bearer")
# last_used is a hint, not a log: one write a minute per token keeps reads write-free.
LAST_USED_GRAIN = timedelta(minutes=1)


class ApiTokenAuthentication(TokenAuthentication):
    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() not in KEYWORDS:
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header: use 'Bearer <token>'.")
        try:
            parts[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        user, token = self.authenticate_credentials(parts[1])
        now = timezone.now()
        if token.last_used is None or now - token.last_used > LAST_USED_GRAIN:
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)
            token.last_used = now
        return user, token

    def authenticate_credentials(self, token: bytes):
        """knox's check in one query: rows whose prefix matches, digest compared in constant time.
        (knox's own version also sweeps all the user's other tokens on every request.)"""
        value = token.decode("ascii")
        digest = hash_token(value)
        now = timezone.now()
        for row in ApiToken.objects.filter(token_key=value[: CONSTANTS.TOKEN_KEY_LENGTH]).select_related("user"):
            if not compare_digest(digest, row.digest):
                continue
            if row.expiry is not None and row.expiry < now:
                row.delete()  # expired tokens go; the caller gets the same 401 as for a wrong one
                break
            return self.validate_user(row)
        raise exceptions.AuthenticationFailed("Invalid or expired token.")

    def authenticate_header(self, request) -> str:
        return "Bearer"


class ApiTokenScheme(OpenApiAuthenticationExtension):
    """How /api/schema/ documents the header (drf-spectacular finds this subclass by itself)."""

    target_class = "endpoints_app.api.auth.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "`Authorization: Bearer <token>` (or `Token <token>`); tokens from /api/v1/tokens, "
                           "the Tokens page or `manage.py drf_create_token <user>`.",
        }


class OidcTokenAuthentication(BaseAuthentication):
    """`Authorization: Bearer <JWT from the configured OpenID provider>`: validated by endpoints_app.oidc
    (PyJWT, the provider's keys), then the person linked at their first sign-in or the registered
    service principal. Anything that is not a JWT is left to the API token authentication."""

    def authenticate(self, request):
        validator = oidc.validator()
        token = oidc.bearer(get_authorization_header(request))
        if validator is None or not oidc.looks_like_jwt(token):
            return None
        try:
            identity = validator.validate(token)
        except oidc.TokenRejected as exc:
            raise exceptions.AuthenticationFailed(f"{exc.code}: {exc.message}") from None

        user = user_for_identity(identity)
        if user is None:
            raise exceptions.AuthenticationFailed(
                f"{identity.describe()} is not known to the studio: a person signs in to the portal once; a "
                "service principal is registered by a workspace Owner or IT."
            )
        if not user.is_active:
            raise exceptions.AuthenticationFailed("This account is deactivated.")
        return user, identity

    def authenticate_header(self, request) -> str:
        return "Bearer"


class OidcTokenScheme(OpenApiAuthenticationExtension):
    target_class = "endpoints_app.api.auth.OidcTokenAuthentication"
    name = "identityToken"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                "description": "`Authorization: Bearer <token>` from the studio's OpenID provider "
                               "(STUDIO_OIDC_ISSUER)."}
