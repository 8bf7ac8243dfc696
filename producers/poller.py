"""Poll a JSON API on an interval and submit each raw response as an intake.

``poll_once`` fetches once and hands the response bytes, untouched, to ``submit`` with
source ``poller:<name>`` and the poller's ``PollMapping`` in ``params["mapping"]``
(JSON).  The normalise processor later calls the pure ``parse_polled`` on the stored
bytes and those params, so a replay parses them again with the mapping of that time.

Path syntax of a ``PollMapping``: dotted keys, ``[*]`` for every element of a list and
``[n]`` for one, e.g. ``data[*]`` or ``result.points[*]``; ``""`` is the node itself.
``items`` is evaluated on the response, the other paths on each item.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import msgspec
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.base import TENANT_RE
from contracts.errors import ContractError, TagusError, TenantConfigError, TransientError
from contracts.intake import RawIntakeReceived
from contracts.units import known_units, to_si
from producers.formats.jsonpush import add_json_value
from producers.formats.lineprotocol import ParseResult, ReadingCollector, SensorRule

log = structlog.get_logger("tagus.intake.poller")

_STEP = re.compile(r"\[(\*|\d+)\]")
_KEY = re.compile(r"[^.\[\]]+")
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TS_FORMATS = ("iso8601", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns")

Step = str | int | None  # key, list index, every list element
# the raw-intake boundary, called with keyword arguments (see producers.http_intake.Submit)
Submit = Callable[..., Awaitable[RawIntakeReceived]]


def compile_path(path: str) -> tuple[Step, ...]:
    """``"data[*].v"`` -> ``("data", None, "v")``; ValueError on bad syntax."""
    steps: list[Step] = []
    for part in path.split(".") if path not in ("", "$") else ():
        key = _KEY.match(part)
        rest = part[key.end():] if key else part
        if key:
            steps.append(key.group())
        pos = 0
        for m in _STEP.finditer(rest):
            if m.start() != pos:
                break
            steps.append(None if m.group(1) == "*" else int(m.group(1)))
            pos = m.end()
        if pos != len(rest) or (not key and not rest):
            raise ValueError(f"bad path {path!r} at {part!r}: expected key, key[*] or key[n]")
    return tuple(steps)


def select(doc: Any, steps: tuple[Step, ...]) -> list[Any]:
    """Every node ``steps`` reach from ``doc`` (missing keys reach nothing)."""
    nodes = [doc]
    for step in steps:
        found: list[Any] = []
        for node in nodes:
            if step is None:
                if isinstance(node, list):
                    found.extend(node)
            elif isinstance(step, int):
                if isinstance(node, list) and step < len(node):
                    found.append(node[step])
            elif isinstance(node, dict) and step in node:
                found.append(node[step])
        nodes = found
    return nodes


class PollMapping(BaseModel):
    """How to read readings out of a polled JSON response.

    ``sensor``: path to the sensor name in an item, or ``sensor_id`` for a response
    that is about one sensor.  Unit: ``units[sensor]`` if given, else the item's
    ``unit`` path.  ``ts_format``: ``iso8601``, ``epoch_s|ms|us|ns`` or a ``strptime``
    pattern; ``timezone`` (IANA name) places wall-clock times without an offset.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    items: str = "[*]"
    sensor: str = "sensor"
    sensor_id: str | None = None
    ts: str = "ts"
    value: str = "value"
    unit: str | None = None
    units: dict[str, str] = {}
    ts_format: str = "iso8601"
    timezone: str | None = None

    @field_validator("items", "sensor", "ts", "value", "unit")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None:
            compile_path(v)
        return v

    @field_validator("units")
    @classmethod
    def _units(cls, v: dict[str, str]) -> dict[str, str]:
        bad = sorted(u for u in v.values() if to_si(u) is None)
        if bad:
            raise ValueError(f"unknown units {bad}; known: {known_units()}")
        return v

    @field_validator("ts_format")
    @classmethod
    def _ts_format(cls, v: str) -> str:
        if v not in _TS_FORMATS and "%" not in v:
            raise ValueError(f"ts_format must be one of {_TS_FORMATS} or a strptime pattern")
        return v

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {v!r}; expected an IANA name") from None
        return v


class PollerConfig(BaseModel):
    """One polled API.  ``headers`` values may reference env vars as ``${NAME}``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")
    tenant: str = Field(pattern=TENANT_RE.pattern)
    url: str = Field(pattern=r"^https?://")
    headers: dict[str, str] = {}
    interval_s: float = Field(60.0, gt=0)
    timeout_s: float = Field(10.0, gt=0)
    backoff_initial_s: float = Field(5.0, gt=0)
    backoff_max_s: float = Field(600.0, gt=0)
    max_body_bytes: int = Field(64 * 1024 * 1024, gt=0)
    mapping: PollMapping = PollMapping()

    @property
    def source(self) -> str:
        return f"poller:{self.name}"


def mapping_params(config: PollerConfig) -> dict[str, str]:
    """The intake params that let ``parse_polled`` read this poller's responses."""
    return {"mapping": config.mapping.model_dump_json()}


def _expand(headers: Mapping[str, str], environ: Mapping[str, str]) -> dict[str, str]:
    def var(m: re.Match[str]) -> str:
        try:
            return environ[m.group(1)]
        except KeyError:
            raise TenantConfigError(f"header references ${{{m.group(1)}}} but that "
                                    f"environment variable is not set") from None
    return {k: _ENV_REF.sub(var, v) for k, v in headers.items()}


