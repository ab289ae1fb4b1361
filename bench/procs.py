"""The benchmark's child processes: spawned with their logs in files, found by log lines, reaped."""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PYTHON = sys.executable
GUARD = {"X-Token-Broker-Request": "true"}

# The broker's start-up report lists its listeners; the reference apps print an address.
BROKER_ADDRESS = re.compile(r'"(?:listeners|address)": \[?"(http://[^"]+)"')
UVICORN_ADDRESS = re.compile(r"Uvicorn running on (http://\S+)")


def child_env(**extra: str) -> dict[str, str]:
    """The environment every child gets: the repo importable, nothing of the caller's leaking."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("TOKEN_BROKER_", "AWS_", "PYTHON"))
    }
    env["PYTHONPATH"] = str(REPO)
    # No shared config, credentials file or instance metadata: every AWS setting is passed here.
    env["AWS_CONFIG_FILE"] = os.devnull
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_EC2_METADATA_DISABLED"] = "true"
    env.update(extra)
    return env


def aws_env(emulator_url: str) -> dict[str, str]:
    """What a broker or a game server needs to call the emulator as if it were GameLift."""
    return {
        "AWS_ENDPOINT_URL_GAMELIFT": emulator_url,
        # botocore 1.40 reads only AWS_DEFAULT_REGION; AWS_REGION is what the README says.
        "AWS_REGION": "us-west-2",
        "AWS_DEFAULT_REGION": "us-west-2",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
    }


class Child:
    def __init__(self, name: str, popen: subprocess.Popen[bytes], log: Path) -> None:
        self.name = name
        self.popen = popen
        self.log = log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(self.log.read_text(errors="replace"))
            if match:
                return match
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {pattern.pattern!r} in {timeout} s")
            time.sleep(0.005)

    def tail(self, lines: int = 15) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for {self.name}")

    def cpu_seconds(self) -> float:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            return 0.0
        # utime and stime, then the CPU of its own reaped children (taskset's, say).
        return sum(int(x) for x in fields[11:15]) / CpuMeter.TICK

    def stop(self, grace: float = 10.0) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(grace)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


class CpuMeter:
    """How much CPU work on the machine was not ours: what makes a figure noisy here."""

    TICK = os.sysconf("SC_CLK_TCK")

    def __init__(self, procs: Procs) -> None:
        self._procs = procs
        self._start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = fields[:8]
        busy = (user + nice + system + irq + softirq) / self.TICK
        ours = sum(child.cpu_seconds() for child in self._procs.live())
        for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):  # wrk runs are reaped
            usage = resource.getrusage(who)
            ours += usage.ru_utime + usage.ru_stime
        return time.monotonic(), busy, ours, steal / self.TICK

    def others(self) -> tuple[float, float]:
        """Since this meter started: (share of all CPUs others used, share stolen by the host)."""
        now, busy, ours, steal = self._sample()
        then, busy0, ours0, steal0 = self._start
        capacity = (now - then) * (os.cpu_count() or 1)
        return max(0.0, (busy - busy0) - (ours - ours0)) / capacity, (steal - steal0) / capacity


class Procs(contextlib.AbstractContextManager["Procs"]):
    """Owns every process the benchmark starts; all are stopped on exit, error or not."""

    def __init__(
        self,
        workdir: Path,
        *,
        server_cpus: str | None = None,
        broker_command: list[str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.server_cpus = server_cpus  # taskset list for servers, when pinning
        # How to start the broker; `--port 0` is appended. Another command tries out a change.
        self.broker_command = broker_command or [PYTHON, "-m", "service"]
        self._children: list[Child] = []

    def live(self) -> list[Child]:
        return [child for child in self._children if child.popen.poll() is None]

    def spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        log = self.workdir / f"{name}-{len(self._children)}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env or child_env(),
                # Not the repo: `python -c` puts the cwd first on sys.path.
                cwd=self.workdir,
            )
        child = Child(name, popen, log)
        self._children.append(child)
        return child

    def server(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Child:
        if self.server_cpus:
            argv = ["taskset", "-c", self.server_cpus, *argv]
        return self.spawn(name, argv, env)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Signal them all first, so they shut down side by side, then wait for each.
        for child in self._children:
            if child.popen.poll() is None:
                child.popen.send_signal(signal.SIGTERM)
        for child in reversed(self._children):
            child.stop()
        self._children.clear()

    # The servers the benchmark uses, each as its own process.

    def emulator(self, latency: float = 0.0) -> tuple[Child, str]:
        argv = [PYTHON, "-m", "service.emulator", "--port", "0", "--latency", str(latency)]
        child = self.server("emulator", argv)
        return child, child.wait_for_line(UVICORN_ADDRESS).group(1)

    def broker(self, emulator_url: str, **settings: str) -> tuple[Child, str]:
        """The broker as deployed (`python -m service`), against the emulator as its GameLift.

        With the host's call budget lifted: these runs measure the hit path, memory and
        collapsing, and filling 10,000 keys at GameLift's 5 calls a second would take half an
        hour (bench/fleet.py measures the budget itself)."""
        budget = {"TOKEN_BROKER_UPSTREAM_RATE": "1000000", "TOKEN_BROKER_UPSTREAM_BURST": "1000000"}
        env = child_env(**aws_env(emulator_url), **{**budget, **settings})
        child = self.server("broker", [*self.broker_command, "--port", "0"], env)
        url = child.wait_for_line(BROKER_ADDRESS).group(1)
        wait_ok(f"{url}/readyz", child)
        return child, url

    def reference(self, app: str, spec: Path) -> tuple[Child, str]:
        child = self.server(app, [PYTHON, str(BENCH / "apps.py"), app, str(spec)])
        url = child.wait_for_line(BROKER_ADDRESS).group(1)
        wait_ok(url + "/", child)
        return child, url


def get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def wait_ok(url: str, child: Child, timeout: float = 20.0, interval: float = 0.005) -> float:
    """Poll `url` until it answers 200; return the perf_counter time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.popen.poll() is not None:
            raise RuntimeError(f"{child.name} exited ({child.popen.returncode}):\n{child.tail()}")
        with contextlib.suppress(OSError):
            if get(url, timeout=1.0)[0] == 200:
                return time.perf_counter()
        time.sleep(interval)
    raise TimeoutError(f"{url} not 200 within {timeout} s")


def configure_emulator(url: str, **changes: object) -> dict[str, object]:
    request = urllib.request.Request(
        f"{url}/_emulator/config",
        data=json.dumps(changes).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        return json.load(answer)


def emulator_calls(url: str) -> int:
    return int(json.loads(get(f"{url}/_emulator/state")[1])["calls"])
