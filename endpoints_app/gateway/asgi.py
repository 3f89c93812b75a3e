"""The gateway as its own process, for production (web and gateway scaled apart):

    gunicorn endpoints_app.gateway.asgi:application -k uvicorn_worker.UvicornWorker -w 2 -b 0.0.0.0:8001

Only the data plane routes (/inference/, /models/) are served here; Django is set up
for the ORM, which the gateway uses off the hot path only."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

import django  # noqa: E402

django.setup()

from endpoints_app.gateway.app import GatewayApp  # noqa: E402

application = GatewayApp()
