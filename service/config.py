"""Typed settings, read from TOKEN_BROKER_* environment variables and checked at start-up."""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import re
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

from service.names import (
    DNS_NAME_RE,
    IP_ADDRESS_RE,
    LOCATION_RE,
    REGISTER_COMPUTE_NAME_MAX,
    Key,
    is_valid_fleet_id,
    is_valid_sdk_endpoint,
    parse_key,
)

CommaList = Annotated[list[str], NoDecode]

# File descriptors kept back from the connection cap: the listening sockets, the upstream pool
# (up to 100), logs, the event loop's own; and a burst of accepts lands before evicted sockets
# close.
RESERVED_FILES = 128

# Where the kubelet mounts a pod's own ServiceAccount token and the cluster's CA.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Kubernetes names: a namespace is a DNS label, a ServiceAccount a DNS subdomain.
_DNS_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
NAMESPACE_RE = re.compile(_DNS_LABEL)
SERVICE_ACCOUNT_RE = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*")
# NAMESPACE or NAMESPACE/SERVICEACCOUNT, as a rule of TOKEN_BROKER_KUBERNETES_FLEETS names it.
Selector = tuple[str, str | None]


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
# The package whose Swagger UI files TOKEN_BROKER_DOCS serves (the `docs` extra), and the extra.
DOCS_ASSETS_PACKAGE = "fastapi_offline"
DOCS_EXTRA = "gamelift-token-broker[docs]"


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


class _RegisterSetting:
    """TOKEN_BROKER_REGISTER, declared on a plain base: as a field of Settings itself it would
    shadow ABCMeta.register (pydantic warns, and a subclass would take that method as the
    default). Nothing calls ABCMeta.register on a settings class."""

    # fleet_id/compute_name: the compute this broker registers at start-up (RegisterCompute's
    # attributes are Settings' register_* fields) and deregisters on exit.
    register: str | None = None


