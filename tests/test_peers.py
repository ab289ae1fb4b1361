"""TOKEN_BROKER_ALLOWED_PEERS: token requests from other TCP peers get 403; unix sockets pass."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from service.config import Settings, describe_error
from service.emulator import Emulator
from tests.conftest import Broker
from tests.processes import broker_process
from tests.test_security import error_code, primed

PATH = "/fleets/fleet-1/computes/compute-1/token"
GUARD = {"X-Token-Broker-Request": "true"}


def from_address(broker: Broker, address: str) -> httpx.AsyncClient:
    """A client whose connections come from `address` (any 127.x is this host's loopback)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=broker.url, transport=transport, timeout=30)


async def test_a_peer_outside_the_allowed_networks_is_refused_even_after_a_hit(
    start_broker,  # type: ignore[no-untyped-def]
    emulator: Emulator,
) -> None:
    async with start_broker(allowed_peers="127.0.0.1/32, ::1") as broker:
        await primed(broker, emulator)  # from 127.0.0.1: the hit path remembers the verdict
        async with from_address(broker, "127.0.0.2") as outsider:
            for _ in range(3):  # same path, same headers: only the peer differs
                response = await outsider.get(PATH, headers=GUARD)
                assert response.status_code == 403, response.text
                assert error_code(response) == "PeerNotAllowed"
                assert "AuthToken" not in response.text
        assert emulator.calls == 1
        assert (await broker.token(headers=GUARD)).status_code == 200  # 127.0.0.1 still served


async def test_by_default_only_loopback_peers_pass(broker: Broker, emulator: Emulator) -> None:
    # Loopback is 127.0.0.0/8, so 127.0.0.2 passes by default: the refusal above is the setting's.
    async with from_address(broker, "127.0.0.2") as other:
        assert (await other.get(PATH)).status_code == 200
    assert Settings().allowed_peers == ["127.0.0.0/8", "::1/128"]


async def test_a_refused_peer_learns_nothing_about_the_path(
    start_broker,  # type: ignore[no-untyped-def]
    emulator: Emulator,
) -> None:
    async with start_broker(allowed_peers="10.0.0.0/8") as broker:
        for target in (PATH, "/fleets/fleet_bad/computes/c/token"):
            response = await broker.client.get(target)
            assert response.status_code == 403 and error_code(response) == "PeerNotAllowed"
        assert (await broker.client.get("/healthz")).status_code == 200  # probes are not tokens
    assert emulator.calls == 0


def test_unix_socket_peers_always_pass(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "broker.sock"
    with broker_process(
        "--emulator", "--port", "0", "--uds", str(path), TOKEN_BROKER_ALLOWED_PEERS="10.0.0.0/8"
    ) as process:
        url = process.url()
        process.wait_for_line('"event": "ready"')
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(path))) as local:
            assert local.get(f"http://localhost{PATH}", headers=GUARD).status_code == 200
        refused = httpx.get(f"{url}{PATH}", headers=GUARD)
        assert refused.status_code == 403 and error_code(refused) == "PeerNotAllowed"


@pytest.mark.parametrize("value", ["10.0.0.0/33", "localhost", "10.0.0.0/8,nope"])
def test_a_bad_network_stops_start_up(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("TOKEN_BROKER_ALLOWED_PEERS", value)
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert describe_error(caught.value).startswith("invalid setting TOKEN_BROKER_ALLOWED_PEERS:")
