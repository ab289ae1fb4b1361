"""A projected ServiceAccount token checked: signature, algorithm, issuer, audience and times.

PyJWT checks the signature, the issuer and the audience; the times are checked here, against an
injected wall clock (PyJWT reads its own), so tests can move time instead of waiting.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt

from service import errors
from service.identity.jwks import KeySource

# Clock skew between the API server that signed a token and this node: a token just issued
# must not be "not yet valid" here, nor does a few seconds past `exp` matter.
LEEWAY_SECONDS = 5.0


@dataclass(frozen=True)
class Identity:
    """Who a verified token says the caller is (its `kubernetes.io` claim)."""

    namespace: str
    service_account: str
    pod_name: str
    pod_uid: str
    expires_at: float  # the token's `exp`, epoch seconds: no verdict may outlive it


def invalid(reason: str) -> errors.Unauthenticated:
    # Messages name what failed, never the token or a claim's value.
    return errors.Unauthenticated(reason, code="InvalidIdentityToken")


class TokenVerifier:
    def __init__(
        self,
        keys: KeySource,
        *,
        audience: str,
        issuer: str,
        wall: Callable[[], float] = time.time,
        leeway: float = LEEWAY_SECONDS,
    ) -> None:
        self._keys = keys
        self._audience = audience
        self._issuer = issuer
        self._wall = wall
        self._leeway = leeway

    async def verify(self, token: bytes) -> Identity:
        """The identity `token` proves, or raise Unauthenticated saying what is wrong."""
        header = _unverified_header(token)
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise invalid("the token names no key id")
        # The key decides the one algorithm: a token cannot pick HS256 and have the public key
        # taken for a shared secret, nor `none`.
        key = await self._keys.find(kid)
        if key is None:
            raise invalid("the token's key id is not one of the cluster's keys")
        if header.get("alg") != key.algorithm:
            raise invalid(f"the token's algorithm is not its key's ({key.algorithm})")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "verify_exp": False,  # checked below, on our clock
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": ["exp", "iss", "aud"],
                },
            )
        except jwt.InvalidSignatureError:
            raise invalid("the token's signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise invalid("the token is not for this audience") from None
        except jwt.InvalidIssuerError:
            raise invalid("the token is not from this cluster's issuer") from None
        except jwt.MissingRequiredClaimError as exc:
            raise invalid(f"the token has no {exc.claim} claim") from None
        except jwt.PyJWTError:
            raise invalid("the token is malformed") from None
        expires_at = self._check_times(claims)
        return _identity(claims, expires_at)

    def _check_times(self, claims: dict[str, Any]) -> float:
        now = self._wall()
        expires_at, not_before = claims["exp"], claims.get("nbf")
        if not _is_time(expires_at) or not (not_before is None or _is_time(not_before)):
            raise invalid("the token's exp or nbf is not a time")
        if now >= expires_at + self._leeway:
            raise invalid("the token has expired")
        if not_before is not None and now + self._leeway < not_before:
            raise invalid("the token is not valid yet")
        return float(expires_at)


def _unverified_header(token: bytes) -> dict[str, Any]:
    """The JOSE header, read only to pick the key; PyJWT checks the whole token after.

    jwt.get_unverified_header decodes (and checks the alphabet of) every segment, which PyJWT's
    decode does again: reading only the header halves the cost of a check.
    """
    segment, dot, _rest = token.partition(b".")
    try:
        if not dot or len(segment) > 1024:
            raise ValueError("no header")
        header = json.loads(base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4)))
    except (ValueError, binascii.Error):
        raise invalid("the bearer token is not a JWT") from None
    if not isinstance(header, dict):
        raise invalid("the bearer token is not a JWT")
    return header


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _identity(claims: dict[str, Any], expires_at: float) -> Identity:
    kubernetes = claims.get("kubernetes.io")
    if not isinstance(kubernetes, dict):
        raise invalid("the token has no kubernetes.io claim: not a ServiceAccount token")
    pod, account = kubernetes.get("pod"), kubernetes.get("serviceaccount")
    if not isinstance(pod, dict) or not isinstance(pod.get("name"), str):
        # A token from the TokenRequest API without a pod, or a legacy Secret token: it could
        # be used from anywhere, so it names no compute.
        raise invalid("the token is not bound to a pod: mount a projected token")
    namespace = kubernetes.get("namespace")
    if not isinstance(namespace, str) or not isinstance(account, dict):
        raise invalid("the token's kubernetes.io claim has no namespace or serviceaccount")
    return Identity(
        namespace=namespace,
        service_account=str(account.get("name", "")),
        pod_name=pod["name"],
        pod_uid=str(pod.get("uid", "")),
        expires_at=expires_at,
    )
