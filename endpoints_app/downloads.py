"""File downloads for the UI and the API alike. Under ASGI a FileResponse streams a synchronous iterator,
which Django buffers and warns about ("StreamingHttpResponse must consume synchronous iterators"); there
the file is read in a worker thread by an asynchronous iterator instead."""

from __future__ import annotations

import asyncio
from pathlib import Path

from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, StreamingHttpResponse
from django.utils.http import content_disposition_header

CHUNK_BYTES = 256 * 1024


def file_download(request, path: Path, content_type: str) -> StreamingHttpResponse:
    """`path` as an attachment named after it."""
    if not isinstance(getattr(request, "_request", request), ASGIRequest):
        return FileResponse(open(path, "rb"), as_attachment=True, filename=path.name, content_type=content_type)

    async def chunks():
        with open(path, "rb") as fh:
            while chunk := await asyncio.to_thread(fh.read, CHUNK_BYTES):
                yield chunk

    response = StreamingHttpResponse(chunks(), content_type=content_type)
    response["Content-Length"] = str(path.stat().st_size)
    response["Content-Disposition"] = content_disposition_header(True, path.name)
    return response
