"""Who may connect to the embedded NATS server, and to which subjects.

Every user lives in ``<data_dir>/nats/auth.conf``, which ``nats.conf`` includes:

- the **service user** ``tagus`` (every Tagus process; no restriction).  Its password is
  generated once, by the first ``tagus stack up``, and kept in ``service-user.json``;
  ``Settings.nats_auth`` reads it there, so processes on the embedded stack need no
  configuration.
- one **tenant user** per tenant, ``tenant-<id>``, for sources outside Tagus that speak
  NATS themselves (a SCADA gateway, Telegraf's NATS output).  It may publish only its
  tenant's ``readings.reported``, and subscribe only to its tenant's schedules and alerts
  and to its own inbox prefix ``_INBOX_<id>`` (``tenant_permissions``).  No JetStream
  API at all: a publish still gets JetStream's ack, because the ack is a reply to the
  publisher's inbox, which needs no ``$JS.API`` permission.

**MQTT** (``TAGUS_NATS_MQTT_PORT``: nats-server's own MQTT listener, ``ops/dev/stack.py``).
A tenant user may connect as ``STANDARD`` (NATS) or ``MQTT`` client, never WebSocket or
leafnode; the subject permissions are the same either way, so over MQTT it subscribes to
``tagus/schedule/<id>/released`` (and its alerts) and a subscription to another tenant's
topic is refused (SUBACK failure).  It gets none of the ``$MQTT.>`` subjects: nats-server's
docs of older versions ask for subscribe ``$MQTT.sub.>`` for QoS 1 subscriptions, but 2.15
delivers QoS 1 (persistent sessions included) without it, and the permission would let the
same user's *NATS* connection subscribe to ``$MQTT.sub.>`` and read every MQTT session's
QoS 1 deliveries, other tenants' included (both checked against nats-server 2.15.1).
Schedules reach MQTT subscribers at QoS 0: they are published on NATS, and a NATS message
carries no QoS (an MQTT client that was offline misses them; it reads the schedule in
force from OPC UA, or waits for the next release).  MQTT client ids are per account:
tenants should use ids starting with their tenant id (``<id>-scada``), since a second
client with the same id replaces the first (no data crosses: the server re-checks the
newcomer's permissions when it takes over a session).

Passwords are 32 random bytes, shown once; the configuration and ``tenant-users.json``
hold only bcrypt hashes (all three files mode 0600, the directory 0700).  Each change
rewrites ``auth.conf`` and reloads the running server with SIGHUP, confirmed by the
monitor's ``config_load_time``: no restart, and the reload itself closes connections
whose password is no longer valid.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import bcrypt
import psutil

from bus.subjects import event_subjects, tenant_subjects
from contracts.base import validate_tenant
from contracts.errors import SetupError
from contracts.readings import ReadingsReported
from ops.settings import Settings

SERVICE_USER = "tagus"
AUTH_CONF = "auth.conf"  # beside nats.conf, which includes it
CLUSTER_FILE = "cluster.json"  # the nodes of `tagus stack up --cluster N`, when there is one
# Both secrets are 32 random bytes, beyond any guessing whatever the cost; the cost is
# paid on every connect and, for each connected client, on every reload.  The service
# user connects often (every command, every process after a server restart).
_SERVICE_BCRYPT_COST = 6
_TENANT_BCRYPT_COST = 10
_RELOAD_TIMEOUT_S = 10.0
# NATS clients and MQTT clients (the listener exists only with TAGUS_NATS_MQTT_PORT)
TENANT_CONNECTION_TYPES = ("STANDARD", "MQTT")


@dataclass(frozen=True)
class TenantCredentials:
    """What a tenant's NATS client needs.  ``password`` is set only right after it was
    issued or rotated (it is stored nowhere); ``outcome``: issued, rotated or exists."""

    tenant: str
    user: str
    password: str | None
    servers: tuple[str, ...]
    inbox_prefix: str
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    issued_at: str
    outcome: str
    server: str  # what the running nats-server did about it, for the operator
    mqtt_url: str | None = None  # nats-server's MQTT listener, when it has one


def tenant_user(tenant: str) -> str:
    return f"tenant-{validate_tenant(tenant)}"


def inbox_prefix(tenant: str) -> str:
    """The tenant's reply subjects (``_INBOX_<id>.>``): not ``_INBOX.>``, where every
    other client's replies (the service user's JetStream API answers included) arrive."""
    return f"_INBOX_{validate_tenant(tenant)}"


def tenant_permissions(tenant: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(publish, subscribe) subjects a tenant user is allowed; everything else is denied."""
    publish = (event_subjects(ReadingsReported, tenant),)
    subscribe = (tenant_subjects("schedule", tenant), tenant_subjects("alert", tenant),
                 f"{inbox_prefix(tenant)}.>")
    return publish, subscribe