class Settings(_RegisterSetting, BaseSettings):
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
    # The cache's memory in bytes, estimated from each entry's lengths; the record of recent
    # keys and the hit path's memos get a quarter of it each. With the longest names the API
    # allows, 40 MiB holds about 4,000 entries, and the worst case stays within a 192 MiB pod
    # limit (docs/reference.md, Bounded memory); 10,000 ordinary keys take a third of it.
    cache_max_bytes: int = Field(40 * 1024 * 1024, ge=1024 * 1024)
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

    # Caller identity for the DaemonSet (service/identity/): with an audience set, a token
    # request must carry a projected ServiceAccount token for it, verified here.
    kubernetes_audience: str | None = None
    kubernetes_issuer: str | None = None
    kubernetes_jwks_file: Path | None = None
    kubernetes_jwks_url: str | None = None
    # What the JWKS URL is fetched with: the broker's own ServiceAccount token and the CA.
    kubernetes_token_file: Path = SERVICE_ACCOUNT_DIR / "token"
    kubernetes_ca_file: Path = SERVICE_ACCOUNT_DIR / "ca.crt"
    kubernetes_jwks_refresh_seconds: float = Field(300.0, ge=1, le=86400)
    # NAMESPACE[/SERVICEACCOUNT]=FLEET|FLEET,...: which fleets each caller's own compute is in.
    kubernetes_fleets: CommaList = []

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
    # Swagger UI at /docs, from installed files under a strict CSP; off, only /openapi.json.
    docs: bool = False
    log_level: str = "info"

    prefetch: CommaList = []
    prefetch_jitter_seconds: float = Field(0.5, ge=0, le=60)

    # The server-parameters answer's WebSocketUrl: this when set, else the registration's, else
    # DescribeCompute's, which is kept this long (it changes only if the fleet moves).
    sdk_websocket_url: str | None = None
    sdk_endpoint_ttl_seconds: float = Field(3600.0, gt=0, le=86_400)
    # TOKEN_BROKER_REGISTER (the compute to register) is a field of _RegisterSetting.
    register_ip_address: str | None = None
    register_dns_name: str | None = None
    register_location: str | None = None
    register_certificate_path: str | None = None
    deregister_on_exit: bool = True

    _split = field_validator(
        "allowed_hosts",
        "allowed_fleets",
        "allowed_peers",
        "prefetch",
        "kubernetes_fleets",
        mode="before",
    )(_split_commas)

    @field_validator("kubernetes_fleets")
    @classmethod
    def _fleet_rules_parse(cls, value: list[str]) -> list[str]:
        seen: set[Selector] = set()
        for item in value:
            selector, _fleets = parse_fleet_rule(item)
            if selector in seen:
                raise ValueError(f"{'/'.join(s for s in selector if s)} is named twice")
            seen.add(selector)
        return value

    @field_validator("kubernetes_jwks_url")
    @classmethod
    def _jwks_url_is_http(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError(f"expected an https:// URL, got {value!r}")
        return value

    @field_validator("kubernetes_audience", "kubernetes_issuer")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value

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

    @field_validator("sdk_websocket_url")
    @classmethod
    def _endpoint_is_websocket_url(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_sdk_endpoint(value):
            # Also what keeps the text answer's quoting safe: no quote, no $, no space.
            raise ValueError(f"expected a ws:// or wss:// URL, got {value!r}")
        return value

    @field_validator("register")
    @classmethod
    def _register_key_is_valid(cls, value: str | None) -> str | None:
        if value is None:
            return None
        key = parse_key(value)
        if key is None:
            raise ValueError(f"expected fleet_id/compute_name, got {value!r}")
        if len(key[1]) > REGISTER_COMPUTE_NAME_MAX:
            raise ValueError(
                f"RegisterCompute takes compute names of {REGISTER_COMPUTE_NAME_MAX} "
                "characters at most"
            )
        return value

    @field_validator("register_ip_address")
    @classmethod
    def _ip_address(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError(f"expected an IPv4 or IPv6 address, got {value!r}") from None
            if IP_ADDRESS_RE.fullmatch(value) is None:  # an IPv6 scope (%eth0) is not taken
                raise ValueError(f"RegisterCompute takes ^[0-9A-Fa-f:.]+$, got {value!r}")
        return value

    @field_validator("register_dns_name")
    @classmethod
    def _dns_name(cls, value: str | None) -> str | None:
        if value is not None and DNS_NAME_RE.fullmatch(value) is None:
            raise ValueError(f"expected ^[0-9a-zA-Z_.-]+$, 256 at most, got {value!r}")
        return value

    @field_validator("register_location")
    @classmethod
    def _location(cls, value: str | None) -> str | None:
        # An Anywhere fleet's locations are custom ones, and CreateLocation names them custom-*.
        if value is not None and (
            LOCATION_RE.fullmatch(value) is None or not value.startswith("custom-")
        ):
            raise ValueError(f"expected a custom location such as custom-home, got {value!r}")
        return value

    @field_validator("register_certificate_path")
    @classmethod
    def _certificate_path(cls, value: str | None) -> str | None:
        if value is not None and not 1 <= len(value) <= 1024:
            raise ValueError("RegisterCompute takes a path of 1 to 1024 characters")
        return value

    @model_validator(mode="after")
    def _registration_is_whole(self) -> Settings:
        attributes = ("ip_address", "dns_name", "location", "certificate_path")
        if self.register is None:
            for name in attributes:
                if getattr(self, f"register_{name}") is not None:
                    raise ValueError(
                        f"TOKEN_BROKER_REGISTER_{name.upper()} needs TOKEN_BROKER_REGISTER "
                        "(fleet_id/compute_name)"
                    )
            return self
        fleet = self.register.partition("/")[0]
        if self.allowed_fleets and fleet not in self.allowed_fleets:
            # It would register a compute whose token it then refuses to hand out.
            raise ValueError(
                f"TOKEN_BROKER_REGISTER's fleet {fleet} is not in TOKEN_BROKER_ALLOWED_FLEETS"
            )
        # RegisterCompute on an Anywhere fleet refuses a compute without either.
        for name in ("ip_address", "location"):
            if getattr(self, f"register_{name}") is None:
                raise ValueError(
                    f"TOKEN_BROKER_REGISTER needs TOKEN_BROKER_REGISTER_{name.upper()} "
                    "(an Anywhere fleet requires it)"
                )
        return self

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

    @field_validator("docs")
    @classmethod
    def _docs_extra_installed(cls, value: bool) -> bool:
        if value and importlib.util.find_spec(DOCS_ASSETS_PACKAGE) is None:
            raise ValueError(f"needs the docs extra: pip install '{DOCS_EXTRA}'")
        return value

    @model_validator(mode="after")
    def _identity_is_whole(self) -> Settings:
        # Half a configuration must not start a broker without the check it meant to turn on.
        kubernetes = [
            name
            for name in (
                "issuer",
                "jwks_file",
                "jwks_url",
                "fleets",
                "token_file",
                "ca_file",
                "jwks_refresh_seconds",
            )
            if f"kubernetes_{name}" in self.model_fields_set
        ]
        if self.kubernetes_audience is None:
            if kubernetes:
                name = f"{PREFIX}KUBERNETES_{kubernetes[0].upper()}"
                raise ValueError(f"{name} needs {PREFIX}KUBERNETES_AUDIENCE")
            return self
        if self.auth_token_file is not None:
            # Both arrive as Authorization: Bearer; one header cannot carry both.
            raise ValueError(
                f"{PREFIX}AUTH_TOKEN_FILE and {PREFIX}KUBERNETES_AUDIENCE exclude each other:"
                " callers prove themselves with one or the other"
            )
        if self.kubernetes_issuer is None:
            raise ValueError(f"{PREFIX}KUBERNETES_AUDIENCE needs {PREFIX}KUBERNETES_ISSUER")
        if (self.kubernetes_jwks_file is None) == (self.kubernetes_jwks_url is None):
            raise ValueError(
                f"{PREFIX}KUBERNETES_AUDIENCE needs exactly one of"
                f" {PREFIX}KUBERNETES_JWKS_FILE or {PREFIX}KUBERNETES_JWKS_URL"
            )
        ceiling = set(self.allowed_fleets)
        for fleets in self.kubernetes_fleet_rules.values():
            outside = sorted(fleets - ceiling) if ceiling else []
            if outside:
                raise ValueError(
                    f"{PREFIX}KUBERNETES_FLEETS names {outside[0]}, which"
                    f" {PREFIX}ALLOWED_FLEETS refuses for everyone"
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

    @property
    def register_key(self) -> Key | None:
        return None if self.register is None else parse_key(self.register)

    @property
    def kubernetes_fleet_rules(self) -> dict[Selector, frozenset[str]]:
        return dict(parse_fleet_rule(item) for item in self.kubernetes_fleets)


def parse_fleet_rule(item: str) -> tuple[Selector, frozenset[str]]:
    """`NAMESPACE[/SERVICEACCOUNT]=FLEET[|FLEET...]`, one rule of TOKEN_BROKER_KUBERNETES_FLEETS."""
    who, sep, fleets = item.partition("=")
    namespace, slash, account = who.strip().partition("/")
    if not sep or not NAMESPACE_RE.fullmatch(namespace):
        raise ValueError(f"expected namespace[/serviceaccount]=fleet-a|fleet-b, got {item!r}")
    if slash and not (len(account) <= 253 and SERVICE_ACCOUNT_RE.fullmatch(account)):
        raise ValueError(f"not a ServiceAccount name: {account!r} in {item!r}")
    names = [fleet.strip() for fleet in fleets.split("|")]
    bad = [fleet for fleet in names if not is_valid_fleet_id(fleet)]
    if bad:
        raise ValueError(f"not a fleet id: {bad[0]!r} in {item!r}")
    return (namespace, account if slash else None), frozenset(names)


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
    return (
        f"; did you mean {PREFIX}{match[0].upper()}?"
        if match
        else " (the settings: docs/operations.md)"
    )
