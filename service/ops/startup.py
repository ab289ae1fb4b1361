"""The start-up report: one line that says what runs, against what, with which credentials."""

from __future__ import annotations

import logging
import os
import platform
from collections.abc import Mapping

from service.ops.readiness import Readiness

log = logging.getLogger("service.startup")

NO_CREDENTIALS = "no AWS credentials"


def report(
    *,
    version: str,
    region: str,
    endpoint: str,
    endpoint_source: str,
    credentials: str | None,
    listeners: list[str],
    ops_listener: str | None,
    cache: Mapping[str, object],
    prefetch: int,
    readiness: Readiness,
) -> None:
    """Log the start-up line once; with no credentials, say so loudly and stay unready.

    `credentials` is botocore's name for the provider that answered, never a key: this line
    goes wherever the logs go.
    """
    log.info(
        "starting",
        extra={
            "event": "start",
            "version": version,
            "python": platform.python_version(),
            "pid": os.getpid(),
            "region": region,
            "endpoint": endpoint,
            "endpoint_source": endpoint_source,
            "credentials": credentials or "none",
            "listeners": listeners,
            "ops_listener": ops_listener,
            "cache": dict(cache),
            "prefetch": prefetch,
        },
    )
    if credentials is None:
        # Without this the broker would look healthy and fail only at the first token request;
        # nothing will find credentials later, since the client has already looked.
        log.warning(
            "no AWS credentials found: every token request will fail with 503 and /readyz stays "
            "503 until the broker is restarted with credentials (environment, shared config, "
            "credential_process, IRSA or Pod Identity, instance profile)",
            extra={"event": "no_credentials"},
        )
        readiness.require(lambda: NO_CREDENTIALS)
