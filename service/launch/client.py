"""Ask a running broker for one compute's server parameters, retrying while it is unavailable.

A small HTTP/1.1 client on http.client, over TCP or a unix socket. Transient failures (503,
and a broker that is not listening yet) are retried until a deadline, honouring Retry-After;
every other answer is final. Exceptions carry messages fit for a log: never a token.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
from collections.abc import Callable
from urllib.parse import quote, urlsplit

DEFAULT_URL = "http://127.0.0.1:8787"
GUARD_HEADER = "X-Token-Broker-Request"
# One request never waits longer than this, however long the overall deadline.
REQUEST_TIMEOUT = 10.0
# Back-off between tries when the broker gives no Retry-After: jittered, doubling, capped.
FIRST_DELAY = 0.1
MAX_DELAY = 2.0
# How much of an error body is read and how much of its message is repeated.
MAX_BODY = 64 * 1024
MAX_MESSAGE = 200


class LaunchError(Exception):
    """Why the server parameters could not be had; its message names no secret."""


class Refused(LaunchError):
    """The broker answered with a final refusal (400, 401, 403, 404, 502, ...)."""


class Unavailable(LaunchError):
    """The broker stayed unavailable (down, or 503) until the deadline."""


class BadAnswer(LaunchError):
    """The broker answered 200 with something that is not the five values."""


class Response:
    """One answer: its status, its Retry-After in seconds (if it had one) and its body.

    A plain class, not a dataclass or NamedTuple: dataclasses imports inspect, and NamedTuple
    typing, a cost every game server start would pay for nothing.
    """

    __slots__ = ("body", "retry_after", "status")

    def __init__(self, status: int, retry_after: float | None, body: bytes) -> None:
        self.status = status
        self.retry_after = retry_after
        self.body = body


class _UnixConnection(http.client.HTTPConnection):
    """HTTP over a unix socket. Host stays `localhost`, a name the broker's Host check takes."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class Broker:
    """Where the broker listens, and the caller secret to send it (read from its file at every
    request, so a secret rotated while we wait is picked up)."""

    def __init__(
        self, url: str | None = None, uds: str | None = None, secret_file: str | None = None
    ) -> None:
        self._uds = uds
        parts = urlsplit(url or DEFAULT_URL)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be http://HOST:PORT, got {url!r}")
        self._scheme = parts.scheme
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._secret_file = secret_file
        self.where = uds if uds is not None else f"{parts.scheme}://{parts.netloc}"

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._uds is not None:
            return _UnixConnection(self._uds, timeout)
        if self._scheme == "https":
            return http.client.HTTPSConnection(self._netloc, timeout=timeout)
        return http.client.HTTPConnection(self._netloc, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        headers = {GUARD_HEADER: "true", "Accept": "application/json"}
        if self._secret_file is not None:
            headers["Authorization"] = f"Bearer {read_secret(self._secret_file)}"
        return headers

    def get(self, path: str, timeout: float) -> Response:
        """One request. OSError means the broker could not be reached (or hung up)."""
        headers = self._headers()
        connection = self._connection(timeout)
        try:
            connection.request("GET", self._prefix + path, headers=headers)
            answer = connection.getresponse()
            body = answer.read(MAX_BODY + 1)
            return Response(answer.status, _retry_after(answer.getheader("Retry-After")), body)
        except http.client.HTTPException as exc:  # a garbled status line or headers
            raise OSError(f"broken HTTP answer ({type(exc).__name__})") from exc
        finally:
            connection.close()


def read_secret(path: str) -> str:
    """The caller secret as the broker compares it: the file's content, whitespace stripped."""
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.read().strip()
    except (OSError, UnicodeError) as exc:
        raise LaunchError(f"cannot read --auth-token-file {path}: {_reason(exc)}") from exc
    if not secret:
        raise LaunchError(f"--auth-token-file {path} is empty")
    if any(not char.isprintable() for char in secret):
        raise LaunchError(f"--auth-token-file {path} holds more than one line")
    return secret


def server_parameters_path(fleet_id: str, compute_name: str) -> str:
    # The compute name's one slash is sent plain; the broker takes that or %2F.
    return f"/fleets/{quote(fleet_id)}/computes/{quote(compute_name, safe='/')}/server-parameters"


def fetch(
    broker: Broker,
    path: str,
    *,
    timeout: float,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    jitter: Callable[[float, float], float] = random.uniform,
) -> dict[str, object]:
    """The JSON object at `path`, once the broker gives it; retries until `timeout` seconds."""
    deadline = clock() + timeout
    delay = FIRST_DELAY
    while True:
        remaining = deadline - clock()
        try:
            response = broker.get(path, timeout=max(0.1, min(REQUEST_TIMEOUT, remaining)))
        except OSError as exc:  # not listening yet, reset while starting, or too slow
            why = f"cannot reach the broker at {broker.where}: {_reason(exc)}"
            wait = jitter(delay / 2, delay)
        else:
            if response.status == 200:
                return _json_object(response.body)
            if response.status != 503:
                raise Refused(f"the broker refused: {_describe(response)}")
            why = f"the broker is unavailable: {_describe(response)}"
            wait = (
                response.retry_after
                if response.retry_after is not None
                else jitter(delay / 2, delay)
            )
        remaining = deadline - clock()
        if wait > remaining:
            raise Unavailable(f"{why}; gave up after {timeout:g} s (--timeout)")
        sleep(wait)
        delay = min(MAX_DELAY, delay * 2)


def _json_object(body: bytes) -> dict[str, object]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeError):
        raise BadAnswer("the broker's answer is not JSON") from None
    if not isinstance(value, dict):
        raise BadAnswer("the broker's answer is not a JSON object")
    return value


def _describe(response: Response) -> str:
    """`503 InternalServiceException: message`, from the broker's JSON error body if any."""
    code = message = ""
    try:
        error = json.loads(response.body[:MAX_BODY]).get("error", {})
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, UnicodeError, AttributeError):
        pass  # not the broker's error shape: the status says enough
    text = " ".join(part for part in (f"{response.status}", code) if part)
    if message:
        text += ": " + message
    # One line of printable text, bounded, whatever the peer sent.
    cleaned = "".join(char if char.isprintable() else " " for char in text)
    return cleaned[:MAX_MESSAGE]


def _retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the broker sends whole seconds; an HTTP date is not used)."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    if seconds is None or not 0 <= seconds < float("inf"):
        return None
    return seconds


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
