"""The web process's ASGI entry point: /inference/, /models/ and /openai/ go to the
gateway (a plain ASGI app, off Django's request machinery), the rest to Django."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

django_app = get_asgi_application()

from endpoints_app.gateway.app import GatewayApp  # noqa: E402

gateway_app = GatewayApp()
GATEWAY_PREFIXES = ("/inference/", "/models/", "/openai/")


async def application(scope, receive, send):
    if scope["type"] == "lifespan":
        await gateway_app(scope, receive, send)
        return
    if scope["type"] == "http" and scope["path"].startswith(GATEWAY_PREFIXES):
        await gateway_app(scope, receive, send)
        return
    await django_app(scope, receive, send)
