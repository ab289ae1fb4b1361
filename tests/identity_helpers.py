"""A stand-in for a cluster's ServiceAccount token issuer: real keys, real signed JWTs, a JWKS."""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://kubernetes.default.svc.cluster.local"
AUDIENCE = "gamelift-token-broker"
# One key of each kind, made once per test process: RSA key generation takes a while.
_KEYS: dict[str, Any] = {}


def private_key(kind: str = "rsa", name: str = "") -> Any:
    """A private key of `kind` ("rsa" or "ec"); the same one for the same (kind, name)."""
    if (kind, name) not in _KEYS:
        if kind == "rsa":
            _KEYS[kind, name] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        else:
            _KEYS[kind, name] = ec.generate_private_key(ec.SECP256R1())
    return _KEYS[kind, name]


def jwk(kid: str, key: Any) -> dict[str, Any]:
    """The public half of `key` as a JWK, as kube-apiserver's /openid/v1/jwks lists it."""
    algorithm = jwt.algorithms.RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else None
    if algorithm is not None:
        data = json.loads(algorithm.to_jwk(key.public_key()))
        data["alg"] = "RS256"
    else:
        data = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
        data["alg"] = "ES256"
    return {**data, "kid": kid, "use": "sig"}


def jwks(**keys: Any) -> bytes:
    return json.dumps({"keys": [jwk(kid, key) for kid, key in keys.items()]}).encode()


def write_jwks(path: Path, **keys: Any) -> None:
    """Replace the file by rename, as a ConfigMap volume does, so no reader sees half of it."""
    staging = path.with_suffix(".tmp")
    staging.write_bytes(jwks(**keys))
    os.replace(staging, path)


def public_pem(key: Any) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@dataclass
class Pod:
    """Who the token says the caller is."""

    name: str = "gameserver-0"
    namespace: str = "games"
    service_account: str = "gameserver"
    uid: str = "6f1b2c3d-0000-4000-8000-000000000001"
    extra: dict[str, Any] = field(default_factory=dict)


def claims(
    pod: Pod, *, now: float | None = None, lifetime: float = 3600, **overrides: Any
) -> dict[str, Any]:
    """A projected token's claims, shaped as kube-apiserver issues them."""
    issued = int(time.time() if now is None else now)
    body: dict[str, Any] = {
        "aud": [AUDIENCE],
        "exp": issued + int(lifetime),
        "iat": issued,
        "nbf": issued,
        "iss": ISSUER,
        "sub": f"system:serviceaccount:{pod.namespace}:{pod.service_account}",
        "kubernetes.io": {
            "namespace": pod.namespace,
            "pod": {"name": pod.name, "uid": pod.uid},
            "serviceaccount": {
                "name": pod.service_account,
                "uid": "0a1b2c3d-0000-4000-8000-000000000002",
            },
        },
    }
    body.update(pod.extra)
    body.update(overrides)
    return {key: value for key, value in body.items() if value is not None}


def sign(body: dict[str, Any], key: Any, kid: str | None, algorithm: str | None = None) -> str:
    if algorithm is None:
        algorithm = "RS256" if isinstance(key, rsa.RSAPrivateKey) else "ES256"
    headers = {} if kid is None else {"kid": kid}
    return jwt.encode(body, key, algorithm=algorithm, headers=headers)


def unsigned(body: dict[str, Any], kid: str) -> str:
    """alg none: a header and a body, no signature."""

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{part(body)}."


def hs256_with_public_key(body: dict[str, Any], key: Any, kid: str) -> str:
    """The classic confusion: HS256, with the RSA public key's PEM as the shared secret.

    PyJWT refuses to sign with a PEM as an HMAC secret, so the signature is made by hand.
    """
    import hashlib
    import hmac

    def part(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = part(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    payload = part(json.dumps(body).encode())
    mac = hmac.new(public_pem(key), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{part(mac)}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class JwksServer:
    """A stand-in for the API server's /openid/v1/jwks: serves `document`, records bearers."""

    def __init__(self, document: bytes) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        self.document = document
        self.bearers: list[str] = []  # the Authorization header of each fetch, in order
        self.status = 200

        async def keys(request: Request) -> Response:
            self.bearers.append(request.headers.get("authorization", ""))
            return Response(self.document, status_code=self.status, media_type="application/json")

        self.app = Starlette(routes=[Route("/openid/v1/jwks", keys)])

    @property
    def fetches(self) -> int:
        return len(self.bearers)

    def server(self, **config: Any) -> Any:
        import uvicorn

        settings = uvicorn.Config(self.app, log_config=None, access_log=False, **config)
        settings.timeout_graceful_shutdown = 1
        return uvicorn.Server(settings)
