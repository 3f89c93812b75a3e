"""Exceptions of the client. Every API failure carries the API's error code, message and field."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs start-up time; the annotations are strings anyway
if TYPE_CHECKING:
    from typing import Any



class StudioError(Exception):
    """Base class of everything the client raises."""


class ConfigurationError(StudioError):
    """No URL or token, or an unreadable config file."""


class StudioConnectionError(StudioError):
    """The studio could not be reached (after the retries an idempotent call gets)."""


class ApiError(StudioError):
    """The API answered with an error: `{"error": {"code", "message", "field"?}}`."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 retry_after: float | None = None, body: Any = None) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.retry_after = retry_after
        self.body = body
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"HTTP {self.status} {self.code}: {self.message}"


class BadRequestError(ApiError):
    """400: bad input; `field` names it."""


class AuthenticationError(ApiError):
    """401: no token, or a token the studio does not know."""


class PermissionDeniedError(ApiError):
    """403: the caller's role does not allow it."""


class NotFoundError(ApiError):
    """404: no such resource, or a workspace the caller is not a member of."""


class ConflictError(ApiError):
    """409: name taken or a state conflict."""


class PayloadTooLargeError(ApiError):
    """413."""


class ModelInputError(ApiError):
    """422: the model rejected its input."""


class RateLimitedError(ApiError):
    """429 after the retries; `retry_after` holds the server's advice in seconds."""


class ServerError(ApiError):
    """5xx."""


_BY_STATUS: dict[int, type[ApiError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: PayloadTooLargeError,
    422: ModelInputError,
    429: RateLimitedError,
}


def error_class(status: int) -> type[ApiError]:
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, ApiError)


class OperationFailed(StudioError):
    """A long-running operation ended Failed (or a job Failed / Canceled); `resource` is the last state seen."""

    def __init__(self, what: str, resource: dict | None, state: str | None) -> None:
        self.what = what
        self.resource = resource or {}
        self.state = state
        error = self.resource.get("error") or "no error recorded"
        super().__init__(f"{what} is {state}: {error}")


class OperationTimeout(StudioError):
    """A poller's result() ran out of time; the operation goes on in the studio."""

    def __init__(self, what: str, state: str | None, timeout: float) -> None:
        self.what = what
        self.state = state
        super().__init__(f"{what} is still {state} after {timeout:.0f} s; it goes on in the studio")
