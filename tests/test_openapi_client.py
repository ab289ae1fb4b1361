"""A client generated from openapi.json, by a generator nobody here wrote, gets a token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiopenapi3 import OpenAPI

from service.emulator import Emulator
from tests.conftest import Broker

SPEC = json.loads((Path(__file__).resolve().parent.parent / "openapi.json").read_text())


def client(broker: Broker) -> OpenAPI:
    # The committed document, as a user would take it; only the server address is the test's.
    return OpenAPI(f"{broker.url}/openapi.json", {**SPEC, "servers": [{"url": broker.url}]})


async def get_token(api: OpenAPI) -> object:
    return await api._.getToken(parameters={"fleet_id": "fleet-1", "compute_name": "host-1"})


async def test_the_generated_client_sends_the_guard_header(start_broker, emulator: Emulator):
    async with start_broker(require_request_header=True) as broker:
        api = client(broker)
        api.authenticate(RequestHeader="true")
        token = await get_token(api)
        assert token.FleetId == "fleet-1" and token.AuthToken  # type: ignore[attr-defined]
        # The document declares it: a client without it will not even ask.
        with pytest.raises(ValueError, match="No security requirement satisfied"):
            await get_token(client(broker))
    assert emulator.calls == 1


async def test_the_generated_client_sends_the_caller_secret(
    start_broker, emulator: Emulator, tmp_path: Path
):
    secret = tmp_path / "secret"
    secret.write_text("s3cret-for-callers")
    async with start_broker(require_request_header=True, auth_token_file=str(secret)) as broker:
        api = client(broker)
        api.authenticate(RequestHeader="true", CallerSecret="s3cret-for-callers")
        token = await get_token(api)
        assert token.ComputeName == "host-1"  # type: ignore[attr-defined]
        header_only = client(broker)
        header_only.authenticate(RequestHeader="true")
        with pytest.raises(Exception) as refused:
            await get_token(header_only)
        assert "401" in str(refused.value)
    assert emulator.calls == 1


async def test_the_generated_client_sends_a_service_account_token(
    start_broker, emulator: Emulator, tmp_path: Path, clock
):
    from tests.identity_helpers import AUDIENCE, ISSUER, Pod, claims, private_key, sign, write_jwks

    keys = tmp_path / "jwks.json"
    write_jwks(keys, k1=private_key("rsa"))
    settings = {
        "kubernetes_audience": AUDIENCE,
        "kubernetes_issuer": ISSUER,
        "kubernetes_jwks_file": str(keys),
    }
    async with start_broker(require_request_header=True, **settings) as broker:
        api = client(broker)
        jwt = sign(claims(Pod(name="host-1"), now=clock.now), private_key("rsa"), "k1")
        api.authenticate(RequestHeader="true", ServiceAccountToken=jwt)
        token = await get_token(api)
        assert token.ComputeName == "host-1"  # type: ignore[attr-defined]
    assert emulator.calls == 1
