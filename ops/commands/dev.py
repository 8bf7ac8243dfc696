"""``tagus demo`` and ``tagus bench NAME``: the dev tooling (``ops/dev/``).

A benchmark is a module ``ops/dev/bench_<name>.py`` with ``main(argv) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def _benches() -> list[str]:
    from ops import dev

    return sorted(m.name.removeprefix("bench_") for m in pkgutil.iter_modules(dev.__path__)
                  if m.name.startswith("bench_"))


def register(sub) -> None:
    p = sub.add_parser("demo", help="the main job on the local stack: real files through "
                                    "the whole pipeline, queries and pictures")
    p.set_defaults(run=demo)
    p = sub.add_parser("bench", help="benchmarks that print figures against a ceiling")
    p.add_argument("which", choices=_benches())
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(run=bench)


async def demo(settings, args) -> int:
    from ops.dev.demo import run_demo

    await run_demo(settings, settings.shared_data)
    return 0


def bench(settings, args) -> int:
    return importlib.import_module(f"ops.dev.bench_{args.which}").main(args.args)
