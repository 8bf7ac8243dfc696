"""Response shapes, for the OpenAPI docs at ``/docs`` (routes answer with msgspec JSON)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


class ErrorOut(BaseModel):
    error: str
    detail: str
    parameter: str | None = None
    retry_after_s: int | None = None


ERRORS = {s: {"model": ErrorOut} for s in (401, 403, 404, 422, 429, 500, 503, 504)}


class SensorOut(BaseModel):
    sensor: str
    unit: str
    first_ts: datetime
    last_ts: datetime
    count: int


class SensorsOut(BaseModel):
    tenant: str
    sensors: list[SensorOut]


class ReadingOut(BaseModel):
    sensor: str
    ts: datetime
    value: float | None
    unit: str
    quality: int


class LatestOut(BaseModel):
    tenant: str
    readings: list[ReadingOut]


class PointOut(BaseModel):
    ts: datetime
    value: float | None


class ReadingsOut(BaseModel):
    tenant: str
    sensor: str
    unit: str
    start: datetime
    end: datetime
    bucket: str | None
    agg: str | None
    fill: str | None
    truncated: bool
    points: list[PointOut]


class PoolOut(BaseModel):
    size: int
    in_use: int
    waiting: int


class HealthOut(BaseModel):
    status: str
    pool: PoolOut


class QuestDbOut(BaseModel):
    reachable: bool
    ms: float | None
    error: str | None


class ReadyOut(BaseModel):
    status: str  # ready | busy (pool exhausted, QuestDB fine) | unavailable (QuestDB down)
    detail: str
    questdb: QuestDbOut
    pool: PoolOut
    tenants: dict[str, int]
