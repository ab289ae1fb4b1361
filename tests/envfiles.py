"""Readers of an environment file that share no code with the broker: a real `sh`, systemd's own
parser (its environment.d generator, where installed), and EnvironmentFile='s rules as
systemd.exec(5) documents them, written out here."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

# systemd's user environment generator reads environment.d files with the parser that
# EnvironmentFile= uses (env-file.c), then expands $VAR: values without a $ come out as
# EnvironmentFile= would read them.
ENVIRONMENT_D_GENERATOR = next(
    (
        path
        for path in (
            "/usr/lib/systemd/user-environment-generators/30-systemd-environment-d-generator",
            "/lib/systemd/user-environment-generators/30-systemd-environment-d-generator",
        )
        if os.access(path, os.X_OK)
    ),
    None,
)
_BLANK = " \t\r"  # what systemd.exec(5) calls leading and trailing whitespace


def sh_environment(text: str, tmp: Path, *, how: str = "source") -> dict[str, str]:
    """What `set -a; . FILE` (or `eval "$(cat FILE)"`) exports, read back from `env -0`."""
    path = tmp / "parameters.env"
    path.write_text(text)
    shell = shutil.which("sh") or "/bin/sh"
    script = {
        "source": 'set -a; . "$1"; exec env -0',
        "eval": 'set -a; eval "$(cat "$1")"; exec env -0',
    }[how]
    done = subprocess.run(
        [shell, "-c", script, "sh", str(path)],
        capture_output=True,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        timeout=30,
        check=True,
    )
    pairs = [item.split(b"=", 1) for item in done.stdout.split(b"\0") if item]
    return {k.decode(): v.decode() for k, v in pairs if k.startswith(b"GAMELIFT_SDK_")}


def systemd_environment(text: str) -> dict[str, str]:
    """EnvironmentFile= as systemd.exec(5) specifies it; raises on anything it leaves open.

    - Empty lines, lines without "=", and lines starting with ";" or "#" are ignored.
    - Unquoted: backslash escapes as unquoted text in sh (a backslash keeps the next
      character; backslash-newline continues the line); leading and trailing whitespace
      (space, tab, carriage return) is dropped, interior whitespace kept.
    - '...': any character but ' verbatim, across lines too; no escapes.
    - "...": \\ before one of "\\`$ keeps that character, before a newline continues the
      line; before anything else both are kept.
    - Whitespace outside the quotes is dropped. (Text after a closing quote is left open by
      the manual: refused here.)
    """
    found: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        end = text.find("\n", i)
        end = n if end < 0 else end
        line = text[i:end]
        stripped = line.lstrip(_BLANK)
        if not stripped or stripped[0] in "#;" or "=" not in line:
            i = end + 1
            continue
        key, _, _ = line.partition("=")
        key = key.strip(_BLANK)
        j = i + line.index("=") + 1
        while j < n and text[j] in _BLANK:
            j += 1
        value, j = _value(text, j)
        found[key] = value
        i = j + 1
    return found


def _value(text: str, j: int) -> tuple[str, int]:
    """The value starting at text[j] and the index of the newline (or end) that ends it."""
    n = len(text)
    if j < n and text[j] in "'\"":
        quote, out, j = text[j], [], j + 1
        while True:
            if j >= n:
                raise ValueError("unterminated quote")
            c = text[j]
            if c == quote:
                j += 1
                break
            if quote == '"' and c == "\\" and j + 1 < n:
                nxt = text[j + 1]
                if nxt == "\n":
                    j += 2
                    continue
                out.append(nxt if nxt in '"\\`$' else c + nxt)
                j += 2
                continue
            out.append(c)
            j += 1
        while j < n and text[j] in _BLANK:
            j += 1
        if j < n and text[j] != "\n":
            raise ValueError(f"text after a closing quote: {text[j : j + 10]!r}")
        return "".join(out), j
    out = []
    while j < n and text[j] != "\n":
        c = text[j]
        if c == "\\" and j + 1 < n:
            if text[j + 1] != "\n":
                out.append(text[j + 1])
            j += 2
            continue
        out.append(c)
        j += 1
    return "".join(out).rstrip(_BLANK), j


def systemd_generator_environment(text: str, tmp: Path) -> dict[str, str]:
    """systemd's own parser's reading of `text`, through its environment.d generator."""
    assert ENVIRONMENT_D_GENERATOR is not None
    config = tmp / "xdg"
    (config / "environment.d").mkdir(parents=True, exist_ok=True)
    (config / "environment.d" / "50-parameters.conf").write_text(text)
    done = subprocess.run(
        [ENVIRONMENT_D_GENERATOR],
        capture_output=True,
        text=True,
        env={"XDG_CONFIG_HOME": str(config), "HOME": str(tmp / "no-home")},
        timeout=30,
        check=True,
    )
    # It prints KEY=VALUE lines, double-quoting what needs it: EnvironmentFile= syntax again.
    printed = systemd_environment(done.stdout)
    return {k: v for k, v in printed.items() if k.startswith("GAMELIFT_SDK_")}
