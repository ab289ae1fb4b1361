"""The cluster's keys fetched from a stand-in API server on loopback: the bearer it is sent,
refresh on an unknown key id and by age, the rate limit on fetches, and TLS with the CA file."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from service.emulator import Emulator
from service.emulator.tls import self_signed
from service.identity.jwks import MIN_FETCH_INTERVAL_SECONDS, JwksUrl
from tests.conftest import run_server
from tests.helpers import FakeClock, eventually
from tests.identity_helpers import (
    AUDIENCE,
    ISSUER,
    JwksServer,
    Pod,
    bearer,
    claims,
    jwks,
    private_key,
    sign,
)

REFRESH = 300.0


@pytest.fixture
async def api_server() -> AsyncIterator[tuple[JwksServer, str]]:
    stand_in = JwksServer(jwks(k1=private_key("rsa")))
    async with run_server(stand_in.server()) as url:
        yield stand_in, f"{url}/openid/v1/jwks"


@pytest.fixture
def sa_token(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("broker-sa-token-1\n")
    return path


@pytest.fixture
def source(api_server: tuple[JwksServer, str], sa_token: Path, clock: FakeClock) -> JwksUrl:
    return JwksUrl(
        api_server[1],
        token_file=sa_token,
        ca_file=sa_token.parent / "no-ca.crt",  # plain HTTP: never read
        refresh_seconds=REFRESH,
        monotonic=clock.monotonic,
    )


async def test_fetched_with_the_pods_own_service_account_token(
    api_server: tuple[JwksServer, str], source: JwksUrl, sa_token: Path, clock: FakeClock
) -> None:
    stand_in, _ = api_server
    await source.start()
    assert stand_in.bearers == ["Bearer broker-sa-token-1"]
    assert await source.find("k1") is not None
    # The kubelet rotates the broker's token in its file: the next fetch sends the new one.
    sa_token.write_text("broker-sa-token-2")
    clock.advance(MIN_FETCH_INTERVAL_SECONDS)
    assert await source.find("k2") is None
    assert stand_in.bearers[-1] == "Bearer broker-sa-token-2"


async def test_an_unknown_key_id_refetches_within_the_rate_limit(
    api_server: tuple[JwksServer, str], source: JwksUrl, clock: FakeClock
) -> None:
    stand_in, _ = api_server
    await source.start()
    held = source.current()
    stand_in.document = jwks(k1=private_key("rsa"), k2=private_key("rsa", "next"))
    # Too soon after the last fetch: refused with no call, however many random ids come.
    for _ in range(50):
        assert await source.find(secrets.token_hex(8)) is None
    assert await source.find("k2") is None
    assert stand_in.fetches == 1 and source.current() is held
    clock.advance(MIN_FETCH_INTERVAL_SECONDS)
    # Then one fetch, shared by every caller waiting on it.
    found = await asyncio.gather(*(source.find("k2") for _ in range(20)))
    assert all(key is not None for key in found)
    assert stand_in.fetches == 2 and source.current() is not held
    # A flood of random ids after that: one fetch per interval at most.
    for _ in range(5):
        clock.advance(MIN_FETCH_INTERVAL_SECONDS / 4)
        for _ in range(20):
            assert await source.find(secrets.token_hex(8)) is None
    assert stand_in.fetches == 3


async def test_keys_in_use_are_refreshed_by_age_in_the_background(
    api_server: tuple[JwksServer, str], source: JwksUrl, clock: FakeClock
) -> None:
    stand_in, _ = api_server
    await source.start()
    clock.advance(REFRESH - 1)
    assert await source.find("k1") is not None
    assert stand_in.fetches == 1
    clock.advance(1)
    stand_in.document = jwks(k2=private_key("rsa", "next"))  # k1 withdrawn
    assert await source.find("k1") is not None  # still served: the refresh is not awaited
    await eventually(lambda: "k1" not in source.current().keys, what="background refresh")
    assert stand_in.fetches == 2 and await source.find("k2") is not None


async def test_a_failed_fetch_keeps_the_last_keys(
    api_server: tuple[JwksServer, str], source: JwksUrl, clock: FakeClock, caplog: Any
) -> None:
    stand_in, _ = api_server
    await source.start()
    stand_in.status = 403  # the binding to system:service-account-issuer-discovery is gone
    clock.advance(REFRESH)
    assert await source.find("k1") is not None
    await eventually(lambda: stand_in.fetches == 2)
    await eventually(lambda: any("answered 403" in str(vars(r)) for r in caplog.records))
    assert await source.find("k1") is not None
    for record in caplog.records:
        assert "broker-sa-token" not in str(vars(record))


async def test_https_with_the_cluster_ca(tmp_path: Path, sa_token: Path, clock: FakeClock) -> None:
    cert, key = self_signed(tmp_path, ["127.0.0.1"])
    stand_in = JwksServer(jwks(k1=private_key("rsa")))
    server = stand_in.server(ssl_certfile=str(cert), ssl_keyfile=str(key))
    async with run_server(server) as url:
        https = url.replace("http://", "https://") + "/openid/v1/jwks"
        trusted = JwksUrl(
            https, token_file=sa_token, ca_file=cert, refresh_seconds=REFRESH,
            monotonic=clock.monotonic,
        )  # fmt: skip
        await trusted.start()
        assert await trusted.find("k1") is not None
        other_ca, _ = self_signed(tmp_path / "other", ["127.0.0.1"])
        untrusted = JwksUrl(
            https, token_file=sa_token, ca_file=other_ca, refresh_seconds=REFRESH,
            monotonic=clock.monotonic,
        )  # fmt: skip
        await untrusted.start()
        assert await untrusted.find("k1") is None
    assert stand_in.fetches == 1  # the untrusted server never got the bearer


async def test_a_broker_with_the_jwks_url(
    start_broker: Callable[..., Any],
    api_server: tuple[JwksServer, str],
    sa_token: Path,
    emulator: Emulator,
    clock: FakeClock,
) -> None:
    stand_in, url = api_server
    settings = {
        "kubernetes_audience": AUDIENCE,
        "kubernetes_issuer": ISSUER,
        "kubernetes_jwks_url": url,
        "kubernetes_token_file": str(sa_token),
    }
    pod = Pod(name="gs-0")
    async with start_broker(**settings) as broker:
        assert stand_in.fetches == 1  # at start-up, before any request
        jwt = sign(claims(pod, now=clock.now), private_key("rsa"), "k1")
        for _ in range(3):
            assert (await broker.token(compute="gs-0", headers=bearer(jwt))).status_code == 200
        # The cluster rotates its key: a token signed with it names a key id not held.
        new_key = private_key("rsa", "next")
        stand_in.document = jwks(k2=new_key)
        rotated = sign(claims(pod, now=clock.now), new_key, "k2")
        response = await broker.token(compute="gs-0", headers=bearer(rotated))
        assert response.status_code == 401  # within the rate limit of the start-up fetch
        assert stand_in.fetches == 1
        clock.advance(MIN_FETCH_INTERVAL_SECONDS)
        assert (await broker.token(compute="gs-0", headers=bearer(rotated))).status_code == 200
        assert stand_in.fetches == 2
        # k1 is gone from the fetched set: its remembered verdict went with the old set.
        assert (await broker.token(compute="gs-0", headers=bearer(jwt))).status_code == 401
    assert emulator.calls == 1
