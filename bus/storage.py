"""JetStream-backed storage the topology owns: the raw-intake object store and KV buckets.

- ``tagus-intake`` (object store): the bytes of every upload, ``<tenant>/<sha256>``.
- ``tagus-mappings`` (KV): each tenant's source mappings, key ``<tenant>.<mapping_id>``,
  value the mapping's YAML text; history kept, so earlier versions stay inspectable.
- ``tagus-outputs`` (KV): the output ids of each processor per input (``bus/outputs.py``).
- ``tagus-intake-seen`` (KV): ``<tenant>.<sha256>`` -> intake event id; makes every
  distinct content ingested once per tenant, across restarts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js import api as js_api
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, NotFoundError

from bus.outputs import OUTPUTS_BUCKET
from contracts.forecasts import MODELS_BUCKET

CONFIG_BUCKET = "tagus-config"  # <tenant>.<kind> -> the current config.changed
CONFIG_FILES_BUCKET = "tagus-config-files"  # <tenant>/<sha256> -> a network file
TASK_STATE_BUCKET = "tagus-task-state"  # <tenant>.<task id> -> state, attempts
from contracts.base import validate_tenant
from contracts.errors import ContractError

INTAKE_BUCKET = "tagus-intake"
MAPPINGS_BUCKET = "tagus-mappings"
SEEN_BUCKET = "tagus-intake-seen"
_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


@dataclass(frozen=True)
class BucketSpec:
    name: str
    kind: str  # "object" | "kv"
    description: str
    history: int = 1  # kv only
    replicas: int = 1


def default_buckets(replicas: int = 1) -> tuple[BucketSpec, ...]:
    return (
        BucketSpec(INTAKE_BUCKET, "object", "raw uploads by content hash", replicas=replicas),
        BucketSpec(MAPPINGS_BUCKET, "kv", "source mappings per tenant", history=64,
                   replicas=replicas),
        BucketSpec(SEEN_BUCKET, "kv", "content hashes already ingested", replicas=replicas),
        BucketSpec(OUTPUTS_BUCKET, "kv", "output ids per processor and input (replays)",
                   replicas=replicas),
        BucketSpec(CONFIG_BUCKET, "kv", "current configuration per tenant and kind",
                   replicas=replicas),
        BucketSpec(CONFIG_FILES_BUCKET, "object", "large configuration bodies by hash",
                   replicas=replicas),
        BucketSpec("tagus-task-slots", "kv", "scheduler: slot claims (one request per slot)",
                   replicas=replicas),
        BucketSpec("tagus-task-cursors", "kv", "scheduler: slots handled per schedule",
                   replicas=replicas),
        BucketSpec(TASK_STATE_BUCKET, "kv", "each task's state and attempts",
                   replicas=replicas),
        BucketSpec(MODELS_BUCKET, "object", "trained forecast models by content hash",
                   replicas=replicas),
        BucketSpec("tagus-alert-notices", "kv", "one notification claim per channel and "
                   "alert transition", replicas=replicas),
    )


async def ensure_buckets(js: JetStreamContext, buckets: tuple[BucketSpec, ...]) -> list[str]:
    """Create the buckets that are missing; a bucket that exists with another number of
    replicas (``TAGUS_STREAM_REPLICAS`` changed on a cluster) gets its stream updated."""
    changes = []
    for b in buckets:
        try:
            if b.kind == "object":
                await js.object_store(b.name)
            else:
                await js.key_value(b.name)
        except (BucketNotFoundError, NotFoundError):
            pass
        else:
            stream = ("OBJ_" if b.kind == "object" else "KV_") + b.name
            have = (await js.stream_info(stream)).config
            if have.num_replicas != b.replicas:
                have.num_replicas = b.replicas
                await js.update_stream(have)
                changes.append(f"updated {b.kind} bucket {b.name}: replicas {b.replicas}")
            continue
        if b.kind == "object":
            await js.create_object_store(b.name, js_api.ObjectStoreConfig(
                description=b.description, storage=js_api.StorageType.FILE,
                replicas=b.replicas))
        else:
            await js.create_key_value(js_api.KeyValueConfig(
                bucket=b.name, description=b.description, history=b.history,
                storage=js_api.StorageType.FILE, replicas=b.replicas))
        changes.append(f"created {b.kind} bucket {b.name}")
    return changes


def mapping_key(tenant: str, mapping_id: str) -> str:
    if not _KEY_RE.match(mapping_id):
        raise ContractError(f"mapping id must match {_KEY_RE.pattern}, got {mapping_id!r}")
    return f"{validate_tenant(tenant)}.{mapping_id}"


def mapping_version(text: bytes) -> str:
    return hashlib.sha256(text).hexdigest()


async def put_mapping(js: JetStreamContext, tenant: str, mapping_id: str, text: bytes) -> str:
    """Store a (validated) mapping; returns its version (sha256 of the text)."""
    kv = await js.key_value(MAPPINGS_BUCKET)
    key = mapping_key(tenant, mapping_id)
    try:
        current = await kv.get(key)
        if current.value == text:
            return mapping_version(text)
    except KeyNotFoundError:
        pass
    await kv.put(key, text)
    return mapping_version(text)


async def get_mapping(js: JetStreamContext, tenant: str, mapping_id: str) -> bytes | None:
    kv = await js.key_value(MAPPINGS_BUCKET)
    try:
        return (await kv.get(mapping_key(tenant, mapping_id))).value
    except KeyNotFoundError:
        return None
