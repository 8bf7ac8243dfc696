"""`tagus deadletters list | republish`: what the consumers could not handle, and a retry.

Dead letters are events on the DEADLETTER stream carrying the original message (bytes,
headers, subject, stream sequence) and why it was parked.  After fixing the cause (a
mapping, a processor bug), ``republish`` puts the original message back on its subject;
the original is never edited or deleted.
"""

from __future__ import annotations

from nats.aio.client import Client

from bus.subjects import family_subjects, tenant_subjects
from contracts.deadletters import MessageDeadLettered
from contracts.errors import NotFoundError
from contracts.registry import decode


async def list_dead_letters(nc: Client, tenant: str | None = None,
                            limit: int = 100) -> list[tuple[int, MessageDeadLettered]]:
    """(DEADLETTER stream sequence, event) of the newest ``limit`` dead letters."""
    js = nc.jetstream()
    subject = tenant_subjects("deadletter", tenant) if tenant else family_subjects("deadletter")
    info = await js.stream_info("DEADLETTER")
    if not info.state.messages:
        return []
    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy="all")
    out: list[tuple[int, MessageDeadLettered]] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1.0)
            except TimeoutError:
                break
            out.append((msg.metadata.sequence.stream, decode("deadletter", msg.data)))
            if msg.metadata.num_pending == 0:
                break
    finally:
        await sub.unsubscribe()
    return out[-limit:]


async def republish(nc: Client, seq: int) -> str:
    """Put dead letter ``seq``'s original message back on its subject; returns the subject."""
    js = nc.jetstream()
    try:
        raw = await js.get_msg("DEADLETTER", seq)
    except Exception as e:  # noqa: BLE001 - the server says not found in several ways
        raise NotFoundError(f"no dead letter at DEADLETTER sequence {seq}: {e}") from e
    dead = decode("deadletter", raw.data)
    headers = {k: v for k, v in dead.headers.items() if not k.startswith("Nats-")}
    headers["Tagus-Republished-From"] = f"DEADLETTER:{seq}"
    await js.publish(dead.subject, dead.payload, headers=headers)
    return dead.subject


def format_rows(rows: list[tuple[int, MessageDeadLettered]]) -> str:
    if not rows:
        return "no dead letters"
    lines = [f"{'seq':>6}  {'recorded (UTC)':19}  {'tenant':10} {'consumer':20} "
             f"{'from':>14}  {'kind':14} reason"]
    for seq, d in rows:
        lines.append(f"{seq:6d}  {d.recorded_at:%Y-%m-%d %H:%M:%S}  {d.tenant:10} "
                     f"{d.consumer:20} {d.stream + ':' + str(d.stream_seq):>14}  "
                     f"{d.error_kind:14} {d.reason[:120]}")
    return "\n".join(lines)
