"""`tagus serve intake`: the push endpoints, the drop folder and the API pollers.

One process, one NATS connection: Telegraf-compatible line protocol and JSON push on
``TAGUS_INTAKE_HTTP_PORT``, the drop folder under ``TAGUS_DROP_DIR`` (default
``<data_dir>/drop``), and every poller listed in ``TAGUS_POLLERS_FILE`` (YAML list of
poller configs).  Each upload becomes raw intake; the normalise processor parses it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats.errors
import structlog
import yaml
from pydantic import ValidationError

from bus.topology import ensure_topology
from contracts.errors import TenantConfigError
from ops import telemetry, wiring
from ops.service import install_stop_signals
from ops.settings import Settings
from producers.dropfolder import DropFolder
from producers.http_intake import create_intake_app, serve_intake
from producers.intake import Intake
from producers.poller import PollerConfig, run_poller

log = structlog.get_logger("tagus.intake")


def load_pollers(path: Path | None) -> list[PollerConfig]:
    if path is None:
        return []
    try:
        doc = yaml.safe_load(Path(path).read_text()) or []
        return [PollerConfig.model_validate(item) for item in doc]
    except (OSError, yaml.YAMLError, ValidationError, TypeError) as e:
        raise TenantConfigError(f"pollers file {path}: {e}") from e


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT.  A NATS outage is ridden out, never fatal: pushes are
    answered 503 with ``Retry-After``, drop-folder files stay where they are and pollers
    back off until NATS is back (the connection reconnects forever)."""
    pollers = load_pollers(settings.pollers_file)
    drop_dir = Path(settings.drop_dir or Path(settings.data_dir) / "drop")
    drop_dir.mkdir(parents=True, exist_ok=True)
    nc = await wiring.nats_connection(settings, name="tagus-intake")
    stop = asyncio.Event()
    install_stop_signals(stop)
    try:
        await ensure_topology(nc.jetstream(), wiring.topology(settings))
        intake = Intake(nc.jetstream(), nc=nc)
        tokens = await wiring.token_view(settings, nc)
        app = create_intake_app(tokens, intake.submit)
        telemetry.configure_metrics("tagus-intake", settings.otlp_endpoint)
        telemetry.instrument_app(app, "intake", ready=telemetry.nats_ready(nc))
        tasks = [
            serve_intake(app, settings.api_host, settings.intake_http_port, stop=stop),
            DropFolder(drop_dir, intake).run(stop),
            *(run_poller(p, intake.submit, stop) for p in pollers),
        ]
        log.info("intake serving", http_port=settings.intake_http_port,
                 drop_dir=str(drop_dir), pollers=[p.name for p in pollers])
        await asyncio.gather(*tasks)
    finally:
        try:
            await asyncio.wait_for(nc.drain(), settings.cli_timeout_s)
        except (TimeoutError, nats.errors.Error) as e:  # NATS down at shutdown
            log.warning("nats drain failed at shutdown", error=f"{type(e).__name__}: {e}")
            await nc.close()
