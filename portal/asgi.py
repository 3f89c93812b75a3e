"""The web process's ASGI entry point: /inference/, /models/ and /openai/ go to the
gateway (a plain ASGI app, off Django's request machinery), the rest to Django, a batch
endpoint's scoring_uri (`POST /inference/<e>/jobs`) included (portal/dispatch.py).

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
from portal.dispatch import dispatcher, is_job_invocation  # noqa: E402

gateway_app = GatewayApp()
# Where users upload model files and data (multipart), in the API and the UI: their own, larger limit.
UPLOAD_PATHS = re.compile(
    r"^/(api/v1/workspaces/[^/]+/(models|data)/?|catalog/register/|data/upload/|endpoints/[^/]+/batch/invoke/)$"
)
# Room for the multipart framing and form fields around a file of the largest allowed size.
UPLOAD_OVERHEAD_BYTES = 1024 * 1024


def body_limit(path: str) -> int:
    if is_job_invocation(path):  # a job body takes the gateway's limit, as when the gateway answered it
        return int(settings.STUDIO_GATEWAY_MAX_PAYLOAD_BYTES)
    if UPLOAD_PATHS.match(path):
        return int(settings.STUDIO_MAX_UPLOAD_BYTES) + UPLOAD_OVERHEAD_BYTES
    return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)


def describe_limit(path: str, limit: int) -> str:
    if is_job_invocation(path):
        return f"Request bodies are limited to {limit} bytes."
    if UPLOAD_PATHS.match(path):
        mb = int(settings.STUDIO_MAX_UPLOAD_BYTES) // (1024 * 1024)
        return f"Uploads are limited to {mb} MB (STUDIO_MAX_UPLOAD_MB); this one is larger."
    return f"Request bodies here are limited to {limit} bytes."


django_app = BodyLimit(django_app, body_limit, describe=describe_limit)
application = dispatcher(gateway_app, django_app)
