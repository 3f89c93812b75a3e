"""HTTP for the client: one pooled session, JSON errors turned into exceptions, retries
(429 honouring Retry-After for every call; connection errors for idempotent calls only),
and DRF's limit/offset pagination followed to the end."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import requests

from studio_client.errors import ApiError, StudioConnectionError, error_class

USER_AGENT = "studio-client/1.0"
IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
MAX_RETRY_AFTER = 60.0


def seg(value: Any) -> str:
    """One URL path segment (names are DNS labels, but never trust that to build a URL)."""
    return quote(str(value), safe="")


def _retry_after(response: requests.Response) -> float | None:
    raw = response.headers.get("Retry-After")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # an HTTP date: rare for this API; fall back to our own backoff


def raise_for_error(response: requests.Response) -> None:
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


class Transport:
    def __init__(self, base_url: str, token: str | None, *, timeout: float = 60, retries: int = 3,
                 backoff: float = 0.5, session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep, user_agent: str = USER_AGENT) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sleep = sleep
        self.session = session or requests.Session()
        # The audit log tells CLI writes (X-Studio-Client: studio-cli/...) from other API calls.
        self.session.headers.update({"User-Agent": user_agent, "X-Studio-Client": user_agent})
        if token:
            self.session.headers["Authorization"] = f"Token {token}"

    def url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base_url + path

    def request(self, method: str, path: str, *, stream: bool = False, **kwargs) -> requests.Response:
        method = method.upper()
        attempt = 0
        while True:
            # A file upload is consumed by the first attempt: rewind it before another.
            for _, item in (kwargs.get("files") or {}).items() if isinstance(kwargs.get("files"), dict) else []:
                handle = item[1] if isinstance(item, tuple) else item
                if hasattr(handle, "seek"):
                    handle.seek(0)
            try:
                response = self.session.request(method, self.url(path), timeout=self.timeout, stream=stream,
                                                **kwargs)
            except requests.ConnectionError as exc:
                # A refused connection never reached the server; anything else may have.
                refused = isinstance(exc, requests.ConnectTimeout) or "refused" in str(exc).lower()
                if attempt < self.retries and (method in IDEMPOTENT or refused):
                    self.sleep(self.backoff * 2 ** attempt)
                    attempt += 1
                    continue
                raise StudioConnectionError(f"cannot reach the studio at {self.base_url}: {exc}") from None
            except requests.Timeout as exc:
                if attempt < self.retries and method in IDEMPOTENT:
                    self.sleep(self.backoff * 2 ** attempt)
                    attempt += 1
                    continue
                raise StudioConnectionError(f"the studio at {self.base_url} did not answer in time: {exc}") from None
            if response.status_code == 429 and attempt < self.retries:
                # 429 means the request was not processed: safe to repeat for any method.
                wait = _retry_after(response)
                self.sleep(min(MAX_RETRY_AFTER, wait if wait is not None else self.backoff * 2 ** attempt))
                attempt += 1
                continue
            if response.status_code in (502, 503, 504) and method in IDEMPOTENT and attempt < self.retries:
                self.sleep(_retry_after(response) or self.backoff * 2 ** attempt)
                attempt += 1
                continue
            raise_for_error(response)
            return response

    def json(self, method: str, path: str, **kwargs) -> Any:
        response = self.request(method, path, **kwargs)
        if response.status_code == 204 or not response.content:
            return None
        if "json" in response.headers.get("content-type", ""):
            return response.json()
        return response.text

    def pages(self, path: str, params: dict | None = None) -> Iterator[Any]:
        """Every item of a list: a plain JSON array, or DRF pages ({count, next, results}) followed to the end."""
        body = self.json("GET", path, params={k: v for k, v in (params or {}).items() if v is not None})
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
