"""The gateway as its own process, for production (web and gateway scaled apart):

    gunicorn endpoints_app.gateway.asgi:application -k portal.workers.StudioUvicornWorker --keep-alive 5 \\
        -w 2 -b 0.0.0.0:8001

Only the data plane routes (/inference/, /models/, /openai/) are served here (the gateway checks
Content-Length and counts streamed bytes against STUDIO_GATEWAY_MAX_PAYLOAD_BYTES as it
reads, answering 413 before it buffers more); Django is set up for the ORM, which the gateway
uses off the hot path only, and answers the one control-plane path a client reaches through
the gateway's URL, a batch endpoint's scoring_uri (`POST /inference/<e>/jobs`, portal/dispatch.py)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402

control_plane = get_asgi_application()

from endpoints_app.asgi_io import BodyLimit  # noqa: E402
from endpoints_app.gateway.app import GatewayApp  # noqa: E402
from portal.dispatch import dispatcher, is_job_invocation  # noqa: E402

jobs = BodyLimit(control_plane, lambda path: settings.STUDIO_GATEWAY_MAX_PAYLOAD_BYTES,
                 describe=lambda path, limit: f"Request bodies are limited to {limit} bytes.")
application = dispatcher(GatewayApp(), jobs, django_paths=is_job_invocation)
