"""The uvicorn worker gunicorn runs for the web (and a separate gateway) process.

Beyond uvicorn_worker.UvicornWorker: uvloop and httptools (DESIGN.md's hot-path measurements), and
a cap on concurrent connections and tasks per worker (STUDIO_MAX_CONNECTIONS, default 1000): past
it, new requests get a 503 at once instead of piling up idle connections until memory runs out.
Idle keep-alive connections close after gunicorn's --keep-alive seconds; a request body that
stalls is cut off by portal.asgi's BodyLimit (408)."""

import os

from uvicorn_worker import UvicornWorker


def _max_connections() -> int:
    raw = os.environ.get("STUDIO_MAX_CONNECTIONS", "1000")
    if not raw.isdigit() or int(raw) < 1:
        raise SystemExit(f"STUDIO_MAX_CONNECTIONS must be a whole number of at least 1, not {raw!r}")
    return int(raw)


class StudioUvicornWorker(UvicornWorker):
    CONFIG_KWARGS = {"loop": "uvloop", "http": "httptools", "limit_concurrency": _max_connections()}