# ---------------------------------------------------------------- issuing


def issue_credentials(settings: Settings, tenant: str, *,
                      rotate: bool = False) -> TenantCredentials:
    """Create the tenant's NATS user with a fresh password, or with ``rotate`` replace
    its password (the old one stops working, open connections using it are closed).
    A user that exists is left alone without ``rotate`` (outcome ``exists``, no password).

    Side effects: ``tenant-users.json`` and ``auth.conf`` rewritten, the embedded
    nats-server reloaded if it runs (else the next ``tagus stack up`` applies it).
    """
    _embedded_only(settings, tenant)
    with _locked(settings):
        tenants = _load_tenants(settings)
        current = tenants.get(tenant)
        if current and not rotate:
            return _credentials(settings, tenant, current, None, "exists", "unchanged")
        password = secrets.token_urlsafe(32)
        now = _now()
        tenants[tenant] = {
            "user": tenant_user(tenant),
            "password_bcrypt": _hash(password, _TENANT_BCRYPT_COST),
            "created_at": current["created_at"] if current else now,
            "issued_at": now,
        }
        _save_tenants(settings, tenants)
        _write_auth_conf(settings)
        server = _reload_or_explain(settings, tenant)
    return _credentials(settings, tenant, tenants[tenant], password,
                        "rotated" if current else "issued", server)


def revoke_credentials(settings: Settings, tenant: str) -> bool:
    """Delete the tenant's NATS user (a suspended tenant): its connections are closed
    by the reload.  False when it had none."""
    _embedded_only(settings, tenant)
    with _locked(settings):
        tenants = _load_tenants(settings)
        if tenants.pop(tenant, None) is None:
            return False
        _save_tenants(settings, tenants)
        _write_auth_conf(settings)
        reload_server(settings)
    return True


def _embedded_only(settings: Settings, tenant: str) -> None:
    validate_tenant(tenant)
    if not settings.embedded_nats:
        publish, subscribe = tenant_permissions(tenant)
        raise SetupError(
            f"TAGUS_NATS_URL names an external NATS server, whose users Tagus does not "
            f"manage: give user {tenant_user(tenant)!r} there publish allow "
            f"{list(publish)}, subscribe allow {list(subscribe)} and nothing else")


def configure(settings: Settings) -> bool:
    """Generate the service user if there is none, and write ``auth.conf`` from the
    users on file (``tagus stack up``, before starting or reloading the server).
    True when ``auth.conf`` changed."""
    with _locked(settings):
        return _write_auth_conf(settings)


# ---------------------------------------------------------------- reloading


def reload_server(settings: Settings) -> str:
    """Have the running embedded nats-server re-read its configuration (SIGHUP) and wait
    until its monitor reports the new load time; on a cluster (``tagus stack up
    --cluster N``) every running node, which all include the same ``auth.conf``.
    Returns what happened, one line; raises ``SetupError`` when a server did not take
    the new configuration."""
    running = [(pid, port) for pid_file, port in embedded_servers(settings)
               if (pid := _server_pid(pid_file)) is not None]
    if not running:
        return "nats-server not running: applied at the next `tagus stack up`"
    before = {}
    for pid, port in running:
        before[pid] = _config_load_time(settings, port)
        if before[pid] is None:
            raise SetupError(f"nats-server (pid {pid}) does not answer on its monitor port "
                             f"{port}; cannot confirm a reload")
    for pid, _ in running:
        os.kill(pid, signal.SIGHUP)
    waiting = dict(running)
    deadline = time.monotonic() + _RELOAD_TIMEOUT_S
    while waiting and time.monotonic() < deadline:
        for pid, port in list(waiting.items()):
            loaded = _config_load_time(settings, port)
            if loaded is not None and loaded != before[pid]:
                del waiting[pid]
        if waiting:
            time.sleep(0.05)
    pids = ", ".join(str(pid) for pid, _ in running)
    if not waiting:
        return f"nats-server reloaded (pid {pids})"
    log = Path(settings.data_dir).resolve() / "log"
    raise SetupError(f"nats-server (pid {', '.join(map(str, waiting))}) did not reload its "
                     f"configuration within {_RELOAD_TIMEOUT_S:g} s; its reason is in "
                     f"{log}/nats*.log")


