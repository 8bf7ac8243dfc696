"""``tagus demo``, ``tagus bench NAME`` and ``tagus screenshots``: the dev tooling
(``ops/dev/``).

A benchmark is a module ``ops/dev/bench_<name>.py`` with ``main(argv) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path


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
    p = sub.add_parser("screenshots", help="every console page in headless Chromium on a "
                                           "private stack, as PNGs (ops/dev/screenshots.py)")
    p.add_argument("--out", type=Path, default=Path("var") / "console-screenshots",
                   help="folder for the PNGs (default var/console-screenshots)")
    p.add_argument("--docs", action="store_true",
                   help="also the README's pictures, into docs/console/")
    p.add_argument("--serve", action="store_true",
                   help="seed the console and serve it until Ctrl-C instead")
    p.set_defaults(run=screenshots)


async def demo(settings, args) -> int:
    from ops.dev.demo import run_demo

    await run_demo(settings, settings.shared_data)
    return 0


def screenshots(settings, args) -> int:
    from ops.dev.screenshots import run

    return run(Path(settings.shared_data), args.out, docs=args.docs, serve=args.serve)


def bench(settings, args) -> int:
    return importlib.import_module(f"ops.dev.bench_{args.which}").main(args.args)
