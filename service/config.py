"""Typed settings, read from TOKEN_BROKER_* environment variables and checked at start-up."""

from __future__ import annotations

import difflib
import ipaddress
import resource
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from service.names import Key, is_valid_fleet_id, parse_key

CommaList = Annotated[list[str], NoDecode]

# File descriptors kept back from the connection cap: the listening sockets, the upstream pool
# (up to 100), logs, the event loop's own; and a burst of accepts lands before evicted sockets
# close.
RESERVED_FILES = 128


def file_limit() -> int:
    """The soft RLIMIT_NOFILE of this process: what accept() runs into."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def _split_commas(value: object) -> object:
    # Operators write FOO=a,b in unit files and manifests; JSON lists there are a trap.
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


PREFIX = "TOKEN_BROKER_"


class PrefixedEnvSource(EnvSettingsSource):
    """The environment with every TOKEN_BROKER_* variable in it, known or not.

    pydantic-settings takes from the environment only the variables it knows (a process has
    many), so extra="forbid" never sees a misspelt one there: TOKEN_BROKER_AUTH_TOKEN_FILES
    would start a broker with no caller secret. Passing them on lets extra="forbid" refuse them,
    as pydantic-settings itself does for a .env file with dotenv_filtering="match_prefix".
    """

    def __call__(self) -> dict[str, Any]:
        data = super().__call__()
        prefix = PREFIX.lower()
        for name in self.env_vars:  # lower-cased: settings are case-insensitive
            field = name[len(prefix) :]
            if name.startswith(prefix) and field not in self.settings_cls.model_fields:
                data[field] = self.env_vars[name]
        return data


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="forbid", frozen=True, validate_default=True
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The broker reads no .env file and no secrets directory: the environment only.
        return init_settings, PrefixedEnvSource(settings_cls)

    # GameLift's re-mint point (15 minutes), the widest window that never brings back the same
    # token; a narrower one keeps a fleet that restarted together refreshing together.
    refresh_ahead_seconds: float = Field(900.0, gt=0)
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
    # Token requests from any other TCP peer get 403; unix-socket peers always pass.
    allowed_peers: CommaList = ["127.0.0.0/8", "::1/128"]
    max_inflight: int = Field(256, ge=1)

    # A connection must finish each request head this soon after it begins waiting for one.
    head_timeout_seconds: float = Field(10.0, gt=0, le=300)
    # None: the file limit less what the broker needs besides connections, at most 4096.
    max_connections: int | None = Field(None, ge=16)

    shutdown_grace_seconds: float = Field(10.0, ge=0)
    # After SIGTERM, /readyz is 503 at once but the listeners stay open this long, so load
    # balancers and Services take the broker out before its port closes.
    drain_seconds: float = Field(0.0, ge=0, le=300)
    # /healthz, /readyz and /metrics on a listener of their own (off when unset), so kubelet
    # and Prometheus reach them on the pod IP while token requests stay on loopback.
    ops_port: int | None = Field(None, ge=0, le=65535)
    ops_host: str = "127.0.0.1"
    access_log: bool = False
    log_level: str = "info"

    prefetch: CommaList = []
    prefetch_jitter_seconds: float = Field(0.5, ge=0, le=60)

    _split = field_validator(
        "allowed_hosts", "allowed_fleets", "allowed_peers", "prefetch", mode="before"
    )(_split_commas)

    @field_validator("allowed_peers")
    @classmethod
    def _peers_are_networks(cls, value: list[str]) -> list[str]:
        for peer in value:
            try:
                ipaddress.ip_network(peer, strict=False)
            except ValueError:
                message = f"expected an address or CIDR such as 10.0.0.0/8, got {peer!r}"
                raise ValueError(message) from None
        return value

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

    @field_validator("max_connections")
    @classmethod
    def _connections_fit_file_limit(cls, value: int | None) -> int | None:
        if value is not None and value > file_limit() - RESERVED_FILES:
            # Past the file limit accept() fails, and new callers are reset, not answered.
            raise ValueError(
                f"must be at most the file limit ({file_limit()}) less {RESERVED_FILES}; "
                "raise LimitNOFILE (ulimit -n) or lower it"
            )
        return value

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
    name = PREFIX + str(loc[0]).upper()
    if first.get("type") == "extra_forbidden":
        return f"unknown setting {name}{_closest(str(loc[0]))}"
    return f"invalid setting {name}: {message}"


def _closest(field: str) -> str:
    match = difflib.get_close_matches(field.lower(), Settings.model_fields, n=1, cutoff=0.6)
    return f"; did you mean {PREFIX}{match[0].upper()}?" if match else " (see the README)"
