"""deploy/examples/start-game-server.sh, the shell form of `exec`, run with `sh` (dash when
present) against a stand-in broker; and the copy in docs/clients.md is the same bytes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.broker_standin import (
    COMPUTE,
    FLEET,
    TOKEN,
    Answer,
    StandIn,
    error,
    parameters,
    refusing_port,
    serving_tcp,
    serving_unix,
)
from tests.processes import clean_env

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "deploy" / "examples" / "start-game-server.sh"
DOCS = ROOT / "docs" / "clients.md"
SHELL = shutil.which("dash") or shutil.which("sh") or "sh"
REPORT = (
    "import json, os, sys;"
    "json.dump({'env': dict(os.environ), 'pid': os.getpid()}, open(sys.argv[1], 'w'))"
)

# Well-formed values a stale environment might hold.
INHERITED = {
    "WEBSOCKET_URL": "wss://stale.example",
    "AUTH_TOKEN": "stale-token",
    "FLEET_ID": FLEET,
    "HOST_ID": COMPUTE,
    "PROCESS_ID": "00000000-0000-0000-0000-000000000000",
}

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the snippet needs curl")


def run(report: Path, timeout: float = 40, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SHELL, str(SCRIPT), sys.executable, "-c", REPORT, str(report)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=clean_env(FLEET_ID=FLEET, COMPUTE_NAME=COMPUTE, **env),
    )


def assert_failed_closed(done: subprocess.CompletedProcess[str], report: Path, says: str) -> None:
    assert done.returncode != 0, done
    assert not report.exists(), "COMMAND ran"
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert TOKEN not in done.stderr + done.stdout


def test_up_the_command_gets_the_five_values(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    answer = parameters()
    standin = StandIn(Answer(body=answer))
    with serving_tcp(standin) as broker:
        done = run(report, BROKER_URL=broker.url, GAMELIFT_SDK_AUTH_TOKEN="stale")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""  # the answer is never echoed
    env = json.loads(report.read_text())["env"]
    assert {k: v for k, v in env.items() if k.startswith("GAMELIFT_SDK_")} == {
        "GAMELIFT_SDK_WEBSOCKET_URL": answer["WebSocketUrl"],
        "GAMELIFT_SDK_AUTH_TOKEN": TOKEN,
        "GAMELIFT_SDK_FLEET_ID": FLEET,
        "GAMELIFT_SDK_HOST_ID": COMPUTE,
        "GAMELIFT_SDK_PROCESS_ID": answer["ProcessId"],
    }
    (asked,) = standin.asked
    assert asked.path == f"/fleets/{FLEET}/computes/{COMPUTE}/server-parameters"
    assert asked.headers["X-Token-Broker-Request"] == "true"
    assert asked.headers["Accept"] == "text/plain"


def test_down_exits_non_zero_and_starts_nothing(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    url = f"http://127.0.0.1:{refusing_port()}"
    started = time.monotonic()
    done = run(report, BROKER_URL=url, BROKER_TIMEOUT="2")
    assert_failed_closed(done, report, "cannot reach the broker")
    assert time.monotonic() - started < 30


def test_retry_after_is_honoured(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    busy = error(503, "InternalServiceException", "failing", **{"Retry-After": "2"})
    standin = StandIn(busy, Answer())
    with serving_tcp(standin) as broker:
        done = run(report, BROKER_URL=broker.url)
    assert done.returncode == 0, done.stderr
    first, second = standin.asked
    assert second.at - first.at >= 2.0
    assert json.loads(report.read_text())["env"]["GAMELIFT_SDK_AUTH_TOKEN"] == TOKEN


def test_a_refusal_is_final(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    standin = StandIn(error(403, "MissingRequestHeader", "send the header"))
    with serving_tcp(standin) as broker:
        done = run(report, BROKER_URL=broker.url)
    assert_failed_closed(done, report, "the broker refused: HTTP 403")
    assert len(standin.asked) == 1


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (parameters(AuthToken=""), "no valid GAMELIFT_SDK_AUTH_TOKEN"),
        ({k: v for k, v in parameters().items() if k != "ProcessId"}, "GAMELIFT_SDK_PROCESS_ID"),
        (parameters(ProcessId="not-a-uuid"), "no valid GAMELIFT_SDK_PROCESS_ID"),
        (parameters(WebSocketUrl="http://x"), "no valid GAMELIFT_SDK_WEBSOCKET_URL"),
        (parameters(AuthToken="x'; touch /tmp/pwned; '"), "no valid GAMELIFT_SDK_AUTH_TOKEN"),
        (parameters(HostId="other-host"), "another compute"),
    ],
    ids=["empty-token", "missing-process-id", "bad-uuid", "http-url", "quote", "other-host"],
)
def test_a_bad_answer_starts_nothing(tmp_path: Path, body: dict[str, object], says: str) -> None:
    report = tmp_path / "report.json"
    standin = StandIn(Answer(body=body))
    with serving_tcp(standin) as broker:
        # Values inherited from the environment must not fill the gap.
        inherited = {f"GAMELIFT_SDK_{n}": v for n, v in INHERITED.items()}
        done = run(report, BROKER_URL=broker.url, **inherited)
    assert_failed_closed(done, report, says)


def test_the_secret_is_on_no_command_line(tmp_path: Path) -> None:
    # A curl on PATH that records its argv, then runs the real one.
    real = shutil.which("curl")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    argv_log = tmp_path / "argv"
    wrapper = bin_dir / "curl"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >>"{argv_log}"\nexec {real} "$@"\n')
    wrapper.chmod(0o755)
    secret = tmp_path / "secret"
    secret.write_text("  s3cret-value\n")
    report = tmp_path / "report.json"
    standin = StandIn()
    with serving_tcp(standin) as broker:
        done = run(
            report,
            BROKER_URL=broker.url,
            BROKER_SECRET_FILE=str(secret),
            PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        )
    assert done.returncode == 0, done.stderr
    assert standin.asked[0].headers["Authorization"] == "Bearer s3cret-value"
    logged = argv_log.read_text()
    assert logged.strip() == "--config -"
    assert "s3cret" not in logged and TOKEN not in logged


def test_unix_socket(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    standin = StandIn()
    with serving_unix(standin, str(tmp_path / "b.sock")) as path:
        done = run(report, BROKER_URL="http://localhost", BROKER_UDS=path)
    assert done.returncode == 0, done.stderr
    assert json.loads(report.read_text())["env"]["GAMELIFT_SDK_HOST_ID"] == COMPUTE


def test_the_answer_file_is_gone_once_the_server_runs(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    standin = StandIn()
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    with serving_tcp(standin) as broker:
        done = run(report, BROKER_URL=broker.url, TMPDIR=str(scratch))
    assert done.returncode == 0, done.stderr
    assert list(scratch.iterdir()) == [], "the answer (with the token) was left behind"


def test_the_docs_show_the_very_same_script() -> None:
    text = DOCS.read_text()
    blocks = re.findall(r"<!-- start-game-server.sh -->\n```sh\n(.*?)```\n", text, re.DOTALL)
    assert len(blocks) == 1, "docs/clients.md must hold the script once, after its marker"
    assert blocks[0].encode() == SCRIPT.read_bytes()
