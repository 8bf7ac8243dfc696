"""Deployment settings, read once into a frozen object.

Every field can be set from a ``TAGUS_*`` environment variable or a ``.env`` file
(``TAGUS_NATS_PORT=4333``).  When ``TAGUS_NATS_URL`` / ``TAGUS_QUESTDB_HOST`` name
external servers, ``tagus stack`` does not start its own and every other command
talks to those servers instead.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TAGUS_", env_file=".env", extra="ignore", frozen=True
    )

    data_dir: Path = Field(Path("var"), description="Server data, pid files and logs")
    cache_dir: Path = Field(
        Path.home() / ".cache" / "tagus", description="Downloaded artefacts (QuestDB jar)"
    )

    shared_data: Path = Field(
        Path("../shared/data"), description="Sample utility files used by the demo"
    )

    # NATS. nats_url set = external server(s), comma separated; the stack starts none.
    nats_url: str | None = None
    nats_host: str = "127.0.0.1"
    nats_port: int = 4222
    nats_monitor_port: int = 8222
    nats_sync_always: bool = Field(
        False,
        description="fsync every JetStream write (sync_interval: always); "
        "without it an acknowledged write can be lost on power failure",
    )
    nats_user: str | None = None
    nats_password: str | None = None
    nats_creds: Path | None = None

    # QuestDB. questdb_external = true: use the server at questdb_host, start none.
    questdb_external: bool = False
    questdb_host: str = "127.0.0.1"
    questdb_http_port: int = 9000
    questdb_pg_port: int = 8812
    questdb_ilp_port: int = 9009
    questdb_min_http_port: int = 9003
    questdb_version: str = "9.3.4"
    questdb_jar: Path | None = Field(
        None, validation_alias=AliasChoices("QUESTDB_JAR", "TAGUS_QUESTDB_JAR")
    )
    questdb_user: str = "admin"
    questdb_password: str = "quest"
    java_home: Path | None = Field(
        None, validation_alias=AliasChoices("TAGUS_JAVA_HOME", "JAVA_HOME")
    )

    cli_timeout_s: float = Field(
        10.0, description="commands (status, topology, deadletters...) give up on an "
        "unreachable server after this long"
    )

    # Topology (applied by `tagus topology` / ensure_topology)
    stream_replicas: int = Field(1, description="3 on a NATS cluster: tolerates one server down")
    consumer_ack_wait_s: float = 30.0
    consumer_max_deliver: int = 5

    tokens_file: Path | None = Field(
        None, description="Hashed per-tenant tokens (default <data_dir>/tokens.yaml)"
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8600
    intake_http_port: int = 8601
    drop_dir: Path | None = Field(None, description="SFTP landing folder (<data_dir>/drop)")
    pollers_file: Path | None = Field(None, description="YAML list of API pollers")

    # Telemetry
    log_level: str = "INFO"
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint; unset = spans are not exported"
    )

    @property
    def nats_servers(self) -> list[str]:
        if self.nats_url:
            return [u.strip() for u in self.nats_url.split(",") if u.strip()]
        return [f"nats://{self.nats_host}:{self.nats_port}"]

    @property
    def tokens_path(self) -> Path:
        return Path(self.tokens_file or Path(self.data_dir) / "tokens.yaml")

    @property
    def embedded_nats(self) -> bool:
        return not self.nats_url

    @property
    def questdb_http_url(self) -> str:
        return f"http://{self.questdb_host}:{self.questdb_http_port}"


def load_settings(**overrides) -> Settings:
    """Read the environment (and ``.env``) once; explicit overrides win."""
    return Settings(**overrides)
