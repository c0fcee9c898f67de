"""Entry point: ``studio`` with no arguments opens the window; ``studio open PROJECT`` opens
the window with a project; any other subcommand is the CLI."""

from __future__ import annotations

import sys

OPEN_USAGE = "usage: studio open PROJECT (a project folder, or its studio-project.json)"


def route(args: list[str]) -> tuple[str, list[str], str | None]:
    """Where a command line goes: ("gui", Qt arguments, project or None), ("cli", arguments,
    None), ("help", [usage], None) for ``studio open --help``, or ("error", [usage], None) for
    ``studio open`` without exactly one project."""
    if not args or args[0] in ("gui", "--gui"):
        return "gui", args[1:] if args else [], None
    if args[0] == "open":
        rest = args[1:]
        if rest in (["-h"], ["--help"]):
            return "help", [OPEN_USAGE], None
        if len(rest) != 1 or rest[0].startswith("-"):
            return "error", [OPEN_USAGE], None
        return "gui", [], rest[0]
    return "cli", args, None


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    where, rest, project = route(list(args))
    if where in ("error", "help"):
        print(rest[0], file=sys.stderr if where == "error" else sys.stdout)
        return 2 if where == "error" else 0
    if where == "gui":
        from studio.qt.app import run_app

        return run_app(rest, project=project)
    from studio.cli.main import main as cli_main

    return cli_main(rest)


if __name__ == "__main__":
    sys.exit(main())
