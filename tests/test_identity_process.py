"""Caller identity in a real broker process (`python -m service --emulator`): real signed JWTs,
a JWKS file, real time. The memo of verdicts must not outlive a short-lived token."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from service.identity.verify import LEEWAY_SECONDS
from tests.helpers import wait_until
from tests.identity_helpers import (
    AUDIENCE,
    ISSUER,
    Pod,
    bearer,
    claims,
    private_key,
    sign,
    write_jwks,
)
from tests.processes import Process, broker_process, clean_env

GUARD = {"X-Token-Broker-Request": "true"}
PATH = "/fleets/fleet-1234/computes/gs-0/token"


def identity_env(jwks_file: Path, **extra: str) -> dict[str, str]:
    return {
        "TOKEN_BROKER_KUBERNETES_AUDIENCE": AUDIENCE,
        "TOKEN_BROKER_KUBERNETES_ISSUER": ISSUER,
        "TOKEN_BROKER_KUBERNETES_JWKS_FILE": str(jwks_file),
        **extra,
    }


def fetches(process: Process) -> int:
    return sum('"event": "upstream_fetch"' in line for line in process.lines)


@pytest.fixture
def jwks_file(tmp_path: Path) -> Path:
    path = tmp_path / "jwks.json"
    write_jwks(path, k1=private_key("rsa"))
    return path


def test_a_pod_proves_itself_and_gets_only_its_own_compute(jwks_file: Path) -> None:
    env = identity_env(jwks_file)
    with broker_process("--emulator", "--port", "0", **env) as process:
        url = process.url()
        process.wait_for_line('"event": "ready"')
        jwt = sign(claims(Pod(name="gs-0")), private_key("rsa"), "k1")
        with httpx.Client(base_url=url, headers=GUARD) as client:
            ok = client.get(PATH, headers=bearer(jwt))
            assert ok.status_code == 200, ok.text
            assert ok.json()["ComputeName"] == "gs-0"
            other = client.get("/fleets/fleet-1234/computes/gs-1/token", headers=bearer(jwt))
            assert other.status_code == 403
            assert other.json()["error"]["code"] == "NotOwnCompute"
            missing = client.get(PATH)
            assert missing.status_code == 401
            assert missing.json()["error"]["code"] == "Unauthenticated"
            forged = sign(claims(Pod(name="gs-0")), private_key("rsa", "attacker"), "k1")
            bad = client.get(PATH, headers=bearer(forged))
            assert bad.status_code == 401
            assert bad.json()["error"]["code"] == "InvalidIdentityToken"
        wait_until(lambda: sum('"token request refused"' in line for line in process.lines) >= 3)
        assert fetches(process) == 1
        for line in process.lines:
            assert jwt.rsplit(".", 1)[1] not in line and forged.rsplit(".", 1)[1] not in line
            json.loads(line)


def test_an_expired_token_is_refused_after_its_verdict_was_remembered(jwks_file: Path) -> None:
    with broker_process("--emulator", "--port", "0", **identity_env(jwks_file)) as process:
        url = process.url()
        process.wait_for_line('"event": "ready"')
        with httpx.Client(base_url=url, headers=GUARD) as client:
            # Warm the key first, so the short token's seconds are not spent on the miss.
            warm = sign(claims(Pod(name="gs-0")), private_key(), "k1")
            assert client.get(PATH, headers=bearer(warm)).status_code == 200
            lifetime = 3
            issued = time.time()
            short = sign(
                claims(Pod(name="gs-0"), now=issued, lifetime=lifetime), private_key("rsa"), "k1"
            )
            # A checked hit, then hits answered from memory for this very header set.
            for _ in range(5):
                assert client.get(PATH, headers=bearer(short)).status_code == 200
            expires = int(issued) + lifetime
            assert time.time() < expires, "the machine is too slow for a 3 s token"
            statuses: list[int] = []

            def refused() -> bool:
                statuses.append(client.get(PATH, headers=bearer(short)).status_code)
                return statuses[-1] == 401

            wait_until(refused, timeout=expires + LEEWAY_SECONDS + 15 - time.time())
            # Refused no later than the leeway allows, and never before the token expired.
            assert time.time() < expires + LEEWAY_SECONDS + 2
            assert set(statuses[:-1]) <= {200}
            body = client.get(PATH, headers=bearer(short)).json()
            assert body["error"]["code"] == "InvalidIdentityToken"
            assert "expired" in body["error"]["message"]
        assert fetches(process) == 1


K = "TOKEN_BROKER_KUBERNETES_"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"TOKEN_BROKER_AUTH_TOKEN_FILE": "/etc/hostname"}, "exclude each other"),
        ({f"{K}JWKS_FILE": "/nonexistent/jwks.json"}, f"{K}JWKS_FILE: cannot read"),
        ({f"{K}JWKS_FILE": "/dev/null"}, f"{K}JWKS_FILE: /dev/null: not JSON"),
        ({f"{K}ISSUER": ""}, f"{K}ISSUER"),
        ({f"{K}FLEETS": "games=fleet-1|oops"}, f"{K}FLEETS: not a fleet id: 'oops'"),
        ({f"{K}AUDIENCES": "x"}, f"did you mean {K}AUDIENCE?"),
    ],
)
def test_a_bad_identity_setting_stops_start_up_with_one_line(
    jwks_file: Path, env: dict[str, str], says: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--emulator", "--port", "0"],
        capture_output=True,
        text=True,
        env=clean_env(**identity_env(jwks_file, **env)),
        timeout=30,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert says in lines[0], lines[0]
