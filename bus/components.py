"""What a processor and a projection are, and what a handler may know (no NATS here)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import ModuleType
from typing import Any

from contracts.base import Event, derive_id, event_type


@dataclass(frozen=True)
class Context:
    """What a handler may know besides the event: who it is and the clock."""

    processor: str
    now: datetime
    input: Event
    resources: Mapping[str, Any] = field(default_factory=dict)  # what NEEDS asked for

    def derive(self, cls: type[Event], key: str | int = 0, **fields: Any) -> Event:
        """Build an output event of ``cls`` caused by the input.

        Its id is a function of (input id, processor, output type, key): handle the same
        input twice and you get the same ids.  ``key`` tells apart several outputs of
        the same type from one input.
        """
        fields.setdefault("occurred_at", self.input.occurred_at)
        return cls(
            event_id=derive_id(self.input.event_id, self.processor, event_type(cls), key),
            tenant=self.input.tenant,
            recorded_at=self.now,
            causation_id=self.input.event_id,
            correlation_id=self.input.correlation_id or self.input.event_id,
            **fields,
        )


@dataclass(frozen=True)
class Processor:
    """``needs``: resources the runner loads before calling ``handle``; ``loaders``: how
    (name -> async loader), bound by the bootstrap, never by the processor."""

    name: str
    accepts: tuple[type[Event], ...]
    handle: Callable[[Event, Context], Iterable[Event]]
    needs: tuple[str, ...] = ()
    loaders: Mapping[str, Callable[..., Awaitable[Any]]] = field(default_factory=dict)

    @classmethod
    def from_module(cls, module: ModuleType, *,
                    loaders: Mapping[str, Callable[..., Awaitable[Any]]] | None = None
                    ) -> Processor:
        needs = tuple(getattr(module, "NEEDS", ()))
        return cls(name=module.NAME, accepts=tuple(module.ACCEPTS), handle=module.handle,
                   needs=needs, loaders={n: l for n, l in (loaders or {}).items() if n in needs})


@dataclass(frozen=True)
class Projection:
    """A batch sink.  ``write`` must be idempotent (replays re-deliver).  ``write(events)``
    runs in a worker thread; a coroutine function ``write(events, js)`` (a view kept in
    a KV bucket) runs on the runner's loop with its JetStream context."""

    name: str
    accepts: tuple[type[Event], ...]
    write: Callable[[Sequence[Event]], None]
    prepare: Callable[[], None] | None = None
    max_batch: int | None = None  # cap on messages per write (large messages: memory)


Component = Processor | Projection
