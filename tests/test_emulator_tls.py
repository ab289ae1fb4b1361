"""The emulator over TLS: the API for botocore and `wss://` for the SDK, with its certificate;
and its command line (`python -m service.emulator`) run as a subprocess."""

from __future__ import annotations

import asyncio
import re
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import aioboto3
import botocore.config
import httpx
import pytest

from service.emulator import Emulator
from service.emulator.tls import self_signed
from tests.emulator_helpers import FLEET, LOCATION, GameServer, serving

ROOT = Path(__file__).resolve().parents[1]
SESSION = aioboto3.Session(
    aws_access_key_id="test", aws_secret_access_key="test", region_name="us-west-2"
)


async def test_api_and_websocket_over_tls(tmp_path: Path):
    cert, key = self_signed(tmp_path, [])
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    emulator = Emulator(strict=True, fleets=[FLEET])
    tls = {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    async with serving(emulator, **tls) as url:
        assert url.startswith("https://")
        config = botocore.config.Config(retries={"total_max_attempts": 1})
        async with SESSION.client(
            "gamelift", endpoint_url=url, verify=str(cert), config=config
        ) as client:
            compute = await client.register_compute(
                FleetId=FLEET, ComputeName="host-1", IpAddress="10.0.0.5", Location=LOCATION
            )
            endpoint = compute["Compute"]["GameLiftServiceSdkEndpoint"]
            assert endpoint == url.replace("https://", "wss://") + "/sdk"
            token = await client.get_compute_auth_token(FleetId=FLEET, ComputeName="host-1")
        context = ssl.create_default_context(cafile=str(cert))
        server = GameServer(endpoint, FLEET, "host-1", token["AuthToken"], ssl_context=context)
        await server.connect()
        assert (await server.process_ready())["StatusCode"] == 200
        await server.close()


class Child:
    """`python -m service.emulator ARGS` with its stderr read line by line in a thread."""

    def __init__(self, *args: str, python: list[str] | None = None) -> None:
        self.process = subprocess.Popen(
            [*(python or [sys.executable, "-m", "service.emulator"]), *args],
            cwd=ROOT,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    async def line(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        async with asyncio.timeout(timeout):
            while True:
                for line in list(self.lines):
                    if match := re.search(pattern, line):
                        return match
                if self.process.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(f"exited: {''.join(self.lines)}")
                await asyncio.sleep(0.02)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()


@contextmanager
def child(*args: str, python: list[str] | None = None) -> Iterator[Child]:
    running = Child(*args, python=python)
    try:
        yield running
    finally:
        running.stop()


async def test_command_line_strict_tls_and_rate_limits(tmp_path: Path):
    args = ["--port", "0", "--strict", "--fleet", FLEET, "--location", "custom-home"]
    args += ["--rate-limits", "aws", "--rate-limit", "GetComputeAuthToken=2/1"]
    args += ["--token-lifetime", "1200", "--no-token-reuse", "--refresh-lead", "60"]
    args += ["--refresh-repeat", "7", "--fault", "internal", "--fault-action", "ListCompute"]
    with child(*args, "--tls", "--tls-dir", str(tmp_path)) as emulator:
        cert = (await emulator.line(r"TLS certificate: (\S+)")).group(1)
        assert Path(cert) == tmp_path / "cert.pem"
        url = (await emulator.line(r"running on (https://127\.0\.0\.1:\d+)")).group(1)
        async with httpx.AsyncClient(
            base_url=url, verify=ssl.create_default_context(cafile=cert)
        ) as http:
            state = (await http.get("/_emulator/state")).json()
    assert state["strict"] is True
    assert state["fleets"] == [{"FleetId": FLEET, "Locations": ["custom-home"]}]
    assert state["rate_limits"]["GetComputeAuthToken"] == {"burst": 2, "rate": 1}
    assert state["rate_limits"]["ListCompute"] == {"burst": 30, "rate": 30}
    settings = ("token_lifetime", "token_reuse", "refresh_lead", "refresh_repeat")
    assert [state[name] for name in settings] == [1200, False, 60, 7]
    assert (state["fault"], state["fault_action"]) == ("internal", "ListCompute")


async def test_tls_without_cryptography_is_one_clear_line():
    # The package made unimportable, as on a machine without the [tls] extra.
    code = "import sys; sys.modules['cryptography'] = None; "
    code += "from service.emulator.__main__ import main; main(['--tls', '--port', '0'])"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "python -m service.emulator: --tls needs the cryptography package: "
        "pip install 'gamelift-token-broker[tls]'"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strict"], "--strict needs at least one --fleet"),
        (["--rate-limit", "Nope=1/1"], "expected ACTION=BURST/RATE"),
        (["--rate-limit", "ListCompute=0/1"], "burst must be at least 1"),
    ],
)
def test_command_line_refuses_bad_flags(args: list[str], message: str):
    result = subprocess.run(
        [sys.executable, "-m", "service.emulator", "--port", "0", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr


def test_help_documents_every_flag_with_defaults():
    result = subprocess.run(
        [sys.executable, "-m", "service.emulator", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    flags = ["--host", "--port", "--region", "--strict", "--fleet", "--location"]
    flags += ["--token-lifetime", "--no-token-reuse", "--refresh-lead", "--rate-limits"]
    flags += ["--rate-limit", "--latency", "--fault", "--fault-count", "--tls", "--tls-dir"]
    for flag in flags:
        assert flag in text
    assert text.count("default:") >= len(flags)
