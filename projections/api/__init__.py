"""The operators' query API: sensors, latest values, ranges and uploads from QuestDB, per tenant.

Every `/v1` route needs a token with the `read` scope (`Authorization: Bearer <token>` or
`X-API-Key: <token>`); the tenant is the token's, never a parameter.

**Routes**: `GET /v1/sensors`, `/v1/latest?sensor=..`, `/v1/sensors/{sensor}/latest`,
`/v1/sensors/{sensor}/readings?start&end&bucket&agg&fill&format&limit`, `/v1/intakes`,
`/v1/intakes/{intake_id}/rejections`; `/v1/config`, `/v1/tasks`, `/v1/forecasts`,
`/v1/kpis`, `/v1/alerts`, `/v1/schedules` (their modules `routes_*.py` say more; writes
need the `operate` or `admin` scope); `/healthz` (liveness), `/readyz` (readiness), no
token.  Sensor ids follow the one rule of the readings contract (a letter or digit, then
letters, digits, `_ . : -`, at most 128 characters): every id a door accepts is queryable.

**Errors** are JSON `{"error", "detail"}` (+ `"parameter"` on 422, + `"retry_after_s"` and a
`Retry-After` header on 429/503/504), the detail saying what to change: 401 no token,
403 unknown token or missing scope, 404 unknown sensor or upload, 422 bad parameter,
429 the tenant's share is in use, 503 `busy` (every pooled connection stayed busy for the
acquire timeout) or `unavailable` (QuestDB refused or dropped the connection), 504
`timeout` (QuestDB did not answer within the query timeout), 500 a bug (see the log).

**Limits** (`ApiConfig`): a pool of `pool_size` connections; a tenant holds at most
`tenant_max_queries` of them and streams at most `tenant_max_exports` CSV exports at
once; waiting for a connection ends after `acquire_timeout_s`; a request's database
work (waits, connecting, queries) ends after `query_timeout_s` of wall-clock time even
when QuestDB hangs.  JSON answers at most 100,000 points, CSV 1,000,000; a range spans at
most 400 days and 100,000 buckets.

**CSV completeness**: an export is queried to the end before its first byte is sent
(the database connection is free again while the client downloads), so a query failure
is a JSON error, not a 200.  The body ends with the line `# end: N rows` (N data rows)
only when complete, and is sent with `Content-Length`: a transfer cut midway is an
incomplete HTTP response and a partial file has no end line.

**Health**: `/healthz` answers 200 while the process serves (no QuestDB round trip);
`/readyz` answers 200 when QuestDB answers `SELECT 1` on a connection of its own and a
pooled connection is free, else 503 with `status` `busy` (QuestDB fine, pool full) or
`unavailable` (QuestDB down), plus the probe's latency and pool counts.
"""

from projections.api.app import create_app, serve
from projections.api.config import ApiConfig

__all__ = ["ApiConfig", "create_app", "serve"]
