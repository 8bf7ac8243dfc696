"""Poll a JSON API on an interval and submit each raw response as an intake.

``poll_once`` fetches once and hands the response bytes, untouched, to ``submit`` with
source ``poller:<name>`` and the poller's ``PollMapping`` in ``params["mapping"]``
(JSON).  The normalise processor later parses the stored bytes with those params, so a
replay parses them again with the mapping of that time (``contracts.mapping.PollMapping``
describes the paths).

``kind: weather-forecast`` polls a weather-forecast API in the shape of Open-Meteo's
``/v1/forecast`` for the tenant's ``location`` (a name it chooses, e.g. ``rome-north``):
the params then say ``kind`` and ``location`` instead of a mapping, and the normalise
processor turns each body into a ``weather.forecast_received`` (issued when polled,
unless the body states an ``issued_at``; ``processors/normalise/weather.py``)::

    - name: meteo-rome
      tenant: acme
      kind: weather-forecast
      location: rome-north
      url: https://api.open-meteo.com/v1/forecast?latitude=41.9&longitude=12.5&hourly=...
      interval_s: 3600

with ``hourly=`` listing what the forecast needs: ``temperature_2m``, ``precipitation``,
``relative_humidity_2m``, ``wind_speed_10m``, ``cloud_cover``, ``shortwave_radiation``,
``direct_normal_irradiance``, ``diffuse_radiation`` (any unit Open-Meteo offers).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal

import httpx
import msgspec
import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.base import TENANT_RE
from contracts.errors import ContractError, TagusError, TenantConfigError, TransientError
from contracts.intake import RawIntakeReceived
from contracts.mapping import PollMapping
from contracts.readings import SENSOR_ID_RE
from contracts.weather import POLL_KIND

log = structlog.get_logger("tagus.intake.poller")

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# the raw-intake boundary, called with keyword arguments (see producers.http_intake.Submit)
Submit = Callable[..., Awaitable[RawIntakeReceived]]


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
    kind: Literal["readings", "weather-forecast"] = "readings"
    location: str | None = Field(None, pattern=SENSOR_ID_RE.pattern)  # weather-forecast

    @model_validator(mode="after")
    def _kind_fields(self) -> PollerConfig:
        if self.kind == POLL_KIND and self.location is None:
            raise ValueError("location: required for kind weather-forecast (the tenant's "
                             "name for the place, e.g. rome-north)")
        if self.kind == POLL_KIND and self.mapping != PollMapping():
            raise ValueError("mapping: not used by kind weather-forecast (its body has the "
                             "shape of Open-Meteo's /v1/forecast)")
        if self.kind == "readings" and self.location is not None:
            raise ValueError("location: only for kind weather-forecast")
        return self

    @property
    def source(self) -> str:
        return f"poller:{self.name}"


def mapping_params(config: PollerConfig) -> dict[str, str]:
    """The intake params that let the normalise processor read this poller's responses."""
    if config.kind == POLL_KIND:
        return {"kind": POLL_KIND, "location": config.location or ""}
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
