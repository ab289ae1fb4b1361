"""systemd readiness: READY=1, STATUS= and STOPPING=1 sent to a real $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.processes import Process, broker_process


@contextmanager
def notify_socket(address: str) -> Iterator[socket.socket]:
    """A datagram socket bound where systemd would listen, as systemd makes it."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(address)
        sock.settimeout(0.2)
        yield sock


def receive_until(
    sock: socket.socket, wanted: str, process: Process, timeout: float = 30
) -> list[str]:
    """Every message up to and including the first with the line `wanted`."""
    messages = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            message = sock.recv(4096).decode()
        except TimeoutError:
            assert process.proc.poll() is None, "\n".join(process.lines)
            continue
        messages.append(message)
        if wanted in message.split("\n"):
            return messages
    raise AssertionError(f"no {wanted} within {timeout} s; got {messages}")


def test_ready_status_and_stopping(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with (
        notify_socket(path) as sock,
        broker_process("--emulator", "--port", "0", NOTIFY_SOCKET=path) as process,
    ):
        messages = receive_until(sock, "READY=1", process)
        # Told only once /readyz says so.
        assert httpx.get(f"{process.url()}/readyz").status_code == 200
        assert "STATUS=serving tokens" in messages[-1].split("\n")
        process.proc.send_signal(signal.SIGTERM)
        stopping = receive_until(sock, "STOPPING=1", process)
        assert "STATUS=draining" in stopping[-1].split("\n")
        process.proc.wait(20)
    assert not any("READY=1" in m for m in stopping)


def test_abstract_socket(tmp_path: Path) -> None:
    name = f"gamelift-token-broker-test-{os.getpid()}-{tmp_path.name}"
    with (
        notify_socket("\0" + name) as sock,
        broker_process("--emulator", "--port", "0", NOTIFY_SOCKET="@" + name) as process,
    ):
        receive_until(sock, "READY=1", process)


def test_no_ready_without_credentials(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with (
        notify_socket(path) as sock,
        broker_process(
            "--port",
            "0",
            NOTIFY_SOCKET=path,
            AWS_REGION="us-west-2",
            AWS_EC2_METADATA_DISABLED="true",
        ) as process,
    ):
        messages = receive_until(sock, "STATUS=not ready: no AWS credentials", process)
        process.proc.send_signal(signal.SIGTERM)
        messages += receive_until(sock, "STOPPING=1", process)
    assert not any("READY=1" in m.split("\n") for m in messages)
