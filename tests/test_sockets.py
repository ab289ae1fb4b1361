"""The unix socket's group, socket-only mode, and the client address in the access log."""

from __future__ import annotations

import grp
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.processes import broker_process, clean_env

GUARD = {"X-Token-Broker-Request": "true"}
TOKEN = "/fleets/fleet-1/computes/c/token"


def over_uds(path: Path) -> httpx.Client:
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(path)), base_url="http://localhost")


def test_access_log_names_the_client(tmp_path: Path) -> None:
    path = tmp_path / "broker.sock"
    with broker_process(
        "--emulator", "--port", "0", "--uds", str(path), TOKEN_BROKER_ACCESS_LOG="true"
    ) as process:
        process.wait_for_line('"event": "ready"')
        with httpx.Client(base_url=process.url()) as tcp:
            assert tcp.get(TOKEN, headers=GUARD).status_code == 200
            assert tcp.get(TOKEN).status_code == 403  # refusals name their client too
        with over_uds(path) as uds:
            assert uds.get(TOKEN, headers=GUARD).status_code == 200
        process.wait_for_line('"client": "unix"')
        lines = [json.loads(line) for line in process.lines if '"event": "request"' in line]
    clients = [(line["msg"], line["client"].rsplit(":", 1)[0]) for line in lines]
    assert clients == [
        ("token served", "127.0.0.1"),
        ("token request refused", "127.0.0.1"),
        ("token served", "unix"),
    ]


def test_socket_only_mode(tmp_path: Path) -> None:
    path = tmp_path / "broker.sock"
    with broker_process("--emulator", "--no-tcp", "--uds", str(path)) as process:
        assert process.start_line()["listeners"] == [f"unix:{path}"]
        process.wait_for_line('"event": "ready"')
        with over_uds(path) as uds:
            assert uds.get(TOKEN, headers=GUARD).status_code == 200


def test_socket_only_needs_a_socket() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--emulator", "--no-tcp"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert result.returncode == 2
    assert "--uds" in result.stderr.strip().splitlines()[-1]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root may give a file to any group")
def test_uds_group_owns_the_socket(tmp_path: Path) -> None:
    group = next(g for g in grp.getgrall() if g.gr_gid != os.getgid())
    path = tmp_path / "broker.sock"
    with broker_process(
        "--emulator", "--port", "0", "--uds", str(path), "--uds-group", group.gr_name
    ) as process:
        process.wait_for_line('"event": "ready"')
        assert os.stat(path).st_gid == group.gr_gid


def test_unknown_uds_group_stops_start_up_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "service", "--emulator", "--port", "0"),
            *("--uds", str(tmp_path / "s"), "--uds-group", "no-such-group-here"),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "gamelift-token-broker: cannot listen: no such group: 'no-such-group-here'"
    ]
