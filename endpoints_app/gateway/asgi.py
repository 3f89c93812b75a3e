"""The gateway as its own process, for production (web and gateway scaled apart):

    gunicorn endpoints_app.gateway.asgi:application -k portal.workers.StudioUvicornWorker --keep-alive 5 \
        -w 2 -b 0.0.0.0:8001

Only the data plane routes (/inference/, /models/) are served here (the gateway checks
Content-Length and counts streamed bytes against STUDIO_GATEWAY_MAX_PAYLOAD_BYTES as it
reads, answering 413 before it buffers more); Django is set up
for the ORM, which the gateway uses off the hot path only."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from endpoints_app.gateway.app import GatewayApp  # noqa: E402

application = GatewayApp()
