"""Absolute-form request targets: their authority is the host the Host check sees (RFC 9112)."""

from __future__ import annotations

import pytest

from service.emulator import Emulator
from tests.conftest import Broker
from tests.helpers import RawConnection
from tests.test_security import error_code, primed

PATH = "/fleets/fleet-1/computes/compute-1/token"


async def raw_get(broker: Broker, target: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    connection = await RawConnection.open(broker.url)
    try:
        return await connection.get(target, headers)  # Host: localhost, plus these
    finally:
        await connection.close()


@pytest.mark.parametrize(
    "authority", ["evil.example", "evil.example:8787", "localhost@evil.example", "[::2]"]
)
async def test_a_foreign_authority_is_refused_whatever_host_says(
    broker: Broker, emulator: Emulator, authority: str
) -> None:
    await primed(broker, emulator)  # the hit path remembers this path with Host: localhost
    status, body = await raw_get(broker, f"http://{authority}{PATH}")
    assert status == 403, body
    assert b"HostNotAllowed" in body and b"AuthToken" not in body
    assert emulator.calls == 1


@pytest.mark.parametrize("authority", ["localhost", "127.0.0.1:8787", "[::1]"])
async def test_a_local_authority_is_served(
    broker: Broker, emulator: Emulator, authority: str
) -> None:
    await primed(broker, emulator)
    status, body = await raw_get(broker, f"http://{authority}{PATH}")
    assert status == 200 and b"AuthToken" in body


async def test_the_authority_wins_over_a_foreign_host(broker: Broker, emulator: Emulator) -> None:
    # RFC 9112 3.2.2: with an absolute-form target, Host is ignored; the Host check still holds
    # for origin-form targets (test_security).
    await primed(broker, emulator)
    connection = await RawConnection.open(broker.url)
    try:
        connection.write(
            f"GET http://localhost{PATH} HTTP/1.1\r\nHost: evil.example\r\n\r\n".encode()
        )
        status, body = await connection.read_answer()
    finally:
        await connection.close()
    assert status == 200 and b"AuthToken" in body
    assert error_code(await broker.token(headers={"Host": "evil.example"})) == "HostNotAllowed"
