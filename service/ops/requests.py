"""What each token request leaves behind: its outcome counted, and a log line when one is due."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from service.errors import BrokerError
from service.ops.log_budget import LogBudget
from service.ops.metrics import Metrics

log = logging.getLogger("service.requests")

# Path values come from the caller; a log line is no place for 1 KiB of their choosing.
_FIELD_MAX = 128


class RequestRecorder:
    def __init__(self, metrics: Metrics, *, access_log: bool) -> None:
        # Public for the hit path, which counts a hit inline when no line is due.
        self.counts = metrics.requests
        # Off by default: hits are counted in metrics, and a line per hit would tax the hot path.
        self.logs_every_request = access_log
        self._refusal_lines = LogBudget(log)

    def served(
        self,
        fleet_id: str,
        compute_name: str,
        outcome: str,
        started: float,
        scope: Mapping[str, Any] | None = None,
    ) -> None:
        # The ASGI scope is passed as it is and read only for a line: with the access log off,
        # naming the client costs nothing.
        self.counts[outcome] += 1
        if self.logs_every_request:
            fields = _fields(fleet_id, compute_name, 200, outcome, started)
            fields["client"] = client(scope)
            log.info("token served", extra=fields)

    def refused(
        self,
        fleet_id: str,
        compute_name: str,
        error: BrokerError,
        started: float,
        *,
        count: bool = True,
        scope: Mapping[str, Any] | None = None,
    ) -> None:
        """Every refusal and error is counted, and logged within a budget per code, whatever
        TOKEN_BROKER_ACCESS_LOG says.

        `count` is False for refusals that were not token requests (an oversized probe).
        """
        if count:
            self.counts["error"] += 1
        if not self._refusal_lines.allow(error.code):
            return
        fields = _fields(fleet_id, compute_name, error.status, "error", started)
        fields["code"] = error.code
        fields["client"] = client(scope)
        level = logging.WARNING if error.status >= 500 else logging.INFO
        log.log(level, "token request refused", extra=fields)


def client(scope: Mapping[str, Any] | None) -> str:
    """The caller's address as host:port, or "unix" for the unix socket (ASGI has no client
    there)."""
    if scope is None:
        return "unknown"
    address = scope.get("client")
    if not address:
        return "unix"
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _fields(
    fleet_id: str, compute_name: str, status: int, outcome: str, started: float
) -> dict[str, object]:
    return {
        "event": "request",
        "fleet": fleet_id[:_FIELD_MAX],
        "compute": compute_name[:_FIELD_MAX],
        "status": status,
        "outcome": outcome,
        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
    }
