"""The game server examples in docs/clients.md: the C++ ones compile (against declarations
transcribed from the SDK's headers), and the Python one works against a stand-in broker."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.broker_standin import COMPUTE, FLEET, TOKEN, Answer, StandIn, error, serving_tcp

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "clients.md"
SDK = Path(__file__).resolve().parent / "sdk"
GXX = shutil.which("g++")


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```\n", DOCS.read_text(), re.DOTALL)


def has_libcurl_headers() -> bool:
    if GXX is None:
        return False
    probe = subprocess.run(
        [GXX, "-fsyntax-only", "-x", "c++", "-"],
        input="#include <curl/curl.h>\n",
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(GXX is None, reason="no g++ on this machine")
@pytest.mark.parametrize("index", [0, 1], ids=["environment", "libcurl"])
def test_the_cpp_examples_compile(tmp_path: Path, index: int) -> None:
    # The Unreal example needs the engine; it is the one C++ block left out.
    cpp = [b for b in blocks("cpp") if "GameLiftServerSDK.h" not in b]
    assert len(cpp) == 2
    source = cpp[index]
    if "curl/curl.h" in source and not has_libcurl_headers():
        pytest.skip("libcurl's headers are not installed (Debian: libcurl4-openssl-dev)")
    # The example's commented call, made real, so the constructor's result is checked too.
    source = source.replace(
        "// Aws::GameLift::Server::InitSDK(FetchServerParameters(fleetId, computeName));",
        'void Start() { Aws::GameLift::Server::InitSDK(FetchServerParameters("f", "c")); }',
    )
    path = tmp_path / "example.cpp"
    path.write_text(source)
    done = subprocess.run(
        [GXX, "-std=c++17", "-Wall", "-Werror", "-fsyntax-only", "-I", str(SDK), str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(GXX is None, reason="no g++ on this machine")
def test_the_old_member_assignments_do_not_compile(tmp_path: Path) -> None:
    # What the README used to show; the transcribed header refuses it, as the SDK's does.
    path = tmp_path / "old.cpp"
    path.write_text(
        "#include <aws/gamelift/server/GameLiftServerAPI.h>\n"
        'void f() { Aws::GameLift::Server::Model::ServerParameters p; p.m_authToken = "t"; }\n'
    )
    done = subprocess.run(
        [GXX, "-std=c++17", "-fsyntax-only", "-I", str(SDK), str(path)],
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0 and "private" in done.stderr


def python_example() -> dict[str, object]:
    (source,) = blocks("python")
    namespace: dict[str, object] = {}
    exec(compile(source, str(DOCS), "exec"), namespace)
    return namespace


def test_the_python_example_waits_out_a_503_and_returns_the_five() -> None:
    fetch = python_example()["server_parameters"]
    busy = error(503, "InternalServiceException", "failing", **{"Retry-After": "1"})
    standin = StandIn(busy, Answer())
    with serving_tcp(standin) as broker:
        values = fetch(FLEET, COMPUTE, url=broker.url, timeout=20)  # type: ignore[operator]
    assert values["AuthToken"] == TOKEN and values["HostId"] == COMPUTE
    assert set(values) == {"WebSocketUrl", "FleetId", "HostId", "ProcessId", "AuthToken"}
    first, second = standin.asked
    assert second.at - first.at >= 1.0
    assert first.headers["X-Token-Broker-Request"] == "true"


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (error(403, "MissingRequestHeader", "no"), "refused: HTTP 403"),
        (Answer(body={"FleetId": FLEET}), "lacks a value"),
    ],
    ids=["refused", "partial"],
)
def test_the_python_example_fails_closed(answer: Answer, says: str) -> None:
    fetch = python_example()["server_parameters"]
    standin = StandIn(answer)
    with serving_tcp(standin) as broker, pytest.raises(RuntimeError, match=says):
        fetch(FLEET, COMPUTE, url=broker.url, timeout=5)  # type: ignore[operator]
    assert len(standin.asked) == 1
