"""The uvicorn worker gunicorn runs for the web (and a separate gateway) process.

Beyond uvicorn_worker.UvicornWorker: uvloop and httptools (DESIGN.md's hot-path measurements), and
a cap on concurrent connections and tasks per worker (STUDIO_MAX_CONNECTIONS, default 1000): past
it, new requests get a 503 at once instead of piling up idle connections until memory runs out.
Idle keep-alive connections close after gunicorn's --keep-alive seconds; a request body that
stalls is cut off by portal.asgi's BodyLimit (408)."""

from uvicorn_worker import UvicornWorker

from portal.env import ImproperEnv, env_bool, env_int


def _max_connections() -> int:
    """STUDIO_MAX_CONNECTIONS through portal.env's typed helper (this module loads before Django's
    settings, so portal/settings.py cannot hand it over)."""
    try:
        return env_int("STUDIO_MAX_CONNECTIONS", 1000, minimum=1)
    except ImproperEnv as exc:
        raise SystemExit(str(exc)) from None


def _behind_proxy() -> bool:
    """STUDIO_BEHIND_PROXY, as portal/settings.py reads it (this module loads before Django's settings).

    Off (the default), uvicorn ignores X-Forwarded-For and X-Forwarded-Proto from every caller: by
    default it trusts them from 127.0.0.1, so any process on the host could pick the address sign-in
    throttling counts (a new one per attempt: no lockout ever). On, it trusts them from the proxy's
    addresses (gunicorn's --forwarded-allow-ips / FORWARDED_ALLOW_IPS, by default this host's loopback)
    and takes the client address the proxy appended."""
    return env_bool("STUDIO_BEHIND_PROXY", False)


class StudioUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "limit_concurrency": _max_connections(),
                     "proxy_headers": _behind_proxy()}