async def _fetch(config: PollerConfig, client: httpx.AsyncClient,
                 headers: dict[str, str]) -> bytes:
    try:
        async with asyncio.timeout(config.timeout_s):
            async with client.stream("GET", config.url, headers=headers,
                                     timeout=config.timeout_s) as resp:
                if resp.status_code >= 500 or resp.status_code == 429:
                    raise TransientError(f"{config.url} answered {resp.status_code}")
                if not 200 <= resp.status_code < 300:
                    raise TenantConfigError(f"{config.url} answered {resp.status_code}; "
                                            f"expected 2xx (check url and headers)")
                body = bytearray()
                async for chunk in resp.aiter_bytes():
                    body += chunk
                    if len(body) > config.max_body_bytes:
                        raise ContractError(f"{config.url} response exceeds "
                                            f"{config.max_body_bytes} bytes")
                return bytes(body)
    except (TimeoutError, httpx.TimeoutException):
        raise TransientError(f"{config.url} did not answer within {config.timeout_s} s") \
            from None
    except httpx.HTTPError as e:
        raise TransientError(f"{config.url}: {type(e).__name__}: {e}") from None


async def poll_once(config: PollerConfig, client: httpx.AsyncClient, submit: Submit, *,
                    environ: Mapping[str, str] | None = None) -> RawIntakeReceived | None:
    """Fetch ``config.url`` once and submit the raw body; None if it was empty.

    Raises TransientError (5xx, 429, timeout, connection), TenantConfigError (other
    non-2xx, missing env var) or ContractError (not JSON, too large): nothing is
    submitted then.
    """
    headers = _expand(config.headers, os.environ if environ is None else environ)
    body = await _fetch(config, client, headers)
    if not body.strip():
        return None
    try:
        msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise ContractError(f"{config.url} answered non-JSON ({e}): {body[:80]!r}") from None
    return await submit(tenant=config.tenant, source=config.source,
                        content_type="application/json", body=body,
                        params=mapping_params(config))


async def run_poller(config: PollerConfig, submit: Submit, stop: asyncio.Event, *,
                     client: httpx.AsyncClient | None = None,
                     environ: Mapping[str, str] | None = None) -> None:
    """Poll every ``interval_s`` until ``stop`` is set; one log line per poll.

    After a failure the next poll waits ``backoff_initial_s``, doubling per further
    failure up to ``backoff_max_s``; a success returns to ``interval_s``.  Failures
    are TagusError (``submit`` should raise TransientError when the store is down)
    or OSError/TimeoutError; anything else is a bug and propagates.
    """
    own_client = client is None
    client = client or httpx.AsyncClient()
    failures = 0
    try:
        while not stop.is_set():
            started = time.monotonic()
            fields: dict[str, Any] = {"poller": config.name, "tenant": config.tenant}
            try:
                intake = await poll_once(config, client, submit, environ=environ)
            except (TagusError, OSError, TimeoutError) as e:
                failures += 1
                wait = min(config.backoff_max_s, config.backoff_initial_s * 2 ** (failures - 1))
                log.warning("poll", outcome="failed", error=type(e).__name__, message=str(e),
                            failures=failures, retry_in_s=wait,
                            duration_ms=round((time.monotonic() - started) * 1000), **fields)
            else:
                failures = 0
                wait = max(0.0, config.interval_s - (time.monotonic() - started))
                log.info("poll", outcome="submitted" if intake else "empty",
                         intake_id=intake.event_id if intake else None,
                         size_bytes=intake.size_bytes if intake else 0,
                         duration_ms=round((time.monotonic() - started) * 1000), **fields)
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
            except TimeoutError:
                pass
    finally:
        if own_client:
            await client.aclose()


def parse_polled(body: bytes, params: Mapping[str, str]) -> ParseResult:
    """Readings in SI units from a polled response and its intake params (pure).

    Each item reached by ``items`` is one line of the accounting.  Raises
    TenantConfigError when ``params`` lack a valid mapping and ContractError when
    ``body`` is not JSON.
    """
    try:
        mapping = PollMapping.model_validate_json(params["mapping"])
    except KeyError:
        raise TenantConfigError("intake params lack 'mapping' (not a poller intake?)") \
            from None
    except ValidationError as e:
        raise TenantConfigError(f"poller mapping in the intake params is invalid: {e}") \
            from None
    try:
        doc = msgspec.json.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as e:
        raise ContractError(f"polled body is not JSON: {e}") from None
    tz = ZoneInfo(mapping.timezone) if mapping.timezone else None
    rules = {sensor: SensorRule(sensor, unit) for sensor, unit in mapping.units.items()}
    collector = ReadingCollector(rules)
    paths = {name: compile_path(p) for name, p in (
        ("sensor", mapping.sensor), ("ts", mapping.ts), ("value", mapping.value),
        ("unit", mapping.unit or ""))}
    for row, item in enumerate(select(doc, compile_path(mapping.items)), start=1):
        collector.start_line()
        _collect_item(collector, row, item, mapping, paths, tz)
        collector.end_line()
    return collector.result()


def _first(item: Any, steps: tuple[Step, ...]) -> Any:
    found = select(item, steps)
    return found[0] if found else None


def _collect_item(collector: ReadingCollector, row: int, item: Any, mapping: PollMapping,
                  paths: dict[str, tuple[Step, ...]], tz: ZoneInfo | None) -> None:
    sensor = mapping.sensor_id or _first(item, paths["sensor"])
    if isinstance(sensor, int) and not isinstance(sensor, bool):
        sensor = str(sensor)
    if not isinstance(sensor, str) or not sensor:
        collector.reject(row=row, sensor_id=None, raw=repr(item)[:200], reason="invalid_item",
                         detail=f"no sensor name at path {mapping.sensor!r}")
        return
    unit = _first(item, paths["unit"]) if mapping.unit else None
    add_json_value(collector, row, sensor, _first(item, paths["ts"]),
                   _first(item, paths["value"]), unit if isinstance(unit, str) else None,
                   fmt=mapping.ts_format, tz=tz)
