"""Entry point: ``studio`` with no arguments opens the window; with a subcommand it is the CLI."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("gui", "--gui"):
        from studio.qt.app import run_app

        return run_app(args[1:] if args else [])
    from studio.cli.main import main as cli_main

    return cli_main(args)


if __name__ == "__main__":
    sys.exit(main())
