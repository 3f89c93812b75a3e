"""Sign-in with the company's OpenID provider, through Authlib's Django client: discovery from the
issuer's metadata, the authorization code flow with PKCE, state and nonce, and the ID token's
validation (signature, iss, aud, exp, nonce) are Authlib's. The studio takes the validated claims,
makes or updates the user and applies IT's group-to-role mapping (services/identity.py).

Sign-out ends the studio session and, when the provider has an end_session_endpoint, sends the
browser there (RP-initiated logout) so the provider's session ends too."""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.django_client import OAuth
from django.conf import settings
from django.contrib.auth import login, logout
from django.contrib.auth import views as auth_views
from django.http import Http404, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST
from joserfc.errors import JoseError

from endpoints_app.errors import StudioError

log = logging.getLogger("studio.oidc")
NEXT_KEY = "oidc_next"
SIGNED_IN_KEY = "oidc_identity"  # "issuer subject" of the provider account this session signed in with
BACKEND = "portal.auth.LocalAccountBackend"

_clients: dict[tuple, object] = {}


def enabled() -> bool:
    return bool(settings.STUDIO_OIDC_ISSUER)


def client():
    """Authlib's client for the configured provider (its metadata is fetched once and kept)."""
    key = (settings.STUDIO_OIDC_ISSUER, settings.STUDIO_OIDC_CLIENT_ID, settings.STUDIO_OIDC_CLIENT_SECRET,
           settings.STUDIO_OIDC_SCOPES)
    if key not in _clients:
        oauth = OAuth()
        oauth.register(
            name="studio",
            client_id=settings.STUDIO_OIDC_CLIENT_ID,
            client_secret=settings.STUDIO_OIDC_CLIENT_SECRET or None,
            server_metadata_url=f"{settings.STUDIO_OIDC_ISSUER}/.well-known/openid-configuration",
            client_kwargs={"scope": settings.STUDIO_OIDC_SCOPES, "code_challenge_method": "S256"},
        )
        _clients.clear()
        _clients[key] = oauth.create_client("studio")
    return _clients[key]


def identity_context(request) -> dict:
    return {
        "oidc_enabled": enabled(),
        "oidc_name": settings.STUDIO_OIDC_NAME,
        "oidc_audience": settings.STUDIO_OIDC_AUDIENCE,
        "local_login": settings.STUDIO_LOCAL_LOGIN,
    }


class LoginView(auth_views.LoginView):
    """The sign-in page: the provider's button when configured; the password form while local accounts are on."""

    template_name = "login.html"

    def post(self, request, *args, **kwargs):
        if not settings.STUDIO_LOCAL_LOGIN:
            return render(request, "login.html", {"sso_error": "Local accounts are turned off: sign in with "
                                                  f"{settings.STUDIO_OIDC_NAME}."}, status=403)
        return super().post(request, *args, **kwargs)


def start(request):
    """Send the browser to the provider's sign-in page."""
    if not enabled():
        raise Http404("Single sign-on is not configured.")
    wanted = request.GET.get("next", "")
    if wanted and url_has_allowed_host_and_scheme(wanted, {request.get_host()}, request.is_secure()):
        request.session[NEXT_KEY] = wanted
    redirect_uri = request.build_absolute_uri(reverse("oidc-callback"))
    try:
        return client().authorize_redirect(request, redirect_uri)
    except Exception as exc:  # the provider's metadata could not be read
        log.warning("OpenID sign-in could not start: %s", type(exc).__name__)
        return render(request, "login.html", {"sso_error": f"{settings.STUDIO_OIDC_NAME} is unreachable right "
                                              "now; try again shortly."}, status=503)


def callback(request):
    """The provider sends the browser back here with a code: Authlib exchanges it and validates the ID
    token; the studio signs the user in with the mapped roles."""
    from endpoints_app.services.identity import do_sign_in_oidc_user

    if not enabled():
        raise Http404("Single sign-on is not configured.")
    if "error" in request.GET:
        return render(request, "login.html", {"sso_error": f"{settings.STUDIO_OIDC_NAME} refused the sign-in: "
                                              f"{request.GET.get('error')}."}, status=400)
    try:
        token = client().authorize_access_token(request)
    except (OAuthError, JoseError, ValueError, KeyError) as exc:
        # The reason only (a mismatched state, an invalid ID token): never the token or the code.
        log.warning("OpenID sign-in failed: %s", type(exc).__name__)
        return render(request, "login.html", {"sso_error": "The sign-in could not be completed "
                                              f"({type(exc).__name__}); start again."}, status=400)
    claims = token.get("userinfo") or {}
    if not claims.get("sub"):
        return render(request, "login.html", {"sso_error": "The provider sent no ID token; start again."},
                      status=400)
    try:
        user = do_sign_in_oidc_user(settings.STUDIO_OIDC_ISSUER, dict(claims))
    except StudioError as exc:
        return render(request, "login.html", {"sso_error": exc.message}, status=403)
    after = request.session.pop(NEXT_KEY, "") or settings.LOGIN_REDIRECT_URL
    login(request, user, backend=BACKEND)
    request.session[SIGNED_IN_KEY] = f"{settings.STUDIO_OIDC_ISSUER} {claims['sub']}"
    return HttpResponseRedirect(after)


@require_POST
def sign_out(request):
    """End the studio session; for a provider sign-in, end the provider's session too where it can."""
    from_provider = bool(request.session.get(SIGNED_IN_KEY))
    logout(request)
    back = request.build_absolute_uri(settings.LOGOUT_REDIRECT_URL)
    if from_provider and enabled():
        try:
            end_session = client().load_server_metadata().get("end_session_endpoint")
        except Exception:  # the provider is unreachable: the studio session has ended anyway
            end_session = None
        if end_session:
            query = urlencode({"client_id": settings.STUDIO_OIDC_CLIENT_ID, "post_logout_redirect_uri": back})
            return HttpResponseRedirect(f"{end_session}?{query}")
    return HttpResponseRedirect(back)
