"""``tagus bench forecast``: train and forecast the 10 BWDF DMAs; time, CPU and memory.

Trains every series (rolling-origin backtests, choice, final fit: ``processors.forecast.train``)
at ``--origin`` (default: the hour after the inflow file's last row), then forecasts all of
them once (``predict``) in this process, and once more in a fresh process that loads the
artefacts from disk (so its time includes importing the libraries).  Prints wall time,
CPU time and peak RSS for each phase against the targets (training <= 600 s for all,
a forecast run <= 10 s for all).  Exit code 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TRAIN_TARGET_S = 600.0
FORECAST_TARGET_S = 10.0

_COLD = r"""
import json, resource, sys, time
def rss_mb():  # VmHWM: this process's own peak (ru_maxrss carries the parent's over exec)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0, c0 = time.perf_counter(), time.process_time()
import pandas as pd
from ops.commands.forecast import load_inputs
from processors.forecast import predict
args = json.loads(sys.argv[1])
data = load_inputs(*[None if a is None else __import__("pathlib").Path(a) for a in args["files"]],
                   args["tz"], args["series"])
t1, c1 = time.perf_counter(), time.process_time()
origin = pd.Timestamp(args["origin"])
for name, series in data.series.items():
    blob = open(args["models"][name], "rb").read()
    predict(blob, series, data.weather, data.holidays, args["tz"], issued_at=origin,
            horizon_h=168)
print(json.dumps({"read_s": t1 - t0, "wall_s": time.perf_counter() - t0,
                  "predict_s": time.perf_counter() - t1,
                  "cpu_s": time.process_time() - c0,
                  "rss_mb": rss_mb()}))
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tagus bench forecast", description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, help="folder with InflowData_1.xlsx, WeatherData_1.xlsx, "
                                             "Holidays.txt (default: $TAGUS_SHARED_DATA/bwdf)")
    p.add_argument("--origin", help="training origin and forecast issue time, local "
                                    "'YYYY-MM-DD HH:MM' (default: after the last inflow row)")
    p.add_argument("--tz", default="Europe/Rome")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run: two series, the short training configuration")
    args = p.parse_args(argv)

    import pandas as pd

    from ops.commands.forecast import load_inputs, parse_start, train_config
    from processors.forecast import predict, train

    folder = args.data or _default_data()
    files = (folder / "InflowData_1.xlsx", folder / "WeatherData_1.xlsx", folder / "Holidays.txt")
    only = "DMA A (L/s),DMA E (L/s)" if args.quick else None
    t0 = time.perf_counter()
    data = load_inputs(*files, args.tz, only)
    print(f"read {len(data.series)} series in {time.perf_counter() - t0:.1f} s")
    origin = parse_start(args.origin, args.tz) if args.origin else data.last + pd.Timedelta(hours=1)
    print(f"origin {origin.tz_convert(args.tz):%d/%m/%Y %H:%M} local "
          f"({'quick' if args.quick else 'full'} training configuration)")
    config = train_config(args.quick)

    wall, cpu = time.perf_counter(), time.process_time()
    models = {}
    for name, series in data.series.items():
        t = time.perf_counter()
        r = train(series, data.weather, data.holidays, args.tz, origin=origin, config=config)
        models[name] = r.artefact
        print(f"  {name}: {r.chosen:15s} {time.perf_counter() - t:6.1f} s  "
              f"({len(r.artefact) / 1024:.0f} KiB, {r.sha256[:12]})", flush=True)
    train_wall, train_cpu = time.perf_counter() - wall, time.process_time() - cpu
    train_rss = _rss_mb()

    wall, cpu = time.perf_counter(), time.process_time()
    for name, series in data.series.items():
        predict(models[name], series, data.weather, data.holidays, args.tz, issued_at=origin)
    fc_wall, fc_cpu = time.perf_counter() - wall, time.process_time() - cpu

    with tempfile.TemporaryDirectory(prefix="tagus-bench-forecast-") as tmp:
        paths = {}
        for i, (name, blob) in enumerate(models.items()):
            paths[name] = os.path.join(tmp, f"{i}.model")
            Path(paths[name]).write_bytes(blob)
        spec = {"files": [str(f) for f in files], "tz": args.tz, "series": only,
                "origin": origin.isoformat(), "models": paths}
        out = subprocess.run([sys.executable, "-c", _COLD, json.dumps(spec)], check=True,
                             capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
        cold = json.loads(out.stdout.strip().splitlines()[-1])

    n = len(data.series)
    print()
    print(f"{'phase':<38}{'wall s':>9}{'CPU s':>9}{'peak RSS MB':>13}{'target s':>10}")
    print(f"{f'train {n} series':<38}{train_wall:9.1f}{train_cpu:9.1f}{train_rss:13.0f}"
          f"{TRAIN_TARGET_S:10.0f}")
    print(f"{f'forecast {n} series (warm, in-process)':<38}{fc_wall:9.2f}{fc_cpu:9.2f}"
          f"{_rss_mb():13.0f}{FORECAST_TARGET_S:10.0f}")
    print(f"{f'forecast {n} series (cold process)':<38}{cold['wall_s']:9.2f}{cold['cpu_s']:9.2f}"
          f"{cold['rss_mb']:13.0f}{'':>10}")
    print(f"  (cold: {cold['read_s']:.1f} s importing and reading the files, "
          f"{cold['predict_s']:.2f} s forecasting)")
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    ok = train_wall <= TRAIN_TARGET_S and fc_wall <= FORECAST_TARGET_S
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _default_data() -> Path:
    from ops.settings import load_settings

    env = os.environ.get("TAGUS_SHARED_DATA")
    root = Path(env) if env else load_settings().shared_data
    return root / "bwdf"
