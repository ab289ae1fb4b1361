"""Who may ask for a token: the checks every token request passes, on every path that serves one.

They work on the raw ASGI scope so that the FastAPI route and the hit path share them exactly.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from service import errors
from service.config import Settings
from service.names import Key

if TYPE_CHECKING:
    from service.identity.jwks import JwksUrl, KeySource
    from service.identity.rules import FleetRules
    from service.identity.verify import TokenVerifier

log = logging.getLogger("service.guard")

# The names a local caller uses. Anything else in Host smells of DNS rebinding.
LOOPBACK_HOSTS = frozenset({b"localhost", b"127.0.0.1", b"[::1]"})
GUARD_HEADER = b"x-token-broker-request"
# Via too: a forward proxy that adds only Via would otherwise relay a remote caller unnoticed.
PROXY_HEADERS = frozenset({b"x-forwarded-for", b"forwarded", b"via"})
# Peer addresses remembered as allowed, for the hit path; emptied when full.
MAX_KNOWN_PEERS = 1024


class SecretFile:
    """The caller secret, re-read whenever the file changes, so it rotates without a restart."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stamp: tuple[int, int, int] | None = None
        self._secret = b""
        try:
            self.current()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
        if not self._secret:
            raise ValueError(f"{path} is empty")

    def current(self) -> bytes:
        try:
            info = os.stat(self._path)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp != self._stamp:
                secret = self._path.read_bytes().strip()
                self._stamp = stamp
                if secret:  # a half-written file is not a new secret
                    self._secret = secret
                    log.info("caller secret loaded", extra={"event": "secret_loaded"})
        except OSError as exc:
            if not self._secret:
                raise
            # Rotation by rename leaves a moment with no file, and a file can be briefly
            # unreadable; the last secret stays in force meanwhile (it fails closed to it).
            if self._stamp is not None:
                log.warning(
                    "caller secret file unreadable; keeping the last secret",
                    extra={"event": "secret_unreadable", "error": type(exc).__name__},
                )
                self._stamp = None  # warn once per episode, and reread when it is back
        return self._secret


class CallerIdentity:
    """TOKEN_BROKER_KUBERNETES_*: the token verified, then the rules applied.

    Built only when an audience is set, so a broker without it never imports PyJWT or httpx
    (the `kubernetes` extra).
    """

    def __init__(
        self, settings: Settings, wall: Callable[[], float], monotonic: Callable[[], float]
    ) -> None:
        from service.identity.jwks import JwksFile, JwksUrl
        from service.identity.rules import FleetRules
        from service.identity.verify import TokenVerifier

        assert settings.kubernetes_audience and settings.kubernetes_issuer  # the settings check
        self.url: JwksUrl | None = None
        self.keys: KeySource
        if settings.kubernetes_jwks_file is not None:
            self.keys = JwksFile(settings.kubernetes_jwks_file)
        else:
            assert settings.kubernetes_jwks_url is not None
            self.keys = self.url = JwksUrl(
                settings.kubernetes_jwks_url,
                token_file=settings.kubernetes_token_file,
                ca_file=settings.kubernetes_ca_file,
                refresh_seconds=settings.kubernetes_jwks_refresh_seconds,
                monotonic=monotonic,
            )
        self.verifier: TokenVerifier = TokenVerifier(
            self.keys,
            audience=settings.kubernetes_audience,
            issuer=settings.kubernetes_issuer,
            wall=wall,
        )
        self.rules: FleetRules = FleetRules(settings.kubernetes_fleet_rules)


