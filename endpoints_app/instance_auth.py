"""The per-instance secret: model servers answer scoring routes only to a caller that presents it.

Derived from SECRET_KEY and the instance's name and port, so nothing secret is stored: the controller
hands it to the instance in its environment when it starts it (STUDIO_INSTANCE_SECRET for the studio's
server, API_KEY for llama.cpp's), and every gateway worker computes it when it loads its route table
(off the hot path) and sends it as `Authorization: Bearer <secret>`. A process of another sandbox
cannot read it (different uid), nor compute it (no SECRET_KEY)."""

from __future__ import annotations

import base64
import hashlib
import hmac

from django.conf import settings

ENV_NAME = "STUDIO_INSTANCE_SECRET"
# Node rows of a Ray compute have this queue prefix (controller/ray_backend.py). Their instances learn
# their port (the relay's) only once started, so their secret is derived with port 0.
RAY_QUEUE_PREFIX = "ray:"
# Tokens a Ray node presents for one artifact file (controller/ray_backend.py, views/node_artifacts.py).
ARTIFACT_SALT = "studio.node-artifact"


def instance_secret(name: str, port: int) -> str:
    mac = hmac.new(settings.SECRET_KEY.encode(), f"instance-secret:{name}:{int(port)}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def auth_header(name: str, port: int) -> dict[str, str]:
    return {"Authorization": f"Bearer {instance_secret(name, port)}"}


def secret_port(port: int, node_queue: str = "") -> int:
    """The port an instance's secret is derived with: its own, or 0 on a Ray node."""
    return 0 if (node_queue or "").startswith(RAY_QUEUE_PREFIX) else int(port)