def embedded_servers(settings: Settings) -> list[tuple[Path, int]]:
    """(pid file, monitor port) of each embedded nats-server: the one of ``tagus stack up``
    (``<data_dir>/run/nats.pid``), or the nodes ``tagus stack up --cluster N`` recorded
    in ``<data_dir>/nats/cluster.json`` (written by ``ops/dev/stack.py``)."""
    run = Path(settings.data_dir).resolve() / "run"
    try:
        nodes = json.loads((settings.nats_dir / CLUSTER_FILE).read_text())["nodes"]
        return [(run / f"{n['proc']}.pid", int(n["monitor_port"])) for n in nodes]
    except FileNotFoundError:
        return [(run / "nats.pid", settings.nats_monitor_port)]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SetupError(f"cannot read the NATS cluster layout {settings.nats_dir / CLUSTER_FILE}"
                         f" ({e}); `tagus stack down`, then `tagus stack up --cluster N` "
                         "rewrites it") from None


def _reload_or_explain(settings: Settings, tenant: str) -> str:
    try:
        return reload_server(settings)
    except SetupError as e:
        raise SetupError(f"{e}. The new password was not shown: once the server is healthy, "
                         f"run `tagus tenant credentials {tenant} --rotate`") from None


def _server_pid(pid_file: Path) -> int | None:
    """The embedded server's pid from a pid file ``tagus stack up`` wrote (pid, then a
    marker found in its command line); None when that process is not running."""
    try:
        pid, _, marker = pid_file.read_text().partition("\n")
        proc = psutil.Process(int(pid))
        alive = proc.status() != psutil.STATUS_ZOMBIE
        ours = bool(marker.strip()) and marker.strip() in " ".join(proc.cmdline())
    except (OSError, ValueError, psutil.Error):
        return None
    return proc.pid if alive and ours else None


def _config_load_time(settings: Settings, monitor_port: int) -> str | None:
    url = f"http://{settings.nats_host}:{monitor_port}/varz"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return json.loads(r.read()).get("config_load_time")
    except (urllib.error.URLError, OSError, ValueError):
        return None


# ---------------------------------------------------------------- files


