"""The emulator in a thread beside the broker, for `gamelift-token-broker --emulator`."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from service.emulator.app import Emulator
from service.listen import bind_tcp


@contextlib.contextmanager
def embedded_emulator(host: str = "127.0.0.1", **emulator_options: Any) -> Iterator[str]:
    """Run the GameLift emulator on a free loopback port in a thread; yield its URL."""
    emulator = Emulator(**emulator_options)
    sock = bind_tcp(host, 0)
    port = sock.getsockname()[1]
    # A thread, not our loop: uvicorn installs signal handlers only in the main thread, so the
    # broker keeps its graceful SIGTERM handling.
    # No log_level: uvicorn would set it on its process-wide loggers, the broker's included.
    config = uvicorn.Config(emulator.app, log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the embedded GameLift emulator did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=5)
