"""A real broker process whose system clock steps back: libfaketime moves only its wall clock."""

from __future__ import annotations

import glob
import json
import os
import time
from datetime import datetime

import httpx
import pytest

from service.emulator import Emulator
from tests.conftest import emulator_server, run_server
from tests.helpers import eventually
from tests.processes import broker_process

LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)
TOKEN_PATH = "/fleets/fleet-1/computes/host-1/token"
LIFETIME = 8.0  # refresh window 4 s, minimum validity 0.8 s: served for 7.2 s at most


@pytest.fixture
def libfaketime() -> str:
    if LIBFAKETIME is None:
        if os.environ.get("CI"):
            pytest.fail("libfaketime is missing; .ci/run installs Debian's faketime")
        pytest.skip("libfaketime is not installed (apt-get install faketime)")
    return LIBFAKETIME


async def test_a_backward_clock_step_never_extends_a_token(libfaketime: str, tmp_path) -> None:
    offset = tmp_path / "faketime"
    offset.write_text("+0\n")
    emulator = Emulator(token_lifetime=LIFETIME)  # on the real clock
    async with run_server(emulator_server(emulator)) as upstream:
        environment = {
            "LD_PRELOAD": libfaketime,
            # Re-read on every call, so rewriting the file steps the clock mid-run; monotonic
            # time (and so uvloop's) is left alone, as an NTP step leaves it.
            "FAKETIME_TIMESTAMP_FILE": str(offset),
            "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "AWS_ENDPOINT_URL_GAMELIFT": upstream,
            "AWS_REGION": "us-west-2",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "TOKEN_BROKER_REQUIRE_REQUEST_HEADER": "false",
            "TOKEN_BROKER_UPSTREAM_MAX_ATTEMPTS": "1",
        }
        with broker_process("--port", "0", **environment) as process:
            url = process.url()
            process.wait_for_line('"event": "ready"')
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                first = await client.get(TOKEN_PATH)
                received = time.monotonic()
                assert first.status_code == 200, first.text
                emulator.set_fault("internal")  # no refresh succeeds from here on
                offset.write_text("-600\n")  # the system clock steps back ten minutes

                async def still_served() -> bool:
                    return (await client.get(TOKEN_PATH)).status_code == 200

                async def refused() -> bool:
                    return not await still_served()

                # Before the fix the token was served 600 s past its real expiry.
                await eventually(refused, timeout=LIFETIME + 10, what="the token to go")
                gone = time.monotonic() - received
            lines = [json.loads(line) for line in process.lines if line.startswith("{")]
    assert gone <= LIFETIME + 2, gone
    # The step was real: the broker's own log stamps fell ten minutes behind.
    failed = next(line for line in lines if line.get("msg") == "upstream fetch failed")
    behind = time.time() - datetime.fromisoformat(failed["ts"]).timestamp()
    assert 500 < behind < 700, behind
