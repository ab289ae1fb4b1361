"""The cluster's token-signing keys: a JWKS read from a file, or fetched from the API server.

Both sources answer `current()` (the key set in force, a new object whenever it changes, so
verdicts remembered under the old one can be voided) and `find(kid)`. A source never holds a
secret: the keys are public, and the broker's own ServiceAccount token used to fetch them is
read from its file for each fetch and never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt

log = logging.getLogger("service.identity")

# The only algorithms accepted, by key type: what kube-apiserver signs with. HS* (a shared
# secret) and `none` are never among them, whatever a token's header says.
ALGORITHM_OF_KEY_TYPE = {"RSA": "RS256", "EC": "ES256"}
# A JWKS is a few keys; anything much larger is not one.
MAX_JWKS_BYTES = 256 * 1024
FETCH_TIMEOUT_SECONDS = 5.0
# At most one fetch per this many seconds, whatever callers send: a flood of tokens naming
# random key ids must not turn into a flood of calls to the API server.
MIN_FETCH_INTERVAL_SECONDS = 10.0


@dataclass(frozen=True)
class VerificationKey:
    key: Any  # a cryptography public key, as PyJWT wants it
    algorithm: str  # the one algorithm a token verified with this key may name


@dataclass(frozen=True, eq=False)
class KeySet:
    """The keys in force, by key id. Compared by identity: a reload is a new set."""

    keys: Mapping[str, VerificationKey] = field(default_factory=dict)


def parse_jwks(data: bytes) -> KeySet:
    """The usable keys of a JWKS document (RFC 7517); ValueError if it has none."""
    try:
        document = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ValueError("not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError('not a JWKS: no "keys" list')
    keys: dict[str, VerificationKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid, algorithm = entry.get("kid"), ALGORITHM_OF_KEY_TYPE.get(entry.get("kty", ""))
        if not isinstance(kid, str) or algorithm is None:
            continue  # Kubernetes names every key; an unnamed one could never be picked
        if entry.get("alg", algorithm) != algorithm or (
            algorithm == "ES256" and entry.get("crv") != "P-256"
        ):
            continue
        try:
            keys[kid] = VerificationKey(jwt.PyJWK(entry, algorithm).key, algorithm)
        except jwt.PyJWTError:
            continue  # one malformed key does not void the others
    if not keys:
        raise ValueError("no RS256 or ES256 signing key with a key id")
    return KeySet(keys)


class KeySource(Protocol):
    def current(self) -> KeySet: ...

    async def find(self, kid: str) -> VerificationKey | None: ...


class JwksFile:
    """A JWKS file, re-read whenever it changes (a ConfigMap volume swaps it on rotation)."""

    def __init__(self, path: Path) -> None:
        """Raise ValueError, saying why, unless `path` holds a usable JWKS now."""
        self._path = path
        try:
            info = os.stat(path)
            data = path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read {path}: {exc.strerror}") from exc
        try:
            self._keys = parse_jwks(data)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        # Taken before the read: a change in between is read again on the next call.
        self._stamp: tuple[int, int, int] | None = (info.st_ino, info.st_mtime_ns, info.st_size)

    def current(self) -> KeySet:
        try:
            info = os.stat(self._path)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
            if stamp != self._stamp:
                data = self._path.read_bytes()
                self._stamp = stamp
                self._load(data)
        except OSError as exc:
            if not self._keys.keys:
                raise
            # A rename mid-rotation leaves a moment with no file: the last keys stay in force.
            if self._stamp is not None:
                log.warning(
                    "JWKS file unreadable; keeping the last keys",
                    extra={"event": "jwks_unreadable", "error": type(exc).__name__},
                )
                self._stamp = None  # warn once per episode, and reread when it is back
        return self._keys

    def _load(self, data: bytes) -> None:
        try:
            self._keys = parse_jwks(data)
        except ValueError as exc:
            # Half-written, or not a JWKS: keep the last keys rather than refuse everyone.
            log.warning(
                "JWKS file not usable; keeping the last keys",
                extra={"event": "jwks_invalid", "error": str(exc)},
            )
            return
        log.info("JWKS loaded", extra={"event": "jwks_loaded", "kids": sorted(self._keys.keys)})

    async def find(self, kid: str) -> VerificationKey | None:
        return self.current().keys.get(kid)


class JwksUrl:
    """The API server's /openid/v1/jwks, fetched with the pod's own ServiceAccount token.

    Refreshed when a key in use is older than `refresh_seconds` (in the background: the keys
    held keep verifying meanwhile) and when a token names a key id not held (the request waits:
    the cluster may have rotated). Fetches are at least `min_interval` apart, and concurrent
    callers share one.
    """

    def __init__(
        self,
        url: str,
        *,
        token_file: Path,
        ca_file: Path,
        refresh_seconds: float,
        min_interval: float = MIN_FETCH_INTERVAL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url = url
        self._token_file = token_file
        self._ca_file = ca_file
        self._refresh_seconds = refresh_seconds
        self._min_interval = min_interval
        self._monotonic = monotonic
        self._keys = KeySet()
        self._loaded_at = -float("inf")  # monotonic time the keys held were fetched
        self._tried_at = -float("inf")  # monotonic time the last fetch started
        self._fetch: asyncio.Task[None] | None = None
        self.fetches = 0  # fetches started, for the metrics' and the tests' sake

    def current(self) -> KeySet:
        return self._keys

    async def find(self, kid: str) -> VerificationKey | None:
        now = self._monotonic()
        key = self._keys.keys.get(kid)
        if key is not None:
            if now - self._loaded_at >= self._refresh_seconds:
                self._start(now)  # not awaited: the held key still verifies
            return key
        fetch = self._start(now)
        if fetch is None:
            return None  # too soon after the last fetch: refused without asking again
        # Shielded: one caller giving up must not cancel the fetch the others wait on.
        await asyncio.shield(fetch)
        return self._keys.keys.get(kid)

    async def start(self) -> None:
        """The first fetch, at start-up; a failure is logged and retried when a token comes."""
        fetch = self._start(self._monotonic())
        if fetch is not None:
            await fetch

    async def close(self) -> None:
        if self._fetch is not None:
            self._fetch.cancel()
            await asyncio.gather(self._fetch, return_exceptions=True)

    def _start(self, now: float) -> asyncio.Task[None] | None:
        """The fetch under way, or a new one if the last began `min_interval` ago."""
        if self._fetch is not None:
            return self._fetch
        if now - self._tried_at < self._min_interval:
            return None
        self._tried_at = now
        self.fetches += 1
        self._fetch = asyncio.create_task(self._fetch_keys(), name="jwks-fetch")
        return self._fetch

    async def _fetch_keys(self) -> None:
        try:
            self._keys = await self._download()
            self._loaded_at = self._monotonic()
            log.info(
                "JWKS fetched", extra={"event": "jwks_loaded", "kids": sorted(self._keys.keys)}
            )
        except (OSError, httpx.HTTPError, ValueError) as exc:
            # At most one line per min_interval. Our own messages (ValueError) are safe to
            # show; of the others, the type only: a message could quote anything.
            error = str(exc) if type(exc) is ValueError else type(exc).__name__
            log.warning(
                "JWKS fetch failed; keeping the last keys",
                extra={"event": "jwks_fetch_failed", "error": error},
            )
        finally:
            self._fetch = None

    async def _download(self) -> KeySet:
        # Read for each fetch: the kubelet rotates the projected token in its file.
        bearer = self._token_file.read_text().strip()
        verify: ssl.SSLContext | bool = True
        if self._url.startswith("https://"):
            verify = ssl.create_default_context(cafile=str(self._ca_file))
        async with httpx.AsyncClient(
            verify=verify, timeout=FETCH_TIMEOUT_SECONDS, trust_env=False
        ) as client:
            response = await client.get(
                self._url,
                headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"},
            )
        if response.status_code != 200:
            raise ValueError(f"the API server answered {response.status_code}")
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError("the JWKS is too large")
        return parse_jwks(response.content)
