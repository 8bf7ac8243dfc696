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

    def progress(self, fraction: float, message: str = "") -> Event:
        """A ``task.progressed`` event for the task being handled (yield it): long work
        shows how far it is.  The runner publishes it like any output."""
        from contracts.tasks import TaskProgressed

        fraction = min(1.0, max(0.0, float(fraction)))
        return self.derive(TaskProgressed, key=f"progress/{fraction:.4f}/{message}",
                           task_id=self.input.event_id, kind=getattr(self.input, "kind", ""),
                           fraction=fraction, message=message)


@dataclass(frozen=True)
class Processor:
    """``needs``: resources the runner loads before calling ``handle``; ``loaders``: how
    (name -> async loader), bound by the bootstrap, never by the processor.

    ``concurrency``: how many events of one fetched batch the runner may have in hand at
    once (its handle waits on NATS more than on the CPU).  Events of one tenant are still
    handled in stream order; only different tenants overlap.  ``alone``: events that are
    handled with nothing else in flight (a large upload: memory)."""

    name: str
    accepts: tuple[type[Event], ...]
    handle: Callable[[Event, Context], Iterable[Event]]
    needs: tuple[str, ...] = ()
    loaders: Mapping[str, Callable[..., Awaitable[Any]]] = field(default_factory=dict)
    concurrency: int = 1
    alone: Callable[[Event], bool] | None = None

    @classmethod
    def from_module(cls, module: ModuleType, *,
                    loaders: Mapping[str, Callable[..., Awaitable[Any]]] | None = None,
                    concurrency: int = 1) -> Processor:
        needs = tuple(getattr(module, "NEEDS", ()))
        return cls(name=module.NAME, accepts=tuple(module.ACCEPTS), handle=module.handle,
                   needs=needs, loaders={n: l for n, l in (loaders or {}).items() if n in needs},
                   concurrency=max(1, concurrency), alone=getattr(module, "handled_alone", None))


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


@dataclass(frozen=True)
class Blob:
    """Bytes a task handler wants kept (a trained model): the runner puts them in object
    store ``bucket`` under ``name`` before publishing the events that follow, which refer
    to them.  Content-addressed names make the put idempotent."""

    bucket: str
    name: str
    data: bytes


@dataclass(frozen=True)
class TaskWorker:
    """Does tasks of some kinds: ``handlers`` maps a task kind to a pure
    ``handle(task_requested, ctx) -> events`` (a generator may yield ``ctx.progress(...)``
    along the way).  Run by ``bus.tasks.TaskRunner``: each task in a child process (so a
    time limit or a cancel can stop it), at most ``concurrency`` at once and
    ``per_tenant`` of one tenant at once (fairness); ``max_attempts`` deliveries before a
    task whose worker keeps dying or failing transiently is given up."""

    name: str
    handlers: Mapping[str, Callable[[Event, Context], Iterable[Event]]]
    needs: tuple[str, ...] = ()
    loaders: Mapping[str, Callable[..., Awaitable[Any]]] = field(default_factory=dict)
    concurrency: int = 1
    per_tenant: int = 1
    time_limit_s: float = 900.0
    max_attempts: int = 3
    preload: tuple[str, ...] = ()  # modules the child processes import once, up front

    @property
    def accepts(self) -> tuple[type[Event], ...]:
        from contracts.tasks import TaskRequested

        return (TaskRequested,)

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(sorted(self.handlers))


Component = Processor | Projection | TaskWorker
