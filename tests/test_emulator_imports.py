"""The emulator's import rules: the standard library, third-party packages, `service.names` and
`service.listen` only; only the CLI imports it; nothing runs when it is imported."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SERVICE = Path(__file__).resolve().parents[1] / "service"
ALLOWED_OF_OURS = ("service.names", "service.listen", "service.emulator")


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_emulator_imports_only_names_and_listen_of_the_broker():
    for path in sorted((SERVICE / "emulator").glob("*.py")):
        ours = {n for n in imported(path) if n == "service" or n.startswith("service.")}
        bad = {n for n in ours if not n.startswith(ALLOWED_OF_OURS)}
        # `from service.names import X` shows as service.names and service.names.X: both fine.
        assert not bad, f"{path.name} imports {sorted(bad)}"


def test_only_the_cli_imports_the_emulator():
    for path in sorted(SERVICE.rglob("*.py")):
        if "emulator" in path.relative_to(SERVICE).parts or path == SERVICE / "__main__.py":
            continue
        assert not any(n.startswith("service.emulator") for n in imported(path)), path


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
