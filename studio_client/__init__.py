"""studio_client: a Python client of the studio's REST API, with no Django import.

    from studio_client import StudioClient
    client = StudioClient(url="http://127.0.0.1:8000", token="...", workspace="default")
"""

from studio_client.client import StudioClient
from studio_client.errors import (
    ApiError,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    ConflictError,
    ModelInputError,
    NotFoundError,
    OperationFailed,
    OperationTimeout,
    PermissionDeniedError,
    RateLimitedError,
    StudioConnectionError,
    StudioError,
)
from studio_client.poller import Poller

__all__ = [
    "ApiError", "AuthenticationError", "BadRequestError", "ConfigurationError", "ConflictError", "ModelInputError",
    "NotFoundError", "OperationFailed", "OperationTimeout", "PermissionDeniedError", "Poller", "RateLimitedError",
    "StudioClient", "StudioConnectionError", "StudioError",
]
