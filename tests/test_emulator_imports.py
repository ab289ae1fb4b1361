"""Importing the emulator runs nothing and loads none of the broker (the arrows themselves are
checked in test_architecture.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"


def test_importing_the_emulator_runs_nothing():
    code = (
        "import sys, threading\n"
        "import service.emulator, service.emulator.app, service.emulator.embedded\n"
        "import service.emulator.__main__, service.emulator.tls\n"
        "assert threading.active_count() == 1, threading.enumerate()\n"
        "broker = [m for m in sys.modules if m.startswith(('service.web', 'service.tokens',"
        " 'service.gamelift', 'service.ops', 'service.config'))]\n"
        "assert not broker, broker\n"
        "assert 'cryptography' not in sys.modules  # only --tls loads it\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=SERVICE.parent, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
