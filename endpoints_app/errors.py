"""Errors that services raise for a caller's mistake. The API turns them into
{"error": {"code", "message", "field"}} with their status; UI views show the message."""


class StudioError(Exception):
    status = 400
    code = "BadRequest"

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field

    def as_dict(self) -> dict:
        error = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        return {"error": error}


class InvalidInput(StudioError):
    status = 400
    code = "BadRequest"


class Conflict(StudioError):
    status = 409
    code = "Conflict"


class QuotaExceeded(StudioError):
    status = 409
    code = "QuotaExceeded"


class PayloadTooLarge(StudioError):
    status = 413
    code = "PayloadTooLarge"
