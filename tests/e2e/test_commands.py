"""CI smoke tests of the commands users run by hand: ``tagus demo`` and every
``tagus bench <name> --quick``, as subprocesses against the test session's stack.

The ``settings`` fixture exported the stack's ``TAGUS_*`` variables into ``os.environ``;
the subprocesses inherit them, so the demo writes its pictures under the session's
temporary data directory.  JetStream is emptied before each command: the demo waits
until every consumer has caught up, so events another test left pending would hold it.
Benches are found on disk (``ops/dev/bench_*.py``); one without a ``--quick`` flag is
skipped, naming what it lacks, and joins as soon as it has one.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ops import wiring
from tests.conftest import REPO
from tests.helpers import reset_jetstream

pytestmark = pytest.mark.servers

DEMO_TIMEOUT_S = 420.0
BENCH_TIMEOUT_S = 180.0  # a hang, not a slow machine: the quick runs take 5-50 s
DEV = REPO / "ops" / "dev"
BENCHES = sorted(p.stem.removeprefix("bench_") for p in DEV.glob("bench_*.py"))
_QUICK_FLAG = re.compile(r"""add_argument\(\s*["']--quick["']""")
_UPLOAD = re.compile(r"\[(ltown|bwdf)\] intake [^\[]*?values received\s+(\d+)\s+accepted\s+"
                     r"(\d+)\s+rejected\s+(\d+)\s+missing\s+(\d+)")
_TABLE_ROW = re.compile(r"^\s+(ltown|bwdf)\s+\S+\s+\S+\s+(\d+)\s", re.M)

# Lines a bench's quick run must print, by bench (others: exit code 0 and some output).
_EXPECTED = {
    "ingest": [
        r"^  1d inproc \s+28,800 readings .* k readings/s .*n=1\)$",
        r"^  1d subproc\s+28,800 readings .* k readings/s .*n=1\)$",
        r"^  questdb \(decode \+ frame \+ write_frame \+ WAL",
        r"^end to end / questdb ceiling = [\d,]+ / [\d,]+ = \d+\.\d\d ",
        r"^  subproc tagus run questdb-readings\s+1d\s+\d+ MB",
        r"^clean-up: .*purged \d+ bench tenants",
    ],
    "query": [
        r"^  api \(HTTP\)\s+n=30\s+p50",
        r"^  direct \(PG\)\s+n=30\s+p50",
        r"^  api p95 / direct p95 = ",
    ],
}


def _tagus(args: list[str], timeout_s: float, **env: str) -> subprocess.CompletedProcess:
    """``tagus ARGS`` (the installed entry point, else ``python -m ops.cli``), output kept."""
    script = shutil.which("tagus", path=str(Path(sys.executable).parent))
    cmd = [script] if script else [sys.executable, "-m", "ops.cli"]
    try:
        return subprocess.run([*cmd, *args], cwd=REPO, env={**os.environ, **env},
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        pytest.fail(f"`tagus {' '.join(args)}` still running after {timeout_s:.0f} s; "
                    f"output so far:\n{(out or '')[-4000:]}")


def _shown(res: subprocess.CompletedProcess) -> str:
    return (f"exit code {res.returncode}\n--- stdout\n{res.stdout[-4000:]}\n--- stderr\n"
            f"{res.stderr[-4000:]}")


@pytest.fixture
async def clean_bus(settings):
    conn = await wiring.nats_connection(settings, name="tagus-e2e-commands")
    try:
        await reset_jetstream(conn)
    finally:
        await conn.drain()


async def test_demo_ingests_reports_and_draws(settings, shared_data, clean_bus):
    """The README's main command: tenants, four real files and their accounting, L-Town's
    configuration and its history, tasks (a KPI, demand models, a forecast), QuestDB, the
    API, three pictures."""
    pictures = [Path(settings.data_dir) / "demo" / n for n in ("ltown_week.png",
                                                               "bwdf_dst.png",
                                                               "bwdf_forecast.png")]
    started = time.time()
    res = _tagus(["demo"], DEMO_TIMEOUT_S, TAGUS_SHARED_DATA=str(shared_data))
    assert res.returncode == 0, _shown(res)
    out = res.stdout
    for step in ("1. local stack", "2. tenants", "3. ingest", "4. L-Town's configuration",
                 "5. tasks", "6. QuestDB table 'readings'", "7. pictures"):
        assert step in out, f"missing {step!r}\n{_shown(res)}"
    assert "ltown/network version" in out and "junctions=782" in out, _shown(res)
    assert "+  price: 0.08 EUR/kWh" in out, _shown(res)  # the tariff change, as a diff
    for task in ("ltown data.completeness: completed", "bwdf forecast.train: completed",
                 "bwdf forecast.run: completed", "ltown simulate: completed"):
        assert task in out, f"missing {task!r}\n{_shown(res)}"
    assert "KPI ltown 2019-01-15 completeness T1: 1.000" in out, _shown(res)
    assert re.search(r"twin ltown 2019-01-15T00:00 \(own controls\): \d+ kWh, .*T1 RMSE "
                     r"\d+\.\d\d m", out), _shown(res)
    assert re.search(r"168 hours issued 2022-07-10T22:00:00Z, measured 168", out), _shown(res)
    assert "FAILED" not in out, _shown(res)
    # one accounting per upload, adding up (received = accepted + rejected + missing), and
    # QuestDB holds exactly the accepted values of each tenant
    uploads = [(t, *map(int, n)) for t, *n in _UPLOAD.findall(out)]
    assert sorted(u[0] for u in uploads) == ["bwdf", "bwdf", "ltown", "ltown"], _shown(res)
    stored = {t: 0 for t in ("ltown", "bwdf")}
    for tenant, rows in _TABLE_ROW.findall(out):
        stored[tenant] += int(rows)
    for tenant in stored:
        mine = [u for u in uploads if u[0] == tenant]
        for _, received, accepted, rejected, missing in mine:
            assert accepted > 0 and received == accepted + rejected + missing, _shown(res)
        assert stored[tenant] == sum(u[2] for u in mine), f"{tenant}: {_shown(res)}"
    assert "GET /v1/sensors/T1/readings" in out, _shown(res)
    assert len(re.findall(r"^\s+\{'ts': ", out, re.M)) == 4, _shown(res)
    for png in pictures:
        assert str(png) in out, _shown(res)
        assert png.is_file() and png.stat().st_mtime >= started - 1, f"{png} not written"
        data = png.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000, png


@pytest.mark.parametrize("name", BENCHES)
async def test_bench_quick(name, settings, clean_bus):
    """``tagus bench NAME --quick`` exits 0 and prints its figures."""
    module = DEV / f"bench_{name}.py"
    if not _QUICK_FLAG.search(module.read_text(encoding="utf-8")):
        pytest.skip(f"{module.relative_to(REPO)} has no --quick flag yet; CI runs each "
                    "bench only in its short mode")
    res = _tagus(["bench", name, "--quick"], BENCH_TIMEOUT_S)
    assert res.returncode == 0, _shown(res)
    assert res.stdout.strip(), _shown(res)
    for pattern in _EXPECTED.get(name, []):
        assert re.search(pattern, res.stdout, re.M), f"no line {pattern!r}\n{_shown(res)}"

