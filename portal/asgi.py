"""The web process's ASGI entry point: /inference/, /models/ and /openai/ go to the
gateway (a plain ASGI app, off Django's request machinery), the rest to Django.

Django sits behind BodyLimit: a body over the limit (uploads: STUDIO_MAX_UPLOAD_MB; any
other request: DATA_UPLOAD_MAX_MEMORY_SIZE) is a 413 before Django spools any of it to
disk. The gateway checks its own limit (STUDIO_GATEWAY_MAX_PAYLOAD_BYTES) as it reads."""

import os
import re

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from django.conf import settings  # noqa: E402

from endpoints_app.asgi_io import BodyLimit  # noqa: E402
from endpoints_app.gateway.app import GatewayApp  # noqa: E402

gateway_app = GatewayApp()
GATEWAY_PREFIXES = ("/inference/", "/models/", "/openai/")
# Where users upload model files and data (multipart): their own, larger limit.
UPLOAD_PATHS = re.compile(r"^/(api/v1/workspaces/[^/]+/(models|data)/?|catalog/register/)$")
# Room for the multipart framing and form fields around a file of the largest allowed size.
UPLOAD_OVERHEAD_BYTES = 1024 * 1024


def body_limit(path: str) -> int:
    if UPLOAD_PATHS.match(path):
        return int(settings.STUDIO_MAX_UPLOAD_BYTES) + UPLOAD_OVERHEAD_BYTES
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


django_app = BodyLimit(django_app, body_limit)


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await gateway_app(scope, receive, send)
        return
    if scope["type"] == "http" and scope["path"].startswith(GATEWAY_PREFIXES):
        await gateway_app(scope, receive, send)
        return
    await django_app(scope, receive, send)
