"""What the query API needs to run, as one frozen value (built by ``ops.serving``).

The API imports nothing from ``ops/``: the CLI reads the deployment settings and hands
this over.  Times in seconds, sizes in bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from contracts.errors import SetupError


@dataclass(frozen=True, kw_only=True)
class ApiConfig:
    tokens_path: Path
    host: str = "127.0.0.1"
    port: int = 8600
    log_level: str = "INFO"

    # QuestDB over PG wire
    pg_host: str = "127.0.0.1"
    pg_port: int = 8812
    pg_user: str = "admin"
    pg_password: str = field(default="quest", repr=False)
    pg_database: str = "qdb"

    pool_size: int = 8
    acquire_timeout_s: float = 5.0
    """Longest wait for a free pooled connection (or the tenant's query slot): then 503/429."""
    query_timeout_s: float = 30.0
    """Wall-clock bound of a request's database work, waits and connecting included: 504."""
    readiness_timeout_s: float = 2.0
    """``/readyz``: QuestDB counts as down when ``SELECT 1`` takes longer."""
    retry_after_s: int = 2
    """``Retry-After`` sent with 429, 503 and 504."""

    # per tenant
    tenant_max_queries: int = 4
    """Database connections one tenant may hold at once (keep below ``pool_size``)."""
    tenant_max_exports: int = 2
    """CSV exports one tenant may have streaming at once; one more is refused with 429."""

    # CSV exports: spooled whole before the first byte is sent
    export_memory_bytes: int = 8 * 2**20
    """Per export, kept in memory up to this size, then in a temporary file."""
    export_stall_timeout_s: float = 120.0
    """An export whose client accepts no data for this long is cut off (incomplete)."""

    def __post_init__(self) -> None:
        problems = []
        if self.pool_size < 1:
            problems.append(f"pool_size must be >= 1, got {self.pool_size}")
        if not 1 <= self.tenant_max_queries <= self.pool_size:
            problems.append(f"tenant_max_queries must be in 1..pool_size ({self.pool_size}), "
                            f"got {self.tenant_max_queries}")
        if self.tenant_max_exports < 1:
            problems.append(f"tenant_max_exports must be >= 1, got {self.tenant_max_exports}")
        for name in ("acquire_timeout_s", "query_timeout_s", "readiness_timeout_s",
                     "export_stall_timeout_s"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if self.acquire_timeout_s > self.query_timeout_s:
            problems.append(f"acquire_timeout_s ({self.acquire_timeout_s}) must not exceed "
                            f"query_timeout_s ({self.query_timeout_s})")
        if problems:
            raise SetupError("invalid query API configuration: " + "; ".join(problems))
