"""The ``tagus`` command: a registry of subcommands, each a small function.

Every module in ``ops/commands/`` exposes ``register(sub)``, which adds its
subcommand(s) to the argparse sub-parsers and sets ``run=function(settings, args)``
(a plain function or a coroutine function returning the exit code).  Command modules
import nothing heavy at module level: the parser of every command is built for each
invocation.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import pkgutil
import sys

from contracts.errors import SetupError, TagusError


def build_parser() -> argparse.ArgumentParser:
    from ops import commands

    parser = argparse.ArgumentParser(prog="tagus", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"ops.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    from ops.logs import configure_logging
    from ops.settings import load_settings

    settings = load_settings()
    service = getattr(args, "service_logs", False)
    configure_logging(settings.log_level if service else "WARNING", json=service)
    try:
        result = args.run(settings, args)
        if inspect.isawaitable(result):
            result = asyncio.run(result)
        return int(result or 0)
    except SetupError as e:
        print(f"tagus: {e}", file=sys.stderr)
        return 2
    except TagusError as e:
        print(f"tagus: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