class RequestGuard:
    def __init__(
        self,
        settings: Settings,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._require_header = settings.require_request_header
        self._hosts = LOOPBACK_HOSTS | {host.lower().encode() for host in settings.allowed_hosts}
        self._fleets = frozenset(settings.allowed_fleets)
        self._secret = SecretFile(settings.auth_token_file) if settings.auth_token_file else None
        self._wall = wall
        self.identity = (
            CallerIdentity(settings, wall, monotonic) if settings.kubernetes_audience else None
        )
        self._peers = [ipaddress.ip_network(peer, strict=False) for peer in settings.allowed_peers]
        # Peer addresses that passed: the front's hit path looks a peer up here on every hit,
        # since the peer is not part of the header set its memo of verdicts is keyed by.
        self.allowed_peer_hosts: set[str] = set()

    def check_peer(self, client: tuple[str, int] | None) -> None:
        """Raise unless the TCP peer is in TOKEN_BROKER_ALLOWED_PEERS; unix sockets pass.

        The Host check stops browsers, not a remote peer that writes Host: localhost itself.
        """
        if client is None or client[0] in self.allowed_peer_hosts:
            return  # no peer address: a unix socket, which file permissions guard
        try:
            address = ipaddress.ip_address(client[0])
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped  # a dual-stack listener's view of an IPv4 peer
        if address is None or not any(address in network for network in self._peers):
            raise errors.Forbidden(
                "peer address is not in TOKEN_BROKER_ALLOWED_PEERS", code="PeerNotAllowed"
            )
        if len(self.allowed_peer_hosts) >= MAX_KNOWN_PEERS:
            self.allowed_peer_hosts.clear()
        self.allowed_peer_hosts.add(client[0])

    @property
    def rotates(self) -> bool:
        """Whether check() can change its verdict on the same request when what it checks
        against changes: a secret or the cluster's keys."""
        return self._secret is not None or self.identity is not None

    def epoch(self) -> object:
        """The secret or the key set in force (None without either). A verdict of check()
        stands while this is the same object: a new secret or key set is a new object."""
        if self.identity is not None:
            return self.identity.keys.current()
        return None if self._secret is None else self._secret.current()

    async def start(self) -> None:
        """At start-up (the app's lifespan): fetch the cluster's keys, if from a URL."""
        if self.identity is not None and self.identity.url is not None:
            await self.identity.url.start()

    async def close(self) -> None:
        if self.identity is not None and self.identity.url is not None:
            await self.identity.url.close()

    async def check(self, headers: Iterable[tuple[bytes, bytes]], key: Key) -> float:
        """Raise the error this request gets, or return how many more seconds the verdict
        holds if `key`'s token may be given: for ever (inf) but with a caller identity, whose
        verdict ends when its token does.

        `headers` are the ASGI scope's: lower-case names, raw values. A verdict holds for these
        headers and this key together (the front remembers it so).
        """
        host = b""
        guard = authorization = None
        for name, value in headers:
            if name == b"host":
                if host:  # which one would a proxy in front of us have checked?
                    raise errors.Forbidden("more than one Host header", code="HostNotAllowed")
                host = value
            elif name == GUARD_HEADER:
                guard = value
            elif name == b"authorization":
                authorization = value
            elif name in PROXY_HEADERS:
                # A proxy in front means the caller is not a local process; tokens stay local.
                raise errors.Forbidden("proxied requests are refused", code="ProxiedRequest")
        self._check_host_name(host)
        # Like Metadata-Flavor or X-Vault-Request: a browser or an SSRF-able service can't add it.
        if self._require_header and (guard is None or guard.lower() != b"true"):
            raise errors.Forbidden(
                "send the header X-Token-Broker-Request: true", code="MissingRequestHeader"
            )
        if self._secret is not None and not self._secret_matches(authorization):
            raise errors.Unauthenticated("missing or wrong caller secret")
        if self.identity is None:
            self._check_fleet(key)
            return math.inf
        # Who the caller is before what it may have: a 401 says nothing about the key.
        scheme, _, token = (authorization or b"").partition(b" ")
        if scheme.lower() != b"bearer" or not token.strip():
            raise errors.Unauthenticated(
                "send Authorization: Bearer <projected ServiceAccount token>"
            )
        caller = await self.identity.verifier.verify(token.strip())
        self._check_fleet(key)
        self.identity.rules.authorize(caller, key)
        return max(0.0, caller.expires_at - self._wall())

    def _check_fleet(self, key: Key) -> None:
        if self._fleets and key[0] not in self._fleets:
            raise errors.Forbidden(
                "fleet is not in TOKEN_BROKER_ALLOWED_FLEETS", code="FleetNotAllowed"
            )

    def check_page(
        self, client: tuple[str, int] | None, headers: Iterable[tuple[bytes, bytes]]
    ) -> None:
        """For a page a browser opens (the docs): the peer and the Host, so DNS rebinding and
        remote peers are refused; not the guard header or the secret, which a browser cannot
        send to a page it is told to open."""
        self.check_peer(client)
        hosts = [value for name, value in headers if name == b"host"]
        if len(hosts) > 1:
            raise errors.Forbidden("more than one Host header", code="HostNotAllowed")
        self._check_host_name(hosts[0] if hosts else b"")

    def _check_host_name(self, host: bytes) -> None:
        if _host_name(host) not in self._hosts:
            raise errors.Forbidden("Host is not a local name", code="HostNotAllowed")

    def _secret_matches(self, authorization: bytes | None) -> bool:
        assert self._secret is not None
        scheme, _, offered = (authorization or b"").partition(b" ")
        # Digests of equal length, compared in constant time on every path: timing says
        # nothing about the secret, not even its length.
        matches = hmac.compare_digest(
            hashlib.sha256(offered.strip()).digest(),
            hashlib.sha256(self._secret.current()).digest(),
        )
        return matches and scheme.lower() == b"bearer"


def _host_name(host: bytes) -> bytes:
    host = host.lower()
    if host.startswith(b"["):
        return host.partition(b"]")[0] + b"]"
    return host.partition(b":")[0]
