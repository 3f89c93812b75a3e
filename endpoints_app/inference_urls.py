"""Where the gateway is reached: by clients (the URLs the API and the UI show) and by this server
itself (the UI's Test tab and playground call it). Shared by the API and the views, so that
neither imports the other."""

from django.conf import settings


def inference_base_url(request) -> str:
    """The base URL clients call: STUDIO_GATEWAY_URL when the gateway runs apart, else this site."""
    return settings.STUDIO_GATEWAY_URL or request.build_absolute_uri("/").rstrip("/")


def gateway_base() -> str:
    """Where this server reaches the gateway: STUDIO_GATEWAY_URL when the gateway runs
    apart, else this machine's web port (the embedded default mounts the gateway there)."""
    if settings.STUDIO_GATEWAY_URL:
        return settings.STUDIO_GATEWAY_URL
    host = settings.STUDIO_HOST  # the supervisor's bind address
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{settings.STUDIO_PORT}"
