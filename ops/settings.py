"""Deployment settings, read once into a frozen object.

Every field can be set from a ``TAGUS_*`` environment variable or a ``.env`` file
(``TAGUS_NATS_PORT=4333``).  When ``TAGUS_NATS_URL`` / ``TAGUS_QUESTDB_HOST`` name
external servers, ``tagus stack`` does not start its own and every other command
talks to those servers instead.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from contracts.errors import SetupError


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
    nats_mqtt_port: int | None = Field(
        None, description="open nats-server's MQTT listener on this port (tenant users may "
        "then subscribe to their schedules over MQTT); unset = no MQTT"
    )
    # Credentials of Tagus' own processes.  Unset with the embedded stack: they come from
    # the service user `tagus stack up` generated (<data_dir>/nats/service-user.json).
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
    processor_concurrency: int = Field(
        8, ge=1, le=64, description="events of one batch normalise (and normalise-units) "
        "handle at once; one tenant's events stay in order")
    consumer_max_deliver: int = 5

    tokens_file: Path | None = Field(
        None, description="Hashed per-tenant tokens (default <data_dir>/tokens.yaml)"
    )
    api_host: str = "127.0.0.1"
    api_port: int = 8600
    intake_http_port: int = 8601
    drop_dir: Path | None = Field(None, description="SFTP landing folder (<data_dir>/drop)")
    pollers_file: Path | None = Field(None, description="YAML list of API pollers")

    # OPC UA (tagus serve opcua): released schedules for SCADA, acknowledgements back.
    opcua_host: str = "127.0.0.1"
    opcua_port: int = 4840
    opcua_certificate: Path | None = Field(
        None, description="server certificate (DER or PEM); with opcua_private_key the "
        "endpoint is Basic256Sha256 SignAndEncrypt only, without them it is unencrypted"
    )
    opcua_private_key: Path | None = None

    # Telemetry
    log_level: str = "INFO"
    otlp_endpoint: str | None = Field(
        None, description="OTLP/HTTP traces endpoint; unset = spans are not exported. "
        "Metrics go to the same collector's /v1/metrics (ops/telemetry.py)"
    )
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(
        None, description="`tagus run`: serve /healthz, /readyz and /metrics (Prometheus) "
        "on this port; 0 = a free port (logged); unset = no listener"
    )
    metrics_poll_s: float = Field(
        5.0, description="how often `tagus run` reads its consumers' info for the lag gauge"
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
    def nats_dir(self) -> Path:
        """The embedded nats-server's directory: JetStream store, configuration and users
        (``service-user.json``, ``tenant-users.json``, ``auth.conf``; all mode 0600)."""
        return Path(self.data_dir) / "nats"

    @property
    def nats_service_user_file(self) -> Path:
        return self.nats_dir / "service-user.json"

    def nats_auth(self) -> tuple[str | None, str | None]:
        """(user, password) Tagus' own processes connect with.

        ``TAGUS_NATS_USER``/``_PASSWORD`` when set; nothing when only ``TAGUS_NATS_CREDS``
        is (the creds file authenticates); else, with the embedded stack, the service user
        ``tagus stack up`` generated.  Reads that file on every call (``stack up`` may
        write it after these settings were loaded); (None, None) when it does not exist.
        """
        if self.nats_user:
            return self.nats_user, self.nats_password
        if self.nats_creds or not self.embedded_nats:
            return None, None
        path = self.nats_service_user_file
        try:
            service = json.loads(path.read_text())
            return service["user"], service["password"]
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise SetupError(f"cannot read the NATS service user from {path} ({e}); "
                             "delete it and run `tagus stack up` to generate a new one") from None

    @property
    def questdb_http_url(self) -> str:
        return f"http://{self.questdb_host}:{self.questdb_http_port}"


def load_settings(**overrides) -> Settings:
    """Read the environment (and ``.env``) once; explicit overrides win."""
    return Settings(**overrides)
