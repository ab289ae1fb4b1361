"""The ServiceAccount token verifier, the JWKS file and the fleet rules, on an injected clock.

Real keys and real signed JWTs; only the clock is ours to move.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from service import errors
from service.config import Settings, describe_error
from service.identity.jwks import JwksFile, parse_jwks
from service.identity.rules import FleetRules
from service.identity.verify import LEEWAY_SECONDS, Identity, TokenVerifier
from tests.helpers import FakeClock
from tests.identity_helpers import (
    AUDIENCE,
    ISSUER,
    Pod,
    claims,
    hs256_with_public_key,
    jwk,
    private_key,
    sign,
    unsigned,
    write_jwks,
)

NOW = 1_800_000_000.0


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(now=NOW)


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    write_jwks(path, k1=private_key("rsa"), e1=private_key("ec"))
    return path


@pytest.fixture
def verifier(jwks_file: Path, wall: FakeClock) -> TokenVerifier:
    return TokenVerifier(JwksFile(jwks_file), audience=AUDIENCE, issuer=ISSUER, wall=wall)


async def refusal(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(errors.Unauthenticated) as raised:
        await verifier.verify(token.encode())
    assert raised.value.status == 401
    assert raised.value.code == "InvalidIdentityToken"
    assert token not in raised.value.message
    return raised.value.message


def token(**overrides: Any) -> str:
    return sign(claims(Pod(), now=NOW, **overrides), private_key("rsa"), "k1")


async def test_a_valid_token_says_who_the_pod_is(verifier: TokenVerifier) -> None:
    identity = await verifier.verify(token().encode())
    assert identity == Identity(
        namespace="games",
        service_account="gameserver",
        pod_name="gameserver-0",
        pod_uid=Pod().uid,
        expires_at=NOW + 3600,
    )
    # ES256 as well: kube-apiserver signs with an EC key when given one.
    es = sign(claims(Pod(name="gs-ec"), now=NOW), private_key("ec"), "e1")
    assert (await verifier.verify(es.encode())).pod_name == "gs-ec"


async def test_audience_and_issuer_must_match(verifier: TokenVerifier) -> None:
    assert "audience" in await refusal(verifier, token(aud=["https://kubernetes.default.svc"]))
    assert "issuer" in await refusal(verifier, token(iss="https://other-cluster.example"))
    assert "aud claim" in await refusal(verifier, token(aud=None))
    # A token for several audiences, ours among them, is fine.
    assert await verifier.verify(token(aud=["vault", AUDIENCE]).encode())


async def test_expiry_and_not_before_on_the_injected_clock(
    verifier: TokenVerifier, wall: FakeClock
) -> None:
    short = token(lifetime=60)
    wall.advance(60 + LEEWAY_SECONDS - 0.5)  # past exp, within the leeway
    assert await verifier.verify(short.encode())
    wall.advance(1)
    assert "expired" in await refusal(verifier, short)
    assert "exp claim" in await refusal(verifier, token(exp=None))

    wall.now = NOW
    later = token(nbf=int(NOW) + 60)
    assert "not valid yet" in await refusal(verifier, later)
    wall.advance(60 - LEEWAY_SECONDS + 0.5)  # the leeway covers a clock a little behind
    assert await verifier.verify(later.encode())


async def test_a_bad_signature_is_refused(verifier: TokenVerifier) -> None:
    forged = sign(claims(Pod(), now=NOW), private_key("rsa", "attacker"), "k1")
    assert "signature" in await refusal(verifier, forged)
    header, _body, signature = token().split(".")
    other_body = token(**{"kubernetes.io": {"namespace": "kube-system"}}).split(".")[1]
    assert "signature" in await refusal(verifier, f"{header}.{other_body}.{signature}")


async def test_unknown_or_missing_key_id(verifier: TokenVerifier) -> None:
    body = claims(Pod(), now=NOW)
    assert "key id" in await refusal(verifier, sign(body, private_key("rsa"), "k9"))
    assert "no key id" in await refusal(verifier, sign(body, private_key("rsa"), None))


async def test_only_the_keys_own_asymmetric_algorithm(verifier: TokenVerifier) -> None:
    body = claims(Pod(), now=NOW)
    assert "algorithm" in await refusal(verifier, unsigned(body, "k1"))
    # HS256 keyed with the RSA public key (public, in the JWKS): the classic confusion.
    assert "algorithm" in await refusal(verifier, hs256_with_public_key(body, private_key(), "k1"))
    # A real ES256 signature, naming the RSA key's id: the key decides the algorithm.
    assert "algorithm" in await refusal(verifier, sign(body, private_key("ec"), "k1"))


async def test_not_a_pod_bound_service_account_token(verifier: TokenVerifier) -> None:
    assert "not a JWT" in await refusal(verifier, "not-a-jwt")
    assert "kubernetes.io" in await refusal(verifier, token(**{"kubernetes.io": None}))
    unbound = {"namespace": "games", "serviceaccount": {"name": "gameserver", "uid": "u"}}
    assert "bound to a pod" in await refusal(verifier, token(**{"kubernetes.io": unbound}))


async def test_rotation_by_rewriting_the_jwks_file(
    verifier: TokenVerifier, jwks_file: Path
) -> None:
    old, new = private_key("rsa"), private_key("rsa", "next")
    old_token = token()
    new_token = sign(claims(Pod(), now=NOW), new, "k2")
    assert "key id" in await refusal(verifier, new_token)
    write_jwks(jwks_file, k1=old, k2=new)  # the new key is published first
    assert await verifier.verify(new_token.encode())
    assert await verifier.verify(old_token.encode())
    write_jwks(jwks_file, k2=new)  # then the old one is withdrawn
    assert "key id" in await refusal(verifier, old_token)
    assert await verifier.verify(new_token.encode())


def test_a_half_written_or_missing_jwks_file_keeps_the_last_keys(jwks_file: Path) -> None:
    keys = JwksFile(jwks_file)
    held = keys.current()
    jwks_file.write_text('{"keys": [')
    assert keys.current() is held
    jwks_file.unlink()
    assert keys.current() is held
    write_jwks(jwks_file, k3=private_key("rsa"))
    assert set(keys.current().keys) == {"k3"}


def test_jwks_parsing_takes_signing_keys_it_can_use_only(tmp_path: Path) -> None:
    rsa_key = jwk("k1", private_key("rsa"))
    secret = {"kty": "oct", "kid": "h1", "k": "c2VjcmV0", "alg": "HS256"}
    encrypting = {**jwk("k2", private_key("rsa", "enc")), "use": "enc"}
    mislabelled = {**jwk("k3", private_key("rsa", "x")), "alg": "HS256"}
    nameless = {key: value for key, value in jwk("k4", private_key("ec")).items() if key != "kid"}
    document = {"keys": [rsa_key, secret, encrypting, mislabelled, nameless]}
    import json

    assert set(parse_jwks(json.dumps(document).encode()).keys) == {"k1"}
    for bad in (b"[]", b"{}", b"not json", json.dumps({"keys": [secret]}).encode()):
        with pytest.raises(ValueError):
            parse_jwks(bad)
    empty = tmp_path / "empty.json"
    empty.write_text('{"keys": []}')
    with pytest.raises(ValueError, match="no RS256 or ES256 signing key"):
        JwksFile(empty)
    with pytest.raises(ValueError, match="cannot read"):
        JwksFile(tmp_path / "missing.json")


def pod(name: str = "gs-0", namespace: str = "games", account: str = "gameserver") -> Identity:
    return Identity(namespace, account, name, "uid", NOW + 600)


def forbidden(rules: FleetRules, identity: Identity, key: tuple[str, str]) -> str:
    with pytest.raises(errors.Forbidden) as raised:
        rules.authorize(identity, key)
    assert raised.value.status == 403
    return raised.value.code


def test_by_default_a_pod_gets_its_own_compute_only() -> None:
    rules = FleetRules({})
    rules.authorize(pod("gs-0"), ("fleet-a", "gs-0"))
    rules.authorize(pod("gs-0"), ("fleet-b", "gs-0"))
    assert forbidden(rules, pod("gs-0"), ("fleet-a", "gs-1")) == "NotOwnCompute"
    assert forbidden(rules, pod("gs-0"), ("fleet-a", "GS-0")) == "NotOwnCompute"


def test_rules_map_namespaces_and_service_accounts_to_fleets() -> None:
    rules = FleetRules(
        {
            ("games", None): frozenset({"fleet-a"}),
            ("games", "canary"): frozenset({"fleet-b"}),
            ("arena", None): frozenset({"fleet-a", "fleet-c"}),
        }
    )
    rules.authorize(pod(namespace="games"), ("fleet-a", "gs-0"))
    assert forbidden(rules, pod(namespace="games"), ("fleet-b", "gs-0")) == "FleetNotAllowed"
    # The ServiceAccount's rule replaces its namespace's.
    rules.authorize(pod(account="canary"), ("fleet-b", "gs-0"))
    assert forbidden(rules, pod(account="canary"), ("fleet-a", "gs-0")) == "FleetNotAllowed"
    rules.authorize(pod(namespace="arena"), ("fleet-c", "gs-0"))
    assert forbidden(rules, pod(namespace="lobby"), ("fleet-a", "gs-0")) == "IdentityNotAllowed"
    # Still only its own compute, whatever the fleet.
    assert forbidden(rules, pod(namespace="arena"), ("fleet-c", "gs-9")) == "NotOwnCompute"


IDENTITY = {
    "TOKEN_BROKER_KUBERNETES_AUDIENCE": AUDIENCE,
    "TOKEN_BROKER_KUBERNETES_ISSUER": ISSUER,
    "TOKEN_BROKER_KUBERNETES_JWKS_FILE": "/etc/jwks.json",
}


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    line = describe_error(raised.value)
    assert "\n" not in line
    return line


def test_the_fleet_rules_syntax(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in IDENTITY.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv(
        "TOKEN_BROKER_KUBERNETES_FLEETS", " games=fleet-a|fleet-b , games/canary.v2=fleet-c"
    )
    assert Settings().kubernetes_fleet_rules == {
        ("games", None): frozenset({"fleet-a", "fleet-b"}),
        ("games", "canary.v2"): frozenset({"fleet-c"}),
    }
    for bad, says in [
        ("games", "expected namespace[/serviceaccount]=fleet-a|fleet-b"),
        ("Games=fleet-a", "expected namespace"),
        ("games/=fleet-a", "not a ServiceAccount name"),
        ("games/Canary=fleet-a", "not a ServiceAccount name"),
        ("games=fleet-a|", "not a fleet id: ''"),
        ("games=arn:aws:gamelift:::fleet/fleet-a", "not a fleet id"),
        ("games=fleet-a,games=fleet-b", "games is named twice"),
    ]:
        line = settings_error(monkeypatch, TOKEN_BROKER_KUBERNETES_FLEETS=bad)
        assert line.startswith("invalid setting TOKEN_BROKER_KUBERNETES_FLEETS: "), line
        assert says in line, line


K = "TOKEN_BROKER_KUBERNETES_"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({f"{K}JWKS_FILE": "/etc/jwks.json"}, f"needs {K}AUDIENCE"),
        ({f"{K}FLEETS": "games=fleet-a"}, f"needs {K}AUDIENCE"),
        ({**IDENTITY, f"{K}ISSUER": ""}, "must not be empty"),
        ({**IDENTITY, "TOKEN_BROKER_AUTH_TOKEN_FILE": "/etc/secret"}, "exclude each other"),
        ({**IDENTITY, f"{K}JWKS_URL": "https://k/openid/v1/jwks"}, "exactly one of"),
        ({f"{K}TOKEN_FILE": "/run/token"}, f"{K}TOKEN_FILE needs {K}AUDIENCE"),
        ({f"{K}JWKS_REFRESH_SECONDS": "60"}, f"{K}JWKS_REFRESH_SECONDS needs {K}AUDIENCE"),
        ({**IDENTITY, f"{K}JWKS_FILE": "", f"{K}JWKS_URL": "ftp://k"}, "https://"),
        (
            {**IDENTITY, "TOKEN_BROKER_ALLOWED_FLEETS": "fleet-a", f"{K}FLEETS": "games=fleet-b"},
            "fleet-b",
        ),
    ],
)
def test_half_or_clashing_identity_settings_stop_start_up(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], says: str
) -> None:
    env = {name: value for name, value in env.items() if value or name.endswith("ISSUER")}
    assert says in settings_error(monkeypatch, **env)


def test_no_identity_settings_no_identity() -> None:
    assert Settings().kubernetes_audience is None
    assert not any(name.startswith("TOKEN_BROKER_") for name in os.environ)
