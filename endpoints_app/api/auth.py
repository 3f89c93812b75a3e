"""API token authentication: knox's hashed tokens, presented as `Authorization: Token <t>`
or `Authorization: Bearer <t>` (what most HTTP clients send)."""

from datetime import timedelta

from django.utils import timezone
from knox.auth import TokenAuthentication
from rest_framework import exceptions
from rest_framework.authentication import get_authorization_header

from endpoints_app.models import ApiToken

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

    def authenticate_header(self, request) -> str:
        return "Bearer"
