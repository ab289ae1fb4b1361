"""`gamelift-token-broker exec` as a real process against a stand-in broker: it starts COMMAND
with exactly the five values, or fails closed with one line and never starts it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
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

FIVE = {
    "GAMELIFT_SDK_WEBSOCKET_URL",
    "GAMELIFT_SDK_AUTH_TOKEN",
    "GAMELIFT_SDK_FLEET_ID",
    "GAMELIFT_SDK_HOST_ID",
    "GAMELIFT_SDK_PROCESS_ID",
}
CONSOLE_SCRIPT = Path(sys.executable).parent / "gamelift-token-broker"
# COMMAND: reports what it was started with (its pid, environment and the argv `ps` shows).
REPORT = (
    "import json, os, sys;"
    "cmdline = open('/proc/self/cmdline', 'rb').read().decode();"
    "json.dump({'pid': os.getpid(), 'env': dict(os.environ), 'cmdline': cmdline},"
    " open(sys.argv[1], 'w'))"
)


EXEC = [sys.executable, "-m", "service", "exec", "--fleet-id", FLEET, "--compute-name", COMPUTE]


def command(report: Path) -> list[str]:
    return [sys.executable, "-c", REPORT, str(report)]


def launch(
    where: list[str], report: Path, *extra: str, timeout: float = 30, **env: str
) -> subprocess.CompletedProcess[str]:
    argv = [*EXEC, *where, *extra, "--", *command(report)]
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=clean_env(**env)
    )


def assert_failed_closed(done: subprocess.CompletedProcess[str], report: Path, says: str) -> None:
    assert done.returncode not in (0, None), done
    assert not report.exists(), "COMMAND ran"
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert says in lines[0], lines[0]
    assert lines[0].startswith("gamelift-token-broker exec: ")
    assert TOKEN not in done.stderr + done.stdout


def test_command_gets_exactly_the_five_values(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    answer = parameters()
    standin = StandIn(Answer(body=answer))
    with serving_tcp(standin) as broker:
        argv = [str(CONSOLE_SCRIPT), "exec", "--fleet-id", FLEET, "--compute-name", COMPUTE]
        argv += ["--url", broker.url, "--", sys.executable, "-c", REPORT, str(report)]
        # A stale value in the environment must lose to the fresh one.
        env = clean_env(GAMELIFT_SDK_AUTH_TOKEN="stale", KEEP_ME="kept")
        proc = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    seen = json.loads(report.read_text())
    assert seen["pid"] == proc.pid, "exec replaced itself with COMMAND"
    given = {name: value for name, value in seen["env"].items() if name.startswith("GAMELIFT_SDK")}
    assert given == {
        "GAMELIFT_SDK_WEBSOCKET_URL": answer["WebSocketUrl"],
        "GAMELIFT_SDK_AUTH_TOKEN": TOKEN,
        "GAMELIFT_SDK_FLEET_ID": FLEET,
        "GAMELIFT_SDK_HOST_ID": COMPUTE,
        "GAMELIFT_SDK_PROCESS_ID": answer["ProcessId"],
    }
    inherited = {k: v for k, v in env.items() if k not in FIVE}
    assert {k: v for k, v in seen["env"].items() if k not in FIVE} == inherited
    assert TOKEN not in seen["cmdline"], "the token is on the command line"
    assert stderr == ""
    (asked,) = standin.asked
    assert asked.path == f"/fleets/{FLEET}/computes/{COMPUTE}/server-parameters"
    assert asked.headers["X-Token-Broker-Request"] == "true"
    assert "Authorization" not in asked.headers


def test_each_launch_passes_on_the_process_id_it_got(tmp_path: Path) -> None:
    ids = [str(uuid.uuid4()), str(uuid.uuid4())]
    standin = StandIn(*(Answer(body=parameters(ProcessId=i)) for i in ids))
    seen = []
    with serving_tcp(standin) as broker:
        for n in range(2):
            report = tmp_path / f"{n}.json"
            done = launch(["--url", broker.url], report)
            assert done.returncode == 0, done.stderr
            seen.append(json.loads(report.read_text())["env"]["GAMELIFT_SDK_PROCESS_ID"])
    assert seen == ids


def test_the_caller_secret_comes_from_its_file_never_argv(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    report = tmp_path / "report.json"
    standin = StandIn()
    with serving_tcp(standin) as broker:
        done = launch(["--url", broker.url], report, "--auth-token-file", str(secret))
    assert done.returncode == 0, done.stderr
    assert standin.asked[0].headers["Authorization"] == "Bearer s3cret-value"
    assert "s3cret-value" not in json.loads(report.read_text())["cmdline"]


def test_unreadable_secret_file_starts_nothing(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    standin = StandIn()
    with serving_tcp(standin) as broker:
        done = launch(["--url", broker.url], report, "--auth-token-file", str(tmp_path / "no"))
    assert_failed_closed(done, report, "cannot read --auth-token-file")
    assert standin.asked == []


def test_unix_socket(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    standin = StandIn()
    with serving_unix(standin, str(tmp_path / "broker.sock")) as path:
        done = launch(["--uds", path], report)
    assert done.returncode == 0, done.stderr
    env = json.loads(report.read_text())["env"]
    assert env["GAMELIFT_SDK_AUTH_TOKEN"] == TOKEN
    assert standin.asked[0].headers["Host"] == "localhost"  # a name the Host check takes


def test_broker_down_past_the_timeout(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    started = time.monotonic()
    url = f"http://127.0.0.1:{refusing_port()}"
    done = launch(["--url", url], report, "--timeout", "1")
    assert_failed_closed(done, report, "cannot reach the broker")
    assert "gave up after 1 s" in done.stderr
    assert done.returncode == 69
    assert time.monotonic() - started < 20


def test_a_broker_that_starts_late_is_waited_for(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    standin = StandIn()
    with serving_tcp(standin, listen=False) as broker:
        proc = subprocess.Popen(
            [*EXEC, "--url", broker.url, "--timeout", "30", "--", *command(report)],
            env=clean_env(),
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)  # the launcher meanwhile meets a refusing port
        assert proc.poll() is None, proc.communicate()[1]
        broker.start()
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert json.loads(report.read_text())["env"]["GAMELIFT_SDK_AUTH_TOKEN"] == TOKEN


def test_503_is_retried_after_its_retry_after(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    busy = error(503, "InternalServiceException", "GameLift is failing", **{"Retry-After": "2"})
    standin = StandIn(busy, Answer())
    with serving_tcp(standin) as broker:
        done = launch(["--url", broker.url], report)
    assert done.returncode == 0, done.stderr
    first, second = standin.asked
    assert second.at - first.at >= 2.0, "Retry-After was not honoured"
    assert second.at - first.at < 10


def test_503_for_longer_than_the_timeout_gives_up(tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    busy = error(503, "UpstreamBudgetExhausted", "budget spent", **{"Retry-After": "1"})
    standin = StandIn(busy)
    with serving_tcp(standin) as broker:
        done = launch(["--url", broker.url], report, "--timeout", "2.5")
    assert_failed_closed(done, report, "503 UpstreamBudgetExhausted: budget spent")
    assert 2 <= len(standin.asked) <= 4


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (error(403, "MissingRequestHeader", "send the header"), "403 MissingRequestHeader"),
        (error(401, "Unauthenticated", "missing or wrong caller secret"), "401 Unauthenticated"),
        (error(400, "InvalidRequest", "bad compute name"), "400 InvalidRequest"),
        (error(404, "NotFoundException", "no such compute"), "404 NotFoundException"),
        (error(502, "UnsupportedRegionException", "no"), "502 UnsupportedRegionException"),
        (Answer(500, b"<html>oops</html>"), "the broker refused: 500"),
    ],
    ids=["403", "401", "400", "404", "502", "500-not-json"],
)
def test_a_refusal_is_final(tmp_path: Path, answer: Answer, says: str) -> None:
    report = tmp_path / "report.json"
    standin = StandIn(answer)
    with serving_tcp(standin) as broker:
        done = launch(["--url", broker.url], report)
    assert_failed_closed(done, report, says)
    assert len(standin.asked) == 1, "a refusal was retried"


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        ({k: v for k, v in parameters().items() if k != "WebSocketUrl"}, "no WebSocketUrl"),
        (parameters(HostId=""), "empty HostId"),
        (parameters(FleetId=None), "NoneType as FleetId"),
        (parameters(AuthToken=12345), "int as AuthToken"),
        (parameters(ProcessId="ManagedResource"), "ProcessId is not a UUID"),
        (parameters(ProcessId=TOKEN), "ProcessId is not a UUID"),
        (parameters(WebSocketUrl="http://example.com"), "not a ws:// or wss:// URL"),
        (parameters(WebSocketUrl="wss://"), "not a ws:// or wss:// URL"),
        (parameters(HostId="other-host"), "another compute"),
        (parameters(FleetId="fleet-other"), "another fleet"),
        (parameters(AuthToken=TOKEN + " rm -rf"), "not a GameLift auth token"),
    ],
    ids=[
        "garbage",
        "array",
        "missing-url",
        "empty-host",
        "null-fleet",
        "int-token",
        "managed-resource",
        "token-as-process-id",
        "http-url",
        "url-without-host",
        "other-compute",
        "other-fleet",
        "token-with-space",
    ],
)
def test_a_bad_answer_starts_nothing(tmp_path: Path, body: object, says: str) -> None:
    report = tmp_path / "report.json"
    standin = StandIn(Answer(body=body))  # type: ignore[arg-type]
    with serving_tcp(standin) as broker:
        done = launch(["--url", broker.url], report)
    assert_failed_closed(done, report, says)
    assert done.returncode == 76


def test_command_not_found(tmp_path: Path) -> None:
    standin = StandIn()
    with serving_tcp(standin) as broker:
        done = subprocess.run(
            [*EXEC, "--url", broker.url, "--", str(tmp_path / "no-such-server")],
            capture_output=True,
            text=True,
            env=clean_env(),
        )
    assert done.returncode == 127
    assert done.stderr.count("\n") == 1 and "COMMAND not found" in done.stderr
    assert TOKEN not in done.stderr


def test_the_exec_path_loads_nothing_heavy(tmp_path: Path) -> None:
    # A fresh interpreter runs the console script's entry up to the moment it would exec.
    standin = StandIn()
    probe = (
        "import os, sys\n"
        "def execvpe(file, args, env):\n"
        "    heavy = {'aioboto3', 'aiobotocore', 'botocore', 'boto3', 'fastapi', 'starlette',\n"
        "             'uvicorn', 'pydantic', 'pydantic_settings', 'orjson', 'cachetools',\n"
        "             'prometheus_client', 'httpx', 'anyio', 'asyncio', 'service.cli',\n"
        "             'dataclasses', 'inspect', 'typing',\n"
        "             'service.config', 'service.web', 'service.gamelift', 'service.tokens'}\n"
        "    loaded = sorted(heavy & {m if m.startswith('service.') else m.split('.')[0]\n"
        "                             for m in sys.modules})\n"
        "    print(json.dumps({'loaded': loaded, 'env': env.get('GAMELIFT_SDK_HOST_ID')}))\n"
        "    sys.exit(0)\n"
        "import json\n"
        "os.execvpe = execvpe\n"
        "from service.__main__ import main\n"
        "main(sys.argv[1:])\n"
    )
    with serving_tcp(standin) as broker:
        done = subprocess.run(
            [sys.executable, "-c", probe, *EXEC[3:], "--url", broker.url, "--", "true"],
            capture_output=True,
            text=True,
            env=clean_env(),
        )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["env"] == COMPUTE, "the probe did not reach execvpe"
    assert seen["loaded"] == []


def test_the_broker_cli_still_runs_through_the_dispatcher() -> None:
    done = subprocess.run(
        [str(CONSOLE_SCRIPT), "--help"], capture_output=True, text=True, env=clean_env()
    )
    assert done.returncode == 0
    assert "--emulator" in done.stdout and "exec --help" in done.stdout
    exec_help = subprocess.run(
        [str(CONSOLE_SCRIPT), "exec", "--help"], capture_output=True, text=True, env=clean_env()
    )
    assert exec_help.returncode == 0 and "--auth-token-file" in exec_help.stdout


def test_usage_errors_contact_no_broker(tmp_path: Path) -> None:
    standin = StandIn()
    report = tmp_path / "report.json"
    with serving_tcp(standin) as broker:
        for bad in (
            ["--fleet-id", "not-a-fleet", "--compute-name", COMPUTE],
            ["--fleet-id", FLEET, "--compute-name", "a/b/c"],
        ):
            done = subprocess.run(
                [*EXEC[:4], *bad, "--url", broker.url, "--", *command(report)],
                capture_output=True,
                text=True,
                env=clean_env(),
            )
            assert done.returncode == 2, done.stderr
        good = launch(["--url", broker.url], report)  # the same, well formed, does ask
        assert good.returncode == 0
    assert len(standin.asked) == 1
    assert os.path.exists(report)
