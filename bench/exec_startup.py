"""How long `gamelift-token-broker exec` takes to start a game server, against Python itself.

    python bench/exec_startup.py            # 31 interleaved rounds
    python bench/exec_startup.py --smoke    # 3 rounds, to keep the script working

Each round runs, one after the other: `true` (the cost of starting any process), `python -c
pass` (the reference: an interpreter that does nothing), and `exec` started both ways (the
console script and `python -m service exec`) with COMMAND `true`, against a stand-in broker on
loopback that answers at once with good server parameters. The time is from spawning the
process to the end of `true`, so `exec` - `true` is the launcher's own cost, from process start
to execvpe plus its one request. Medians, and the ratio to the reference measured in the same
rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PYTHON = sys.executable
SCRIPT = str(Path(PYTHON).parent / "gamelift-token-broker")


class Answer(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without TCP_NODELAY, Nagle and the client's
    # delayed ACK hold the body back about 40 ms, which the real broker (one write) never pays.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        body = json.dumps(
            {
                "WebSocketUrl": "wss://us-west-2.api.amazongamelift.com",
                "FleetId": "fleet-1234",
                "HostId": "my-host",
                "ProcessId": str(uuid.uuid4()),
                "AuthToken": "bench-token",
                "ExpirationTimestamp": "2026-12-02T06:00:00Z",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def elapsed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--smoke", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.smoke else args.rounds

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    launcher = ["exec", "--fleet-id", "fleet-1234", "--compute-name", "my-host", "--url", url]
    runs = {
        "true": ["true"],
        "python -c pass": [PYTHON, "-c", "pass"],
        "exec (console script)": [SCRIPT, *launcher, "--", "true"],
        "python -m service exec": [PYTHON, "-m", "service", *launcher, "--", "true"],
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, argv in runs.items():
            times[name].append(elapsed(argv))
    server.shutdown()

    median = {name: statistics.median(values) * 1000 for name, values in times.items()}
    reference = median["python -c pass"]
    print(f"{rounds} rounds, medians (ms), from spawn to the end of COMMAND `true`:")
    for name, value in median.items():
        print(f"  {name:24} {value:7.1f}   x{value / reference:4.2f} of python -c pass")
    own = median["exec (console script)"] - median["true"]
    print(f"  exec's own cost (console script - true): {own:.1f} ms")


if __name__ == "__main__":
    main()
