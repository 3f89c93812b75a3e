"""API tokens: made, listed and revoked by their own user. The value exists only in the
return value of do_create_api_token(); the database keeps knox's digest."""

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import Http404

from endpoints_app.models import ApiToken
from endpoints_app.services.audit import Actor, record
from endpoints_app.services.specs import parse_int

MAX_TOKEN_DAYS = 3650


def parse_expires_in_days(value: Any) -> int:
    if value in (None, ""):
        return settings.STUDIO_API_TOKEN_DAYS
    return parse_int(value, "expires_in_days", 1, MAX_TOKEN_DAYS)


def api_tokens_of(user):
    return ApiToken.objects.filter(user=user)


@transaction.atomic
def do_create_api_token(actor: Actor, user, expires_in_days: Any = None) -> tuple[ApiToken, str]:
    """Return the new token row and its value, which is never stored nor shown again."""
    days = parse_expires_in_days(expires_in_days)
    token, value = ApiToken.objects.create(user=user, expiry=timedelta(days=days))
    record(actor, "api_token.create", token, expires=token.expiry.isoformat(), for_user=user.get_username())
    return token, value


@transaction.atomic
def do_revoke_api_token(actor: Actor, user, token_id: Any) -> None:
    """Revoke one of `user`'s tokens; someone else's token is a 404, as if it did not exist."""
    try:
        pk = int(token_id)
    except (TypeError, ValueError):
        raise Http404("No such token.") from None
    token = api_tokens_of(user).filter(pk=pk).first()
    if token is None:
        raise Http404("No such token.")
    record(actor, "api_token.revoke", token, for_user=user.get_username())
    token.delete()
