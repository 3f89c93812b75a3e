"""Which app answers a request: the gateway (the data plane, a plain ASGI app off Django's request
machinery) takes /inference/, /models/ and /openai/; Django takes the rest, and also the one
control-plane write under /inference/: a batch endpoint's scoring_uri, `POST /inference/<e>/jobs`
(endpoints_app/api/job_invocation.py). Both entry points use it: portal/asgi.py (the web process,
which also serves the gateway in the embedded default) and endpoints_app/gateway/asgi.py (the
gateway's own process, which hands Django that one path and nothing else)."""

from __future__ import annotations

import re

GATEWAY_PREFIXES = ("/inference/", "/models/", "/openai/")
JOB_INVOCATION = re.compile(r"^/inference/[^/]+/jobs$")


def is_job_invocation(path: str) -> bool:
    return path.endswith("/jobs") and JOB_INVOCATION.match(path) is not None


def to_gateway(path: str) -> bool:
    return (path.startswith(GATEWAY_PREFIXES) or path == "/models") and not is_job_invocation(path)


def dispatcher(gateway, django_app, *, django_paths=None):
    """One ASGI app: lifespan and data-plane paths to `gateway`, the rest to `django_app`. With
    `django_paths` (a predicate), only the paths it accepts reach Django and the rest the gateway."""

    async def application(scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await gateway(scope, receive, send)
            return
        if scope["type"] == "http":
            path = scope["path"]
            wanted = to_gateway(path) if django_paths is None else not django_paths(path)
            if not wanted:
                await django_app(scope, receive, send)
                return
        await gateway(scope, receive, send)

    return application
