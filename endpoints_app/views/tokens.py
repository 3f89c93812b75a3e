"""The Tokens page: the signed-in user's API tokens (create, list, revoke; a value is shown once)."""

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from endpoints_app.errors import StudioError
from endpoints_app.services.audit import Actor
from endpoints_app.services.tokens import api_tokens_of, do_create_api_token, do_revoke_api_token


@never_cache
@login_required
def tokens_page(request):
    context = {"new_token": None, "new_value": None, "error": None, "expires_in_days": "",
               "default_days": settings.STUDIO_API_TOKEN_DAYS, "now": timezone.now()}
    if request.method == "POST":
        days = request.POST.get("expires_in_days", "").strip()
        try:
            token, value = do_create_api_token(Actor.from_request(request), request.user, days)
        except StudioError as error:
            context.update(error=error.message, expires_in_days=days)
        else:
            # Rendered into this response only: never stored in the session or a message.
            context.update(new_token=token, new_value=value)
    context["tokens"] = api_tokens_of(request.user)
    return render(request, "tokens/index.html", context, status=400 if context["error"] else 200)


@login_required
@require_POST
def revoke_token(request, token_id: int):
    do_revoke_api_token(Actor.from_request(request), request.user, token_id)
    messages.success(request, "Token revoked: it no longer works.")
    return redirect("tokens")
