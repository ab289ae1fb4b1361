"""Only local callers get tokens: guard header, Host, proxies, CORS, caller secret, allow-list.

Each refusal is checked with a token already cached, so the hit path is the one being tested
(every test runs with and without it), and the emulator must see no further call.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.emulator import Emulator
from service.web.bounds import MAX_HEAD_BYTES
from tests.conftest import Broker
from tests.helpers import RawConnection, request_head

GUARD = {"X-Token-Broker-Request": "true"}


async def primed(broker: Broker, emulator: Emulator, **headers: str) -> None:
    # A miss, a hit, and a remembered hit: the hit path's memos hold this path and these
    # headers, so the refusals that follow prove a changed request is checked again.
    for _ in range(3):
        response = await broker.token(headers={**GUARD, **headers})
        assert response.status_code == 200, response.text
    assert emulator.calls == 1


def error_code(response) -> str:  # type: ignore[no-untyped-def]
    return response.json()["error"]["code"]


@pytest.fixture
async def guarded(start_broker):  # type: ignore[no-untyped-def]
    async with start_broker(require_request_header=True) as broker:
        yield broker


async def test_guard_header_is_required(guarded: Broker, emulator: Emulator) -> None:
    await primed(guarded, emulator)
    for headers in ({}, {"X-Token-Broker-Request": "false"}, {"X-Token-Broker-Request": ""}):
        response = await guarded.token(headers=headers)
        assert response.status_code == 403
        assert error_code(response) == "MissingRequestHeader"
        assert "AuthToken" not in response.text
    assert (await guarded.token(headers={"X-Token-Broker-Request": "TRUE"})).status_code == 200
    assert (await guarded.token("fleet-1", "never-fetched")).status_code == 403
    assert emulator.calls == 1


async def test_guard_header_can_be_turned_off(start_broker, emulator: Emulator) -> None:
    async with start_broker(require_request_header=False) as broker:
        assert (await broker.token()).status_code == 200


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8787", "10.0.0.5", "[::2]:80"])
async def test_foreign_host_is_refused(guarded: Broker, emulator: Emulator, host: str) -> None:
    await primed(guarded, emulator)
    response = await guarded.token(headers={**GUARD, "Host": host})
    assert response.status_code == 403
    assert error_code(response) == "HostNotAllowed"
    assert (await guarded.token("fleet-2", "c", headers={**GUARD, "Host": host})).status_code == 403
    assert emulator.calls == 1


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST:8787", "127.0.0.1", "127.0.0.1:1", "[::1]", "[::1]:8787"]
)
async def test_local_hosts_are_accepted(guarded: Broker, emulator: Emulator, host: str) -> None:
    assert (await guarded.token(headers={**GUARD, "Host": host})).status_code == 200


async def test_allowed_hosts_setting(start_broker, emulator: Emulator) -> None:
    async with start_broker(allowed_hosts=["broker.tokens.svc"]) as broker:
        ok = await broker.token(headers={"Host": "broker.tokens.svc:8787"})
        assert ok.status_code == 200
        assert (await broker.token(headers={"Host": "other.svc"})).status_code == 403
    assert emulator.calls == 1


async def test_probes_and_metrics_need_no_header_and_any_host(guarded: Broker) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        response = await guarded.client.get(path, headers={"Host": "10.1.2.3:8787"})
        assert response.status_code == 200, path


@pytest.mark.parametrize(
    "header",
    [
        {"X-Forwarded-For": "203.0.113.9"},
        {"Forwarded": "for=203.0.113.9"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"Via": "1.1 squid"},
    ],
)
async def test_proxied_requests_are_refused(
    guarded: Broker, emulator: Emulator, header: dict[str, str]
) -> None:
    await primed(guarded, emulator)
    response = await guarded.token(headers={**GUARD, **header})
    assert response.status_code == 403
    assert error_code(response) == "ProxiedRequest"
    assert emulator.calls == 1


async def test_no_cors(guarded: Broker, emulator: Emulator) -> None:
    await primed(guarded, emulator)
    preflight = await guarded.client.options(
        "/fleets/fleet-1/computes/compute-1/token",
        headers={
            "Origin": "https://evil.example",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "x-token-broker-request",
        },
    )
    assert preflight.status_code in (403, 404, 405)
    assert not any(h.lower().startswith("access-control-") for h in preflight.headers)
    simple = await guarded.token(headers={**GUARD, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in simple.headers
    assert emulator.calls == 1


def write_secret(path: Path, secret: str) -> None:
    # Write then rename, as Kubernetes and careful operators rotate files.
    staging = path.with_suffix(".new")
    staging.write_text(secret)
    os.replace(staging, path)


async def test_caller_secret(start_broker, emulator: Emulator, tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("  first-secret\n")
    async with start_broker(auth_token_file=str(secret_file)) as broker:
        for _ in range(3):  # a miss, a hit, a remembered hit
            ok = await broker.token(headers={"Authorization": "Bearer first-secret"})
            assert ok.status_code == 200
        for authorization in (None, "Bearer wrong", "Basic first-secret", "first-secret", "Bearer"):
            headers = {"Authorization": authorization} if authorization else {}
            response = await broker.token(headers=headers)
            assert response.status_code == 401, authorization
            assert response.headers["www-authenticate"] == "Bearer"
            assert error_code(response) == "Unauthenticated"
        assert (await broker.token("fleet-2", "c")).status_code == 401
        assert emulator.calls == 1

        write_secret(secret_file, "second-secret")
        assert (
            await broker.token(headers={"Authorization": "Bearer first-secret"})
        ).status_code == 401
        for _ in range(3):
            rotated = await broker.token(headers={"Authorization": "Bearer second-secret"})
            assert rotated.status_code == 200

        # Rotated back by rename: the verdicts remembered for this secret were voided with it.
        write_secret(secret_file, "first-secret")
        assert (
            await broker.token(headers={"Authorization": "Bearer second-secret"})
        ).status_code == 401

        # Rewritten in place, same inode: the size and mtime change still tell.
        secret_file.write_text("third-secret-longer")
        assert (
            await broker.token(headers={"Authorization": "Bearer third-secret-longer"})
        ).status_code == 200
        # A moment with no file (a rotation half done) keeps the last secret.
        secret_file.unlink()
        assert (
            await broker.token(headers={"Authorization": "Bearer third-secret-longer"})
        ).status_code == 200
    assert emulator.calls == 1


async def test_fleet_allow_list(start_broker, emulator: Emulator) -> None:
    async with start_broker(allowed_fleets=["fleet-ok", "fleet-also"]) as broker:
        assert (await broker.token("fleet-ok", "c")).status_code == 200
        for fleet in ("fleet-other", "fleet-ok2"):
            response = await broker.token(fleet, "c")
            assert response.status_code == 403
            assert error_code(response) == "FleetNotAllowed"
    assert emulator.calls == 1


async def test_oversized_requests(broker: Broker, emulator: Emulator) -> None:
    await primed(broker, emulator)
    long_path = "/fleets/fleet-1/computes/" + "a" * 5000 + "/token"
    assert (await broker.client.get(long_path)).status_code == 414
    big = await broker.token(headers={"X-Padding": "x" * 20_000})
    assert big.status_code == 431 and error_code(big) == "HeadersTooLarge"
    many = await broker.token(headers={f"X-H{i}": "1" for i in range(100)})
    assert many.status_code == 431
    assert emulator.calls == 1


async def test_inflight_cap_refuses_new_keys_not_joiners(start_broker, emulator: Emulator):
    import asyncio

    emulator.latency = 3  # the two fetches must still be in flight when c9 asks, under load too
    async with start_broker(max_inflight=2) as broker:
        first = [asyncio.create_task(broker.token("fleet-1", f"c{i}")) for i in range(2)]
        await emulator.wait_for_calls(2)
        joiners = [asyncio.create_task(broker.token("fleet-1", "c0")) for _ in range(20)]
        refused = await broker.token("fleet-1", "c9")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] and error_code(refused) == "TooManyInflightFetches"
        results = await asyncio.gather(*first, *joiners)
    assert {r.status_code for r in results} == {200}
    assert emulator.calls == 2


async def test_bad_path_flood_does_not_grow_state(broker: Broker, emulator: Emulator) -> None:
    await primed(broker, emulator)
    before = (await broker.client.get("/metrics")).text.count("\n")
    for i in range(600):
        await broker.client.get(f"/fleets/bad_{i}/computes/x{i}/token")
        await broker.client.get(f"/nope/{i}")
    assert len(broker.cache) == 1 and broker.cache.inflight == 0
    assert (await broker.client.get("/metrics")).text.count("\n") == before  # no new series
    assert emulator.calls == 1


async def test_hit_path_memos_stay_bounded(start_broker, emulator: Emulator) -> None:
    # Every spelling of one path is served, and so remembered: a flood of spellings or of
    # header sets must empty the memos, not grow them.
    name = "abcdefghij"
    async with start_broker(cache_max_entries=300) as broker:
        connection = await RawConnection.open(broker.url)
        try:
            for i in range(400):
                spelled = "".join(f"%{ord(c):02X}" if i >> n & 1 else c for n, c in enumerate(name))
                status, _ = await connection.get(f"/fleets/fleet-1/computes/{spelled}/token")
                assert status == 200
            for i in range(300):
                status, _ = await connection.get(
                    f"/fleets/fleet-1/computes/{name}/token", {"X-Request-Id": str(i)}
                )
                assert status == 200
        finally:
            await connection.close()
        front = broker.server.config.app
        assert len(front._served) <= 300 and len(front._passed) <= 256
    assert emulator.calls == 1


async def test_a_full_memo_keeps_what_it_holds(start_broker, emulator: Emulator) -> None:
    # At its bound, remembering a path or verdict it already holds must not empty it: that
    # sent every hit through the checked path, and each of those emptied the other memo.
    async with start_broker(cache_max_entries=256) as broker:
        connection = await RawConnection.open(broker.url)
        try:
            for i in range(256):
                for _ in range(2):  # a miss, then a hit: remembered
                    assert (await connection.get(f"/fleets/fleet-1/computes/c{i}/token"))[0] == 200
        finally:
            await connection.close()
        front = broker.server.config.app
        if not front._serve_tokens:  # FastAPI answers every request: nothing is remembered
            assert not front._served and not front._passed
            return
        assert len(front._served) == len(front._passed) == 256
        scope = {
            "raw_path": b"/fleets/fleet-1/computes/c7/token",
            "query_string": b"",
            "headers": [(b"host", b"localhost")],
        }
        front._remember_hit(scope, ("fleet-1", "c7"), False, None, float("inf"))
        assert len(front._served) == len(front._passed) == 256
    assert emulator.calls == 256


def test_empty_or_unreadable_secret_file_stops_start_up(tmp_path: Path) -> None:
    from service.web.guard import RequestGuard
    from tests.conftest import make_settings

    empty = tmp_path / "empty"
    empty.write_text("  \n")
    with pytest.raises(ValueError, match="empty"):
        RequestGuard(make_settings(auth_token_file=str(empty)))
    unreadable = tmp_path / "unreadable"
    unreadable.write_text("secret")
    unreadable.chmod(0)
    if os.geteuid() != 0:  # root reads anything
        with pytest.raises(ValueError, match="cannot read"):
            RequestGuard(make_settings(auth_token_file=str(unreadable)))


async def send_until_closed(broker: Broker, data: bytes) -> bytes:
    """Write raw bytes, then read until the broker closes the connection."""
    import asyncio

    host, port = broker.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout=10)
    except ConnectionResetError:
        return b"HTTP/1.1 431"  # closed before we finished writing: refused all the same
    finally:
        writer.close()


@pytest.mark.parametrize("where", ["url", "header"])
async def test_huge_request_heads_are_cut_off_while_arriving(
    broker: Broker, emulator: Emulator, where: str
) -> None:
    if where == "url":
        answer = await send_until_closed(broker, b"GET /fleets/" + b"a" * 1_000_000)
    else:
        head = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: "
        answer = await send_until_closed(broker, head + b"b" * 1_000_000)
    assert answer.startswith(b"HTTP/1.1 431")
    assert (await broker.client.get("/healthz")).status_code == 200
    assert emulator.calls == 0


@pytest.mark.parametrize("count", [250, 2000])
async def test_any_number_of_small_pipelined_requests_is_answered_in_order(
    broker: Broker, emulator: Emulator, count: int
) -> None:
    targets = [
        "/healthz" if i % 3 == 0 else f"/fleets/fleet-1/computes/c-{i % 2}/token"
        for i in range(count)
    ]
    headers = {"X-Token-Broker-Request": "true", "User-Agent": "game-server/1.0"}
    data = b"".join(request_head(target, headers) for target in targets)
    # 250 are 29 KB in one write: past the head bound, which once refused them all at once.
    # The bound is per request head.
    assert len(data) > MAX_HEAD_BYTES
    connection = await RawConnection.open(broker.url)
    try:
        connection.write(data)
        answers = [await connection.read_answer() for _ in targets]
    finally:
        await connection.close()
    assert all(status == 200 for status, _ in answers)
    for target, (_, body) in zip(targets, answers, strict=True):  # in order, each its own
        expected = b'"status":"ok"' if target == "/healthz" else b'"ComputeName":"c-'
        assert expected in body.replace(b" ", b""), (target, body[:80])
    assert emulator.calls == 2


async def test_a_head_past_the_bound_after_pipelined_ones_is_cut_off(broker: Broker) -> None:
    small = request_head("/healthz") * 50
    huge = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"b" * 1_000_000
    answer = await send_until_closed(broker, small + huge)
    assert b"HTTP/1.1 431" in answer
    assert (await broker.client.get("/healthz")).status_code == 200


async def test_a_large_body_is_cut_off_too(broker: Broker, emulator: Emulator) -> None:
    size = 40_000  # past the 24 KiB bound, small enough to be written before the answer
    head = f"POST /healthz HTTP/1.1\r\nHost: localhost\r\nContent-Length: {size}\r\n\r\n"
    answer = await send_until_closed(broker, head.encode() + b"x" * size)
    # No endpoint takes a body; one this large is refused while it arrives, not buffered.
    assert b"HTTP/1.1 431" in answer and b"HTTP/1.1 200" not in answer
    assert (await broker.client.get("/healthz")).status_code == 200
    assert emulator.calls == 0


async def test_two_host_headers_are_refused(broker: Broker, emulator: Emulator) -> None:
    await primed(broker, emulator)
    connection = await RawConnection.open(broker.url)
    try:
        target = "/fleets/fleet-1/computes/compute-1/token"
        status, body = await connection.get(target, {"Host": "evil.example"})  # plus localhost
    finally:
        await connection.close()
    assert status == 403 and b"AuthToken" not in body
    assert emulator.calls == 1


async def test_no_redirect_echoes_the_host(broker: Broker, emulator: Emulator) -> None:
    response = await broker.client.get(
        "/fleets/fleet-1/computes/c/token/", headers={"Host": "evil.example"}
    )
    assert response.status_code in (400, 403, 404)
    assert "location" not in response.headers
    assert emulator.calls == 0


async def test_unreadable_secret_file_keeps_the_last_secret(
    start_broker, emulator: Emulator, tmp_path: Path
) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("kept-secret")
    async with start_broker(auth_token_file=str(secret_file)) as broker:
        ok = {"Authorization": "Bearer kept-secret"}
        assert (await broker.token(headers=ok)).status_code == 200
        secret_file.unlink()
        secret_file.mkdir()  # now a directory: reading it fails
        for _ in range(2):
            response = await broker.token(headers=ok)
            assert response.status_code == 200
            assert (await broker.token(headers={"Authorization": "Bearer x"})).status_code == 401
        secret_file.rmdir()
        secret_file.write_text("new-secret-after")
        assert (
            await broker.token(headers={"Authorization": "Bearer new-secret-after"})
        ).status_code == 200
    assert emulator.calls == 1
