"""The import rules of ARCHITECTURE.md, checked on every module's imports, lazy ones too."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "service"

# part -> the parts of `service` it may import (the CLI may import anything).
ALLOWED = {
    "names": set(),
    "errors": set(),
    "listen": set(),
    "config": {"names"},
    "tokens": {"names", "errors"},
    "ops": {"errors"},
    "computes": {"tokens", "names", "errors"},
    "gamelift": {"tokens", "computes", "config", "names", "errors", "ops"},
    "identity": {"names", "errors"},
    "web": {"tokens", "computes", "config", "names", "errors", "ops", "identity"},
    "emulator": {"names", "listen"},
    "launch": {"names"},
}
# The CLI's parts compose the others: they may import any part.
COMPOSERS = ("__main__", "cli")
# Outside packages only one part may import.
OWNED = {
    "aioboto3": "gamelift",
    "aiobotocore": "gamelift",
    "botocore": "gamelift",
    # The `kubernetes` extra: a broker without a caller identity never needs them.
    "jwt": "identity",
    "httpx": "identity",
}
HTTP = {"fastapi", "starlette", "uvicorn", "orjson"}


def part_of(module: str) -> str:
    """service.tokens.cache -> tokens; service.__main__ -> __main__; service -> service."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(relative.parts).removesuffix(".__init__")
        found.append((name, path))
    return found


def imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top, in functions and under TYPE_CHECKING."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "service":  # `from service import errors`, not `__version__`
                names.update(
                    f"service.{alias.name}"
                    for alias in node.names
                    if (PACKAGE / f"{alias.name}.py").exists() or (PACKAGE / alias.name).is_dir()
                )
    return names


def test_the_rules_see_every_part() -> None:
    parts = {part_of(name) for name, _ in modules()}
    assert parts == set(ALLOWED) | {"service", *COMPOSERS}, "a new part needs its arrows"


@pytest.mark.parametrize(("module", "path"), modules(), ids=[name for name, _ in modules()])
def test_imports_follow_the_arrows(module: str, path: Path) -> None:
    part = part_of(module)
    if part == "service":
        return
    for imported in imports(path):
        top = imported.split(".")[0]
        if top == "service":
            if part in COMPOSERS:
                continue  # the CLI composes the parts: it may import any of them
            other = part_of(imported)
            if other in ("service", part):
                continue
            assert other in ALLOWED[part], f"{module} imports {imported}: {part} -> {other}"
        elif top in OWNED:
            assert part == OWNED[top], f"{module} imports {imported}: only {OWNED[top]} may"
        elif top in HTTP:
            allowed = ("web", "emulator", "cli")
            assert part in allowed, f"{module} imports {imported}: HTTP is web's"


def test_nothing_but_the_cli_imports_the_emulator() -> None:
    for module, path in modules():
        if part_of(module) in ("emulator", *COMPOSERS):
            continue
        assert not any(part_of(name) == "emulator" for name in imports(path) if "." in name)


def test_the_caches_load_neither_botocore_nor_fastapi() -> None:
    # What the rules promise, seen from a fresh interpreter.
    probe = (
        "import sys, service.tokens.cache, service.tokens.prefetch, service.computes.endpoints,"
        " service.computes.registration;"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'botocore', 'aioboto3',"
        " 'fastapi', 'starlette', 'uvicorn'});"
        "print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize(
    ("module", "path"),
    [(name, path) for name, path in modules() if part_of(name) in ("launch", "__main__")],
    ids=[name for name, _ in modules() if part_of(name) in ("launch", "__main__")],
)
def test_the_launcher_and_the_entry_import_only_the_standard_library(
    module: str, path: Path
) -> None:
    # `exec` starts a game server: it must start fast in an image that has only Python. The
    # entry reaches the broker's CLI (and everything heavy) only past the `exec` branch.
    allowed = {"service", "service.names", "service.launch", "service.cli"}
    for imported in imports(path):
        top = imported.split(".")[0]
        if top == "service":
            assert imported in allowed or imported.startswith("service.launch."), imported
        else:
            assert top in sys.stdlib_module_names, f"{module} imports {imported}"


def test_only_a_caller_identity_loads_pyjwt_and_httpx() -> None:
    # The guard imports service/identity/ only when TOKEN_BROKER_KUBERNETES_AUDIENCE is set,
    # so a broker installed without the `kubernetes` extra still starts.
    probe = (
        "import sys, service.web.app, service.web.guard;"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'jwt', 'httpx'});"
        "print(heavy); sys.exit(bool(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_broken_rule_is_seen(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def later():\n    from service.web.app import create_app\n")
    assert "service.web.app" in imports(bad)
