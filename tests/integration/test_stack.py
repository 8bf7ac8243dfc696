"""`tagus stack`: up twice is harmless, down leaves no process behind."""

from __future__ import annotations

import subprocess
import sys

import psutil
import pytest

from ops.dev import stack
from ops.settings import Settings
from tests.conftest import REPO, stack_env

pytestmark = pytest.mark.servers


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "ops.cli", *args], cwd=REPO,
                          env=dict(os.environ, **env), capture_output=True, text=True,
                          timeout=180)


def processes_under(path) -> list[psutil.Process]:
    out = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if any(str(path) in part for part in p.info["cmdline"] or []):
                out.append(p)
        except psutil.Error:
            continue
    return out


def test_up_twice_status_down(tmp_path):
    env = stack_env(tmp_path / "var")
    first = cli(env, "stack", "up")
    assert first.returncode == 0, first.stderr
    assert "nats: started" in first.stdout and "questdb: started" in first.stdout
    pids = stack.managed_pids(Settings(data_dir=tmp_path / "var"))
    assert all(pids.values()), pids

    second = cli(env, "stack", "up")
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stdout
    assert stack.managed_pids(Settings(data_dir=tmp_path / "var")) == pids

    status = cli(env, "stack", "status")
    assert status.returncode == 0, status.stdout
    assert f"nats://127.0.0.1:{env['TAGUS_NATS_PORT']}" in status.stdout
    assert "version=2." in status.stdout and "version=9." in status.stdout

    down = cli(env, "stack", "down")
    assert down.returncode == 0 and "nats: stopped" in down.stdout
    assert not processes_under(tmp_path / "var"), "a server outlived `stack down`"
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"
                   for p in pids.values())
    again = cli(env, "stack", "down")
    assert again.returncode == 0 and "not running" in again.stdout

    status = cli(env, "stack", "status")
    assert status.returncode == 1 and "DOWN" in status.stdout


def test_missing_jar_is_one_actionable_line(tmp_path):
    env = stack_env(tmp_path / "var")
    env["QUESTDB_JAR"] = str(tmp_path / "nope.jar")
    res = cli(env, "stack", "up")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "QUESTDB_JAR" in lines[0] and "nope.jar" in lines[0]
    cli(env, "stack", "down")
