"""HTTP for the client, on the standard library's http.client (importing `requests` costs more
than the rest of a CLI command; see bench/cli.py): one kept-alive connection per host, JSON
errors turned into exceptions, retries (429 honouring Retry-After for every call; connection
errors for idempotent calls, and for any call whose connection was refused), multipart
uploads, streamed downloads, and DRF's limit/offset pagination followed to the end."""

from __future__ import annotations

import http.client
import json as jsonlib
import os
import socket
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlencode, urlsplit

from studio_client.errors import ApiError, StudioConnectionError, error_class

TYPE_CHECKING = False  # typing costs start-up time; the annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any

USER_AGENT = "studio-client/1.0"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_RETRY_AFTER = 60.0


def seg(value: Any) -> str:
    """One URL path segment (names are DNS labels, but never trust that to build a URL)."""
    return quote(str(value), safe="")


class Response:
    """What the client needs of an HTTP answer (a small subset of requests.Response)."""

    def __init__(self, status: int, reason: str, headers: http.client.HTTPMessage, raw: http.client.HTTPResponse,
                 stream: bool) -> None:
        self.status_code = status
        self.reason = reason
        self.headers = headers  # case-insensitive .get()
        self._raw = raw
        self._content: bytes | None = None if stream else raw.read()

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = self._raw.read()
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return jsonlib.loads(self.content)

    def is_json(self) -> bool:
        return "json" in (self.headers.get("content-type") or "")

    def iter_content(self, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        if self._content is not None:
            yield self._content
            return
        while chunk := self._raw.read(chunk_size):
            yield chunk


def _retry_after(response: Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: rare for this API; fall back to our own backoff


def raise_for_error(response: Response) -> None:
    if response.status_code < 400:
        return
    code, message, field, body = None, None, None, None
    try:
        body = response.json()
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            code, message, field = error.get("code"), error.get("message"), error.get("field")
        elif isinstance(body, dict) and "detail" in body:
            message = str(body["detail"])
    except ValueError:
        body = response.text
    if message is None:
        message = (response.text or response.reason or "").strip()[:500] or f"HTTP {response.status_code}"
    cls = error_class(response.status_code)
    raise cls(response.status_code, code or cls.__name__.removesuffix("Error") or "Error", message, field,
              _retry_after(response), body)


def multipart(data: dict | None, files: list | dict | None) -> tuple[bytes, str]:
    """A multipart/form-data body: `data` fields, then `files` as [(field, (filename, file object))]."""
    import uuid

    boundary = uuid.uuid4().hex
    parts: list[bytes] = []
    for key, value in (data or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
    items = files.items() if isinstance(files, dict) else (files or [])
    for key, (filename, handle) in items:
        handle.seek(0)
        name = os.path.basename(filename).replace('"', "_")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{name}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode())
        parts.append(handle.read())
        parts.append(b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


class _Refused(Exception):
    """The connection was refused: the request never reached the server."""


class Transport:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 60, retries: int = 3,
                 backoff: float = 0.5, sleep: Callable[[float], None] = time.sleep,
                 user_agent: str = USER_AGENT, token_provider: Callable[[], str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        # A service principal's identity tokens (studio_client.identity), fetched again as they expire.
        self.token_provider = token_provider
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        # The audit log tells CLI writes (X-Studio-Client: studio-cli/...) from other API calls.
        self.headers = {"User-Agent": user_agent, "X-Studio-Client": user_agent, "Accept": "application/json"}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        self._connections: dict[tuple[str, str, int], http.client.HTTPConnection] = {}

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def _connection(self, scheme: str, host: str, port: int, timeout: float) -> http.client.HTTPConnection:
        key = (scheme, host, port)
        conn = self._connections.get(key)
        if conn is None:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            conn = self._connections[key] = cls(host, port, timeout=timeout)
        conn.timeout = timeout
        return conn

    def _drop(self, key: tuple[str, str, int]) -> None:
        conn = self._connections.pop(key, None)
        if conn is not None:
            conn.close()

    def _send(self, method: str, url: str, body: bytes | None, headers: dict, stream: bool,
              timeout: float) -> Response:
        parts = urlsplit(url)
        scheme = parts.scheme or "http"
        port = parts.port or (443 if scheme == "https" else 80)
        key = (scheme, parts.hostname or "127.0.0.1", port)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        for reuse in (True, False):
            conn = self._connection(*key, timeout)
            fresh = conn.sock is None
            try:
                conn.request(method, target, body=body, headers=headers)
                raw = conn.getresponse()
            except ConnectionRefusedError:
                self._drop(key)
                raise _Refused() from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop(key)
                if reuse and not fresh:
                    continue  # the server closed a kept-alive connection: resend once on a new one
                raise
            except Exception:
                self._drop(key)
                raise
            response = Response(raw.status, raw.reason, raw.headers, raw, stream)
            if raw.will_close and not stream:
                self._drop(key)
            return response
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, *, params: dict | None = None, json: Any = None,
                data: bytes | str | dict | None = None, files: list | dict | None = None,
                headers: dict | None = None, stream: bool = False, timeout: float | None = None) -> Response:
        method = method.upper()
        url = self.url(path)
        if params:
            query = urlencode({k: v for k, v in params.items() if v is not None})
            if query:
                url += ("&" if "?" in url else "?") + query
        all_headers = dict(self.headers)
        if self.token_provider is not None:
            all_headers["Authorization"] = f"Bearer {self.token_provider()}"
        body: bytes | None = None
        if files is not None:
            body, all_headers["Content-Type"] = multipart(data if isinstance(data, dict) else None, files)
        elif json is not None:
            body, all_headers["Content-Type"] = jsonlib.dumps(json).encode(), "application/json"
        elif isinstance(data, dict):
            body, all_headers["Content-Type"] = urlencode(data).encode(), "application/x-www-form-urlencoded"
        elif data is not None:
            body = data.encode() if isinstance(data, str) else data
            all_headers.setdefault("Content-Type", "application/json")
        all_headers.update(headers or {})
        attempt = 0
        while True:
            try:
                response = self._send(method, url, body, all_headers, stream, timeout or self.timeout)
            except _Refused:
                # Refused: never reached the server, so safe to repeat for any method.
                if attempt < self.retries:
                    self.sleep(self.backoff * 2 ** attempt)
                    attempt += 1
                    continue
                raise StudioConnectionError(f"cannot reach the studio at {self._where(url)}: connection refused") \
                    from None
            except (OSError, http.client.HTTPException) as exc:
                if attempt < self.retries and method in IDEMPOTENT:
                    self.sleep(self.backoff * 2 ** attempt)
                    attempt += 1
                    continue
                what = "did not answer in time" if isinstance(exc, socket.timeout) else f"failed: {exc!r}"
                raise StudioConnectionError(f"the studio at {self._where(url)} {what}") from None
            if response.status_code == 429 and attempt < self.retries:
                # 429 means the request was not processed: safe to repeat for any method.
                wait = _retry_after(response)
                self.sleep(min(MAX_RETRY_AFTER, wait if wait is not None else self.backoff * 2 ** attempt))
                attempt += 1
                continue
            if response.status_code in (502, 503, 504) and method in IDEMPOTENT and attempt < self.retries:
                self.sleep(min(MAX_RETRY_AFTER, _retry_after(response) or self.backoff * 2 ** attempt))
                attempt += 1
                continue
            raise_for_error(response)
            return response

    def _where(self, url: str) -> str:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    def json(self, method: str, path: str, **kwargs) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        if response.is_json():
            return response.json()
        return response.text

    def pages(self, path: str, params: dict | None = None) -> Iterator[Any]:
        """Every item of a list: a plain JSON array, or DRF pages ({count, next, results}) followed to the end."""
        body = self.json("GET", path, params=params)
        while True:
            if isinstance(body, dict) and "results" in body:
                yield from body["results"]
                next_url = body.get("next")
                if not next_url:
                    return
                body = self.json("GET", next_url)
            elif isinstance(body, list):
                yield from body
                return
            else:
                raise ApiError(200, "UnexpectedResponse", f"expected a list from {path}, got {type(body).__name__}")

    def close(self) -> None:
        for key in list(self._connections):
            self._drop(key)
