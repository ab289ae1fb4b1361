"""Caller identity through a broker under uvicorn, on both paths (the front and FastAPI).

Real signed JWTs, a JWKS file, the emulator upstream; the clock is the shared fake one, so a
token's expiry is reached by moving time. Every refusal is checked with the key's token already
cached and its verdict remembered, so the hit path is the one being tested, and the emulator
must see no further call.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from service.emulator import Emulator
from service.identity.verify import LEEWAY_SECONDS
from tests.conftest import Broker
from tests.helpers import FakeClock
from tests.identity_helpers import (
    AUDIENCE,
    ISSUER,
    Pod,
    bearer,
    claims,
    hs256_with_public_key,
    private_key,
    sign,
    unsigned,
    write_jwks,
)

POD = Pod(name="gs-0")


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    write_jwks(path, k1=private_key("rsa"))
    return path


@pytest.fixture
def identity_broker(start_broker: Callable[..., Any], jwks_file: Path) -> Callable[..., Any]:
    @asynccontextmanager
    async def start(**settings: Any) -> AsyncIterator[Broker]:
        async with start_broker(
            kubernetes_audience=AUDIENCE,
            kubernetes_issuer=ISSUER,
            kubernetes_jwks_file=str(jwks_file),
            **settings,
        ) as broker:
            yield broker

    return start


def token_for(clock: FakeClock, pod: Pod = POD, key: Any = None, kid: str = "k1", **kw: Any) -> str:
    return sign(claims(pod, now=clock.now, **kw), key or private_key("rsa"), kid)


async def primed(broker: Broker, emulator: Emulator, jwt: str, compute: str = "gs-0") -> None:
    # A miss, a hit, and a remembered hit: the memo holds this path with this token.
    for _ in range(3):
        response = await broker.token(compute=compute, headers=bearer(jwt))
        assert response.status_code == 200, response.text
    assert emulator.calls == 1


def refused(response: Any, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.headers["cache-control"] == "no-store"
    assert "AuthToken" not in response.text


async def test_a_pod_gets_its_own_compute_and_no_other(
    identity_broker: Callable[..., Any], emulator: Emulator, clock: FakeClock
) -> None:
    async with identity_broker() as broker:
        jwt = token_for(clock)
        await primed(broker, emulator, jwt)
        refused(await broker.token(compute="gs-1", headers=bearer(jwt)), 403, "NotOwnCompute")
        # Another pod asks for gs-0 with its own (valid) token: not its compute either.
        other = token_for(clock, Pod(name="gs-1"))
        refused(await broker.token(compute="gs-0", headers=bearer(other)), 403, "NotOwnCompute")
        for headers in ({}, {"Authorization": "Basic " + jwt}, {"Authorization": jwt}):
            response = await broker.token(compute="gs-0", headers=headers)
            refused(response, 401, "Unauthenticated")
            assert response.headers["www-authenticate"] == "Bearer"
        assert (await broker.token(compute="gs-0", headers=bearer(jwt))).status_code == 200
    assert emulator.calls == 1


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda c: token_for(c, aud=["https://kubernetes.default.svc"]), id="audience"),
        pytest.param(lambda c: token_for(c, iss="https://other.example"), id="issuer"),
        pytest.param(lambda c: token_for(c, exp=int(c.now) - 60), id="expired"),
        pytest.param(lambda c: token_for(c, nbf=int(c.now) + 60), id="not-yet-valid"),
        pytest.param(lambda c: token_for(c, key=private_key("rsa", "x")), id="bad-signature"),
        pytest.param(lambda c: token_for(c, kid="k9"), id="unknown-kid"),
        pytest.param(lambda c: unsigned(claims(POD, now=c.now), "k1"), id="alg-none"),
        pytest.param(
            lambda c: hs256_with_public_key(claims(POD, now=c.now), private_key(), "k1"),
            id="hs256-public-key",
        ),
    ],
)
async def test_an_invalid_token_is_refused_without_a_call(
    identity_broker: Callable[..., Any],
    emulator: Emulator,
    clock: FakeClock,
    forge: Callable[[FakeClock], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with identity_broker() as broker:
        await primed(broker, emulator, token_for(clock))
        forged = forge(clock)
        with caplog.at_level(logging.INFO, logger="service"):
            refused(
                await broker.token(compute="gs-0", headers=bearer(forged)),
                401,
                "InvalidIdentityToken",
            )
        lines = [r for r in caplog.records if getattr(r, "event", "") == "request"]
        assert [getattr(r, "code", None) for r in lines] == ["InvalidIdentityToken"]
        # The refusal is logged; the token never is, in the message or any field.
        signature = forged.rsplit(".", 1)[-1] or forged
        for record in caplog.records:
            assert signature not in record.getMessage() and signature not in str(vars(record))
    assert emulator.calls == 1


async def test_a_remembered_verdict_ends_when_its_token_expires(
    identity_broker: Callable[..., Any], emulator: Emulator, clock: FakeClock
) -> None:
    async with identity_broker() as broker:
        jwt = token_for(clock, lifetime=60)
        await primed(broker, emulator, jwt)  # remembered, as a verdict for these headers
        clock.advance(59)
        assert (await broker.token(compute="gs-0", headers=bearer(jwt))).status_code == 200
        clock.advance(1 + LEEWAY_SECONDS)
        refused(
            await broker.token(compute="gs-0", headers=bearer(jwt)), 401, "InvalidIdentityToken"
        )
        # The pod's next token (the kubelet renews it) is served from the cache.
        assert (
            await broker.token(compute="gs-0", headers=bearer(token_for(clock)))
        ).status_code == 200
    assert emulator.calls == 1


async def test_a_withdrawn_key_voids_its_remembered_verdicts(
    identity_broker: Callable[..., Any], emulator: Emulator, clock: FakeClock, jwks_file: Path
) -> None:
    async with identity_broker() as broker:
        old_key, new_key = private_key("rsa"), private_key("rsa", "next")
        old = token_for(clock)
        await primed(broker, emulator, old)
        new = token_for(clock, key=new_key, kid="k2")
        refused(
            await broker.token(compute="gs-0", headers=bearer(new)), 401, "InvalidIdentityToken"
        )
        write_jwks(jwks_file, k1=old_key, k2=new_key)
        assert (await broker.token(compute="gs-0", headers=bearer(new))).status_code == 200
        assert (await broker.token(compute="gs-0", headers=bearer(old))).status_code == 200
        write_jwks(jwks_file, k2=new_key)
        refused(
            await broker.token(compute="gs-0", headers=bearer(old)), 401, "InvalidIdentityToken"
        )
        assert (await broker.token(compute="gs-0", headers=bearer(new))).status_code == 200
    assert emulator.calls == 1


async def test_fleet_rules_by_namespace_and_service_account(
    identity_broker: Callable[..., Any], emulator: Emulator, clock: FakeClock
) -> None:
    rules = "games=fleet-1,games/canary=fleet-2|fleet-3"
    async with identity_broker(kubernetes_fleets=rules) as broker:
        games = token_for(clock)
        await primed(broker, emulator, games)
        refused(
            await broker.token("fleet-2", "gs-0", headers=bearer(games)), 403, "FleetNotAllowed"
        )
        canary = token_for(clock, Pod(name="gs-0", service_account="canary"))
        assert (await broker.token("fleet-2", "gs-0", headers=bearer(canary))).status_code == 200
        refused(
            await broker.token("fleet-1", "gs-0", headers=bearer(canary)), 403, "FleetNotAllowed"
        )
        lobby = token_for(clock, Pod(name="gs-0", namespace="lobby"))
        refused(
            await broker.token("fleet-1", "gs-0", headers=bearer(lobby)), 403, "IdentityNotAllowed"
        )
        # TOKEN_BROKER_ALLOWED_FLEETS is not set: the rules alone decide, and fleet-4 no rule names.
        refused(
            await broker.token("fleet-4", "gs-0", headers=bearer(canary)), 403, "FleetNotAllowed"
        )
    assert emulator.calls == 2


async def test_the_allowed_fleets_still_apply(
    identity_broker: Callable[..., Any], emulator: Emulator, clock: FakeClock
) -> None:
    async with identity_broker(allowed_fleets=["fleet-1"]) as broker:
        jwt = token_for(clock)
        await primed(broker, emulator, jwt)
        refused(await broker.token("fleet-2", "gs-0", headers=bearer(jwt)), 403, "FleetNotAllowed")
        # Who comes before what: a bad token gets 401 even for a fleet nobody may have.
        refused(
            await broker.token("fleet-2", "gs-0", headers=bearer("x.y.z")),
            401,
            "InvalidIdentityToken",
        )
    assert emulator.calls == 1
