"""The broker as a real process (`python -m service`), its log lines read as they come."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field


@dataclass
class Process:
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def wait_for_line(self, pattern: str, timeout: float = 20) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        raise AssertionError(f"no line matching {pattern!r}; got:\n" + "\n".join(self.lines))

    def start_line(self, timeout: float = 20) -> dict[str, object]:
        """The broker's start-up report, as logged."""
        line = self.wait_for_line(r'^\{.*"event": "start"', timeout).string
        return json.loads(line)  # type: ignore[no-any-return]

    def url(self, timeout: float = 20) -> str:
        """The first token listener, from the start-up report."""
        listeners = self.start_line(timeout)["listeners"]
        assert isinstance(listeners, list)
        return str(listeners[0])

    def start_reading(self) -> None:
        def read() -> None:
            assert self.proc.stderr is not None
            for line in self.proc.stderr:
                self.lines.append(line.rstrip("\n"))

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOKEN_BROKER_", "AWS_"))}
    env.update({"AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull})
    env.update(extra)
    return env


@contextmanager
def broker_process(*args: str, under: Sequence[str] = (), **env: str) -> Iterator[Process]:
    """`python -m service ARGS` with only the TOKEN_BROKER_ and AWS_ variables given here.

    `under` runs it under a wrapper command, for example `prlimit --nofile=1024:1024`.
    """
    proc = subprocess.Popen(
        [*under, sys.executable, "-m", "service", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_env(**env),
    )
    process = Process(proc)
    process.start_reading()
    try:
        yield process
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory from /proc: VmRSS now, or VmHWM for its peak."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} for process {pid}")
