"""The entry point: `exec` goes to the launcher before anything heavy is imported, the rest to
the broker's command line (service/cli.py)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["exec"]:
        # A game server's start-up pays for the launcher only: no FastAPI, uvicorn or botocore.
        from service.launch.exec import main as launch

        sys.exit(launch(args[1:]))
    from service.cli import main as broker

    broker(args)


if __name__ == "__main__":
    main()
