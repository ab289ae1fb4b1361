"""The emulator's one error type: an AWS error code, its HTTP status and a message."""

from __future__ import annotations


class ApiError(Exception):
    """A rule refused a call. The control plane renders it as `{"__type", "message"}`; the SDK
    websocket as `StatusCode` and `ErrorMessage`. Messages never hold a token."""

    def __init__(self, code: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def not_found(message: str) -> ApiError:
    return ApiError("NotFoundException", message, 400)


def invalid(message: str) -> ApiError:
    return ApiError("InvalidRequestException", message, 400)


def conflict(message: str) -> ApiError:
    return ApiError("ConflictException", message, 400)


def validation(field: str, constraint: str) -> ApiError:
    # AWS's own wording for a field that breaks the model, so a person sees which field.
    message = "1 validation error detected: "
    message += f"Value at '{field}' failed to satisfy constraint: {constraint}"
    return ApiError("ValidationException", message, 400)