@contextlib.contextmanager
def _locked(settings: Settings):
    """One writer of the user files at a time (two `tagus tenant credentials` at once)."""
    directory = settings.nats_dir
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    with open(directory / ".users.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _tenants_file(settings: Settings) -> Path:
    return settings.nats_dir / "tenant-users.json"


def _load_tenants(settings: Settings) -> dict[str, dict]:
    path = _tenants_file(settings)
    try:
        return json.loads(path.read_text())["tenants"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SetupError(f"cannot read the tenant NATS users from {path} ({e})") from None


def _save_tenants(settings: Settings, tenants: dict[str, dict]) -> None:
    _write_private(_tenants_file(settings),
                   json.dumps({"tenants": tenants}, indent=2, sort_keys=True) + "\n")


def _service_user(settings: Settings) -> dict:
    """The service user on file, generated (once) if there is none."""
    path = settings.nats_service_user_file
    try:
        service = json.loads(path.read_text())
        if not all(isinstance(service.get(k), str)
                   for k in ("user", "password", "password_bcrypt")):
            raise ValueError("expected user, password and password_bcrypt")
        return service
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        raise SetupError(f"cannot read the NATS service user from {path} ({e}); delete it "
                         "and run `tagus stack up` to generate a new one") from None
    password = secrets.token_urlsafe(32)
    service = {"user": SERVICE_USER, "password": password,
               "password_bcrypt": _hash(password, _SERVICE_BCRYPT_COST),
               "created_at": _now()}
    _write_private(path, json.dumps(service, indent=2) + "\n")
    return service


def _auth_conf(service: dict, tenants: dict[str, dict]) -> str:
    q = json.dumps  # a double-quoted string: nats.conf would read a bare $2a$... as a variable
    lines = ["# written by Tagus (ops/nats_users.py): `tagus stack up`, `tagus tenant "
             "credentials`; edits are overwritten",
             "authorization {", "  users: [",
             f"    {{user: {q(service['user'])}, password: {q(service['password_bcrypt'])}}}"]
    for tenant in sorted(tenants):
        publish, subscribe = tenant_permissions(tenant)
        entry = tenants[tenant]
        lines += [
            f"    {{user: {q(entry['user'])}, password: {q(entry['password_bcrypt'])},",
            f"      allowed_connection_types: {q(list(TENANT_CONNECTION_TYPES))},",
            f"      permissions: {{publish: {{allow: {q(list(publish))}}},",
            f"                    subscribe: {{allow: {q(list(subscribe))}}}}}}}",
        ]
    return "\n".join([*lines, "  ]", "}", ""])


def _write_auth_conf(settings: Settings) -> bool:
    text = _auth_conf(_service_user(settings), _load_tenants(settings))
    return _write_private(settings.nats_dir / AUTH_CONF, text)


def _write_private(path: Path, text: str) -> bool:
    """Replace ``path`` with ``text`` atomically, mode 0600.  False if it held it already."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            os.chmod(path, 0o600)
            return False
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True


def _hash(password: str, cost: int) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=cost, prefix=b"2a")).decode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ---------------------------------------------------------------- showing


def _credentials(settings: Settings, tenant: str, entry: dict, password: str | None,
                 outcome: str, server: str) -> TenantCredentials:
    publish, subscribe = tenant_permissions(tenant)
    return TenantCredentials(
        tenant=tenant, user=entry["user"], password=password,
        servers=tuple(settings.nats_servers), inbox_prefix=inbox_prefix(tenant),
        publish=publish, subscribe=subscribe, issued_at=entry["issued_at"],
        outcome=outcome, server=server,
        mqtt_url=(f"mqtt://{settings.nats_host}:{settings.nats_mqtt_port}"
                  if settings.nats_mqtt_port is not None else None))


def example(creds: TenantCredentials) -> str:
    """A nats-py script that publishes one reading and prints the tenant's released
    schedules (needs ``pip install nats-py msgspec``)."""
    t = creds.tenant
    return f'''import asyncio, datetime as dt, time, uuid, msgspec, nats

async def main():
    nc = await nats.connect("{creds.servers[0]}", user="{creds.user}",
                            password="{creds.password or '<password>'}",
                            inbox_prefix="{creds.inbox_prefix}")
    async def on_schedule(msg): print("schedule", msg.subject, len(msg.data), flush=True)
    await nc.subscribe("tagus.schedule.{t}.released", cb=on_schedule)
    now, event_id = dt.datetime.now(dt.timezone.utc), str(uuid.uuid4())
    series = {{"sensor_id": "T1_level", "unit": "m", "timestamps_ns": [time.time_ns()],
              "values": [3.25]}}
    reading = {{"type": "readings.reported", "event_id": event_id, "tenant": "{t}",
               "occurred_at": now, "recorded_at": now, "source": "scada-gw", "series": [series]}}
    ack = await nc.jetstream().publish(
        "{creds.publish[0]}", msgspec.msgpack.encode(reading),
        headers={{"Nats-Msg-Id": event_id, "Tagus-Type": "readings.reported",
                 "Content-Type": "application/msgpack"}})
    print("stored", ack.stream, ack.seq, flush=True)
    await asyncio.Event().wait()  # schedules keep arriving in on_schedule

asyncio.run(main())
'''


def _loopback_note(servers: tuple[str, ...]) -> str:
    if all(("//127." in u or "//localhost" in u) for u in servers):
        return (f"\n{'':16}(loopback only: for a gateway on another machine, set "
                "TAGUS_NATS_HOST to an address it can reach)")
    return ""


def format_credentials(creds: TenantCredentials) -> str:
    """The connection details for an operator to hand over, and a runnable example."""
    rotate = f"`tagus tenant credentials {creds.tenant} --rotate`"
    if creds.password is None:
        head = (f"NATS user {creds.user} exists (password issued {creds.issued_at}); the "
                f"password is not shown again, only its hash is kept.\n{rotate} replaces it "
                "(the old one stops working at once).")
        password = "(not shown)"
    else:
        done = {"issued": "created",
                "rotated": "has a new password (the old one no longer works)"}[creds.outcome]
        head = f"NATS user {creds.user} {done}; {creds.server}."
        password = (f"{creds.password}\n{'':16}(shown once: only its bcrypt hash is kept; "
                    f"lost -> {rotate})")
    rows = [
        ("url", ", ".join(creds.servers) + _loopback_note(creds.servers)),
        ("user", creds.user),
        ("password", password),
        ("inbox prefix", f"{creds.inbox_prefix}   (set it in the client: replies arrive there)"),
        *([("mqtt", f"{creds.mqtt_url}   (same user and password; topic "
                    f"tagus/schedule/{creds.tenant}/released, client id {creds.tenant}-...)")]
          if creds.mqtt_url else []),
        ("may publish", ", ".join(creds.publish)),
        ("may subscribe", ", ".join(creds.subscribe)),
        ("denied", "everything else, the JetStream API ($JS.API.>) included; a publish\n"
                   f"{'':16}still gets JetStream's ack (a reply to the inbox)"),
    ]
    table = "\n".join(f"  {k:<14}{v}" for k, v in rows)
    return (f"{head}\n\n{table}\n\nExample (Python; pip install nats-py msgspec):\n\n"
            f"{example(creds)}")
