"""The broker's error types; each one carries the HTTP status and code it is answered with."""

from __future__ import annotations


class BrokerError(Exception):
    """Base of every error a caller may see. Messages never contain a token."""

    status: int = 500
    code: str = "InternalError"
    # Seconds a client should wait before trying again; None means no Retry-After header.
    retry_after: int | None = None

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(self.retry_after)}


# Refused locally: these never reach the upstream.


class BadRequest(BrokerError):
    # 400 rather than FastAPI's 422: clients of metadata-style services expect 400 for a bad path.
    status, code = 400, "InvalidRequestException"


class Unauthenticated(BrokerError):
    status, code = 401, "Unauthenticated"

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(BrokerError):
    status, code = 403, "Forbidden"


class NotFound(BrokerError):
    status, code = 404, "NotFound"


class URITooLong(BrokerError):
    status, code = 414, "URITooLong"


class HeadersTooLarge(BrokerError):
    status, code = 431, "HeadersTooLarge"


class TooManyInflight(BrokerError):
    status, code, retry_after = 503, "TooManyInflightFetches", 1


class ShuttingDown(BrokerError):
    status, code, retry_after = 503, "ShuttingDown", 1


# Upstream outcomes, classified once in upstream.py.


class UpstreamError(BrokerError):
    """Something went wrong between us and GameLift."""


class UpstreamInvalidRequest(UpstreamError):
    status, code = 400, "InvalidRequestException"


class UpstreamUnauthorized(UpstreamError):
    status, code = 403, "UnauthorizedException"


class UpstreamNotFound(UpstreamError):
    status, code = 404, "NotFoundException"


class UpstreamConflict(UpstreamError):
    """RegisterCompute: the compute is registered already, perhaps with other attributes."""

    status, code = 409, "ConflictException"


class UpstreamBadGateway(UpstreamError):
    """UnsupportedRegion, a malformed answer, or any other error we cannot act on."""

    status, code = 502, "BadGateway"


class UpstreamUnavailable(UpstreamError):
    """Transient: InternalService, throttling, connection failures, timeouts. Worth retrying."""

    status, code, retry_after = 503, "ServiceUnavailable", 1


class UpstreamThrottled(UpstreamUnavailable):
    code = "ThrottlingException"


class UpstreamTimeout(UpstreamUnavailable):
    code = "UpstreamTimeout"


class NoSdkEndpoint(UpstreamBadGateway):
    """GameLift knows the compute but gives no websocket URL for it (or it is unusable)."""

    code = "NoSdkEndpoint"


class NoComputeDirectory(BrokerError):
    """The upstream cannot look computes up, and no websocket URL is configured."""

    status, code = 503, "NoComputeDirectory"


class BudgetExhausted(UpstreamUnavailable):
    """This host's share of the account's GameLift calls is spent for now (see Retry-After)."""

    code = "UpstreamBudgetExhausted"
