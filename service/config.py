"""Typed settings, read from TOKEN_BROKER_* environment variables and checked at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.names import Key, is_valid_fleet_id, parse_key

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value: object) -> object:
    # Operators write FOO=a,b in unit files and manifests; JSON lists there are a trap.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TOKEN_BROKER_", extra="forbid", frozen=True, validate_default=True
    )

    refresh_ahead_seconds: float = Field(300.0, gt=0)
    min_validity_seconds: float = Field(30.0, ge=0)
    refresh_spread: float = Field(0.8, ge=0, le=1)
    cache_max_entries: int = Field(10_000, ge=1)
    failure_backoff_max_seconds: float = Field(5.0, gt=0, le=300)
    upstream_rate: float = Field(5.0, gt=0)
    upstream_burst: int = Field(10, ge=1)

    upstream_deadline_seconds: float = Field(10.0, gt=0, le=300)
    upstream_connect_timeout_seconds: float = Field(2.0, gt=0)
    upstream_read_timeout_seconds: float = Field(5.0, gt=0)
    # One attempt per fetch: the cache owns retrying (per-key and host-wide back-off, the
    # prefetcher). botocore's retries inside a fetch tripled the calls a fleet restart sends a
    # throttled account (bench/fleet.py: 34 attempts on the busiest of 1,000 hosts, 13 with 1).
    upstream_max_attempts: int = Field(1, ge=1, le=10)

    require_request_header: bool = True
    allowed_hosts: CommaList = []
    auth_token_file: Path | None = None  # read (and checked) at start-up by the guard
    allowed_fleets: CommaList = []
    max_inflight: int = Field(256, ge=1)

    shutdown_grace_seconds: float = Field(10.0, ge=0)
    access_log: bool = False
    log_level: str = "info"

    prefetch: CommaList = []
    prefetch_jitter_seconds: float = Field(0.5, ge=0, le=60)

    _split = field_validator("allowed_hosts", "allowed_fleets", "prefetch", mode="before")(
        _split_commas
    )

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts_are_names(cls, value: list[str]) -> list[str]:
        for host in value:
            # The port is stripped from the request's Host before comparing, so an entry with
            # one could never match.
            name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
            if not name or (":" in name and not host.startswith("[")) or "/" in name:
                raise ValueError(f"expected a host name without port or scheme, got {host!r}")
        return value

    @field_validator("allowed_fleets")
    @classmethod
    def _fleets_are_fleet_ids(cls, value: list[str]) -> list[str]:
        bad = [fleet for fleet in value if not is_valid_fleet_id(fleet)]
        if bad:
            raise ValueError(f"not a fleet id: {bad[0]!r}")
        return value

    @field_validator("prefetch")
    @classmethod
    def _prefetch_keys_are_valid(cls, value: list[str]) -> list[str]:
        for item in value:
            if parse_key(item) is None:
                raise ValueError(f"expected fleet_id/compute_name, got {item!r}")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"critical", "error", "warning", "info", "debug"}:
            raise ValueError("must be one of critical, error, warning, info, debug")
        return value

    @model_validator(mode="after")
    def _windows_fit_inside_deadline(self) -> Settings:
        if self.min_validity_seconds >= self.refresh_ahead_seconds:
            # Otherwise a token would stop being served before its refresh window opens.
            raise ValueError(
                "TOKEN_BROKER_MIN_VALIDITY_SECONDS must be less than "
                "TOKEN_BROKER_REFRESH_AHEAD_SECONDS"
            )
        return self

    @property
    def prefetch_keys(self) -> list[Key]:
        return [key for item in self.prefetch if (key := parse_key(item)) is not None]


def describe_error(error: ValidationError) -> str:
    """One line naming the first bad setting by its environment variable."""
    first = error.errors()[0]
    loc = first.get("loc") or ()
    message = first.get("msg", "invalid value").removeprefix("Value error, ")
    if not loc:
        return f"invalid settings: {message}"
    name = "TOKEN_BROKER_" + str(loc[0]).upper()
    return f"invalid setting {name}: {message}"
