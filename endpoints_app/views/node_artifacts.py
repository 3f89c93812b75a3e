"""The internal route Ray nodes fetch a model's files from (runtime/ray_node.py `fetch`).

A node presents a token the controller signed for one file (controller/ray_backend.py
`artifact_token`: the file's path and content hash, signed with SECRET_KEY): no token, a forged one,
or a file whose content changed since it was signed gets 404, and nothing else of the data dir is
reachable. The node checks the content hash again on arrival and caches the file by it."""

from __future__ import annotations

import hashlib

from django.core import signing
from django.http import FileResponse, Http404, HttpRequest
from django.views.decorators.http import require_GET

from endpoints_app.instance_auth import ARTIFACT_SALT


@require_GET
def node_artifact(request: HttpRequest, token: str) -> FileResponse:
    try:
        claim = signing.loads(token, salt=ARTIFACT_SALT)
    except signing.BadSignature:
        raise Http404("unknown artifact") from None
    path, digest = claim.get("p"), claim.get("h")
    sha = hashlib.sha256()
    try:
        fh = open(path, "rb")  # noqa: SIM115 (FileResponse closes it)
    except (OSError, TypeError):
        raise Http404("unknown artifact") from None
    while chunk := fh.read(1 << 20):
        sha.update(chunk)
    if sha.hexdigest() != digest:
        fh.close()
        raise Http404("the artifact changed since it was offered")
    fh.seek(0)
    return FileResponse(fh, content_type="application/octet-stream")
