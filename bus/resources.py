"""What the runner loads for a handler before calling it (I/O stays out of handlers).

A processor declares ``NEEDS = ("payload", "mapping")``; the runner calls the loader
registered under each name (``Loaders``: name -> ``async loader(js, event)``) and hands
the results over in ``ctx.resources``.  Which loaders exist (object store, KV views,
QuestDB) is decided by the bootstrap (``ops/loaders.py``), not by the bus.  A resource
that does not exist is handed over as ``None``: the handler decides what that means.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from nats.js import JetStreamContext

from contracts.base import Event
from contracts.errors import ContractError

Loader = Callable[[JetStreamContext, Event], Awaitable[Any]]
Loaders = Mapping[str, Loader]


async def load(loaders: Loaders, js: JetStreamContext, names: tuple[str, ...],
               event: Event) -> dict[str, Any]:
    unknown = set(names) - set(loaders)
    if unknown:
        raise ContractError(f"no loader registered for resources {sorted(unknown)}; "
                            f"registered: {sorted(loaders)}")
    return {n: await loaders[n](js, event) for n in names}


def close(resources: dict[str, Any]) -> None:
    for value in resources.values():
        if hasattr(value, "close"):
            value.close()
