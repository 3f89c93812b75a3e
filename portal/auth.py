"""Sign-in throttling (django-axes) wired for the studio: the client address as the studio
sees it, a lockout answer on the sign-in page, and no throttling of authenticate() calls
that are not an HTTP sign-in (management commands, the test client's login())."""

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.shortcuts import render


class LoginThrottleBackend(AxesStandaloneBackend):
    def authenticate(self, request=None, username=None, password=None, **kwargs):
        if request is None:
            return None  # not a sign-in over HTTP: nothing to throttle
        return super().authenticate(request, username=username, password=password, **kwargs)


def client_ip(request) -> str:
    """REMOTE_ADDR, or behind the studio's own reverse proxy the address it appended last
    (a client can forge the left of X-Forwarded-For, never the proxy's own entry)."""
    if settings.STUDIO_BEHIND_PROXY:
        forwarded = [part.strip() for part in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if part.strip()]
        if forwarded:
            return forwarded[-1]
    return request.META.get("REMOTE_ADDR", "")


def lockout_response(request, original_response=None, credentials=None):
    minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
    response = render(
        request,
        "login.html",
        {"locked": f"Too many failed sign-ins. Try again in {minutes} minutes.",
         "username": (credentials or {}).get("username", "")},
        status=429,
    )
    response["Retry-After"] = str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    return response


class LocalAccountBackend(ModelBackend):
    """Username and password, unless STUDIO_LOCAL_LOGIN is off (then only the OpenID provider signs
    people in). Sessions of every user load through it, however they signed in."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if not settings.STUDIO_LOCAL_LOGIN:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)
