"""Clients no one here wrote, against the emulator's control plane: the AWS CLI (its own venv,
as .ci/run makes it) and the AWS SDK for JavaScript v3 (tests/js, installed by `npm ci`).

Missing clients skip the tests locally and fail them in CI, so CI can never skip them silently.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from service.emulator import Emulator
from tests.emulator_helpers import FLEET, LOCATION, GameServer, serving

ROOT = Path(__file__).resolve().parents[1]
JS_DIR = ROOT / "tests" / "js"


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{what} is missing in CI: .ci/run installs it")
    pytest.skip(f"{what} is not installed (see .ci/run)")


def aws_cli() -> str:
    path = os.environ.get("AWS_CLI_PATH") or str(ROOT / ".venv-awscli" / "bin" / "aws")
    if not os.access(path, os.X_OK):
        _missing(f"the AWS CLI ({path})")
    return path


def node() -> str:
    found = shutil.which("node")
    if found is None or not (JS_DIR / "node_modules" / "@aws-sdk" / "client-gamelift").is_dir():
        _missing("node with tests/js/node_modules (npm ci)")
    assert found is not None
    return found


def client_env(home: Path) -> dict[str, str]:
    """Dummy credentials and a region, and nothing from the real AWS config."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_REGION": "us-west-2",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
        "AWS_PAGER": "",
        "NODE_NO_WARNINGS": "1",  # the SDK's notice about node 22
    }


async def run(argv: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_aws_cli_registers_describes_tokens_and_creates_a_game_session(tmp_path):
    cli = aws_cli()
    emulator = Emulator(strict=True, fleets=[FLEET])
    async with serving(emulator) as url:
        env = client_env(tmp_path)

        async def aws(*args: str) -> dict[str, Any]:
            argv = [cli, "gamelift", *args, "--endpoint-url", url, "--output", "json"]
            status, out, err = await run(argv, env)
            assert status == 0, err
            return dict(json.loads(out))

        compute = (
            await aws(
                "register-compute",
                "--fleet-id",
                FLEET,
                "--compute-name",
                "host-1",
                "--ip-address",
                "10.0.0.5",
                "--location",
                LOCATION,
            )
        )["Compute"]
        endpoint = url.replace("http://", "ws://") + "/sdk"
        assert compute["GameLiftServiceSdkEndpoint"] == endpoint
        assert compute["ComputeStatus"] == "ACTIVE"
        described = await aws("describe-compute", "--fleet-id", FLEET, "--compute-name", "host-1")
        assert described["Compute"]["IpAddress"] == "10.0.0.5"
        token = await aws("get-compute-auth-token", "--fleet-id", FLEET, "--compute-name", "host-1")
        assert token["AuthToken"] == emulator.issued_tokens[-1]
        # CLI v1 prints a timestamp as it came on the wire (epoch seconds) by default.
        assert token["ExpirationTimestamp"] == pytest.approx(emulator.clock() + 3600, abs=60)

        server = GameServer(endpoint, FLEET, "host-1", token["AuthToken"])
        await server.connect()
        await server.process_ready(port=7777)
        created = await aws(
            "create-game-session",
            "--fleet-id",
            FLEET,
            "--maximum-player-session-count",
            "4",
            "--game-properties",
            "Key=mode,Value=ctf",
        )
        push = await server.push("CreateGameSession")
        assert push["GameSessionId"] == created["GameSession"]["GameSessionId"]
        assert push["GameProperties"] == {"mode": "ctf"}
        await server.close()

        argv = [cli, "gamelift", "describe-compute", "--fleet-id", FLEET, "--compute-name", "nope"]
        status, _, err = await run([*argv, "--endpoint-url", url], env)
        assert status != 0 and "NotFoundException" in err


async def test_the_javascript_sdk_registers_describes_and_gets_a_token(tmp_path):
    executable = node()
    emulator = Emulator(strict=True, fleets=[FLEET])
    async with serving(emulator) as url:
        env = client_env(tmp_path)

        async def js(command: str, **fields: Any) -> dict[str, Any]:
            argv = [executable, "client.mjs", url, command, json.dumps(fields)]
            status, out, err = await run(argv, env, cwd=JS_DIR)
            assert status == 0, err
            return dict(json.loads(out))

        registered = await js(
            "RegisterCompute",
            FleetId=FLEET,
            ComputeName="host-1",
            IpAddress="10.0.0.5",
            Location=LOCATION,
            DnsName="host-1.example",
        )
        assert registered["ok"], registered
        compute = registered["answer"]["Compute"]
        assert compute["GameLiftServiceSdkEndpoint"] == url.replace("http://", "ws://") + "/sdk"
        assert compute["DnsName"] == "host-1.example"
        described = await js("DescribeCompute", FleetId=FLEET, ComputeName="host-1")
        assert described["answer"]["Compute"]["ComputeArn"] == compute["ComputeArn"]
        token = await js("GetComputeAuthToken", FleetId=FLEET, ComputeName="host-1")
        assert token["ok"], token
        assert token["answer"]["AuthToken"] == emulator.issued_tokens[-1]
        expiry = datetime.datetime.fromisoformat(token["answer"]["ExpirationTimestamp"])
        assert expiry.timestamp() == pytest.approx(emulator.clock() + 3600, abs=60)
        # The same token again: GameLift re-mints only under 15 minutes left.
        again = await js("GetComputeAuthToken", FleetId=FLEET, ComputeName="host-1")
        assert again["answer"]["AuthToken"] == token["answer"]["AuthToken"]

        missing = await js("DescribeCompute", FleetId=FLEET, ComputeName="nope")
        assert (missing["ok"], missing["name"], missing["status"]) == (
            False,
            "NotFoundException",
            400,
        )
        conflict = await js(
            "RegisterCompute",
            FleetId=FLEET,
            ComputeName="host-1",
            IpAddress="10.9.9.9",
            Location=LOCATION,
        )
        assert conflict["name"] == "ConflictException"


def test_a_missing_client_fails_in_ci_and_skips_elsewhere(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("AWS_CLI_PATH", "/nonexistent/aws")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="missing in CI"):
        aws_cli()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception):
        aws_cli()
    monkeypatch.setenv("PATH", "/nonexistent")  # no node either
    with pytest.raises(pytest.skip.Exception):
        node()
