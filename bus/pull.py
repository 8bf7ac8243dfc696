"""Pull requests bounded by bytes as well as by count.

nats-py's ``fetch`` asks only for a number of messages: a consumer of large messages
(readings batches, rejections, up to the server's ``max_payload`` each) could be handed
more bytes at once than the client's pending limit, and the server then cuts it off as a
slow consumer.  ``Puller`` speaks the JetStream pull protocol itself, on a private inbox:
each request carries ``batch``, ``max_bytes`` and ``expires``, so the server never sends
more than ``max_bytes`` per fetch.  Messages are ordinary nats-py ``Msg`` objects (``ack``,
``nak``, ``in_progress``, ``term``, ``metadata`` all work).
"""

from __future__ import annotations

import json
import time

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

MIN_MAX_BYTES = 16 * 1024 * 1024
_HEARTBEAT = "100"


class Puller:
    """Fetches from one durable pull consumer, at most ``max_bytes`` per fetch.

    ``max_bytes`` must exceed the largest message (the server never splits one): it is
    at least twice the server's ``max_payload``.
    """

    def __init__(self, nc: Client, stream: str, durable: str, *,
                 max_bytes: int | None = None) -> None:
        self.nc = nc
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        payload = getattr(nc, "max_payload", 0) or 0
        self.max_bytes = max(max_bytes or MIN_MAX_BYTES, 2 * payload + 64 * 1024)
        self._sub: Subscription | None = None
        self._inbox = ""

    async def _subscription(self) -> Subscription:
        if self._sub is None:
            self._inbox = self.nc.new_inbox()
            self._sub = await self.nc.subscribe(
                self._inbox, pending_msgs_limit=100_000,
                pending_bytes_limit=4 * self.max_bytes)
        return self._sub

    async def fetch(self, batch: int, timeout: float) -> list[Msg]:
        """Up to ``batch`` messages and ``max_bytes`` bytes, waiting at most ``timeout``
        seconds for the first; an empty list when nothing is pending.

        Every request ends on the server before this returns (a ``no_wait`` request ends
        with what is there; a waiting one asks for one message): no pull is left open to
        deliver messages that would then wait, un-heartbeated, in the inbox.
        """
        sub = await self._subscription()
        msgs = self._leftovers(sub, batch)
        if msgs:
            return msgs
        msgs = await self._request(sub, {"batch": batch, "no_wait": True}, 5.0)
        if msgs:
            return msgs
        msgs = await self._request(sub, {"batch": 1, "expires": int(timeout * 1e9)},
                                   timeout + 1.0)
        if msgs and batch > 1:
            msgs += await self._request(sub, {"batch": batch - 1, "no_wait": True}, 5.0)
        return msgs

    async def _request(self, sub: Subscription, request: dict, wait_s: float) -> list[Msg]:
        request["max_bytes"] = self.max_bytes
        await self.nc.publish(self.subject, json.dumps(request).encode(), reply=self._inbox)
        deadline = time.monotonic() + wait_s
        msgs: list[Msg] = []
        while len(msgs) < request["batch"]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                msg = await sub.next_msg(timeout=remaining)
            except TimeoutError:
                break
            status = _status(msg)
            if status == _HEARTBEAT:
                continue
            if status is not None:  # 404 no messages, 408 expired, 409 limits: request over
                break
            msgs.append(msg)
        return msgs

    def _leftovers(self, sub: Subscription, batch: int) -> list[Msg]:
        """Messages of an earlier request that arrived after it was given up: they are
        real deliveries (ack-able), handed out before asking for more."""
        msgs = []
        queue = sub._pending_queue  # nats-py keeps undelivered messages here
        while len(msgs) < batch and not queue.empty():
            msg = queue.get_nowait()
            queue.task_done()
            sub._pending_size -= len(msg.data)
            if _status(msg) is None:
                msgs.append(msg)
        return msgs

    async def close(self) -> None:
        if self._sub is not None:
            sub, self._sub = self._sub, None
            try:
                await sub.unsubscribe()
            except Exception:  # noqa: BLE001 - best effort on a broken connection
                pass


def _status(msg: Msg) -> str | None:
    if msg.data or not msg.headers:
        return None
    return msg.headers.get("Status")
