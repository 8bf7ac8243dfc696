"""``tagus forecast backtest|evaluate``: demand forecasts from files, offline, in-process.

Runs the same ``processors.forecast.train``/``predict`` the forecast tasks run, on files
in the layout of the Battle of the Water Demand Forecasting: an XLSX (or CSV) whose first
column holds local wall-clock stamps (``DD/MM/YYYY HH:mm``; the spring-forward hour
absent, the autumn hour written twice), then one column per series (``#N/A``/``NaN``
for missing); a weather file in the same layout; a holidays file (a header, then one
``DD/MM/YYYY`` date per line).  Values stay in the file's unit.
"""

from __future__ import annotations

import time
from pathlib import Path

DEFAULT_TZ = "Europe/Rome"
# weather columns recognised by words in the header -> (canonical name, factor to its unit)
_WEATHER_WORDS = (
    (("rain", "precip"), "precipitation_mm"),
    (("temp",), "temperature_c"),
    (("humid",), "humidity_pct"),
    (("wind",), "wind_speed_ms"),
)
_MISSING = {"", "#n/a", "n/a", "na", "nan", "null", "none", "-", "#value!", "#ref!"}


def register(sub) -> None:
    p = sub.add_parser("forecast", help="demand forecasts from files (backtest, evaluate)")
    fsub = p.add_subparsers(dest="forecast_command", required=True, metavar="ACTION")

    b = fsub.add_parser("backtest", help="train on the inflow before --start and forecast "
                                         "--hours from it, one column per series")
    _inputs(b)
    b.add_argument("--start", required=True, help="first forecast hour, local time "
                                                  "'YYYY-MM-DD HH:MM'")
    b.add_argument("--hours", type=int, default=168, help="hours to forecast (1-168)")
    b.add_argument("--out", type=Path, required=True, help="CSV to write")
    b.add_argument("--iso", action="store_true", help="ISO 8601 stamps with offset instead "
                                                      "of DD/MM/YYYY HH:mm")
    b.add_argument("--quantiles", action="store_true",
                   help="also write <out>.quantiles.csv (p10..p90 per series, long form)")
    b.set_defaults(run=backtest)

    e = fsub.add_parser("evaluate", help="PI1/PI2/PI3 per series, model vs weekly seasonal "
                                         "naive, forecasting each of the last --weeks weeks")
    _inputs(e)
    e.add_argument("--weeks", type=int, default=8)
    e.add_argument("--out", type=Path, help="also write the per-week rows as CSV")
    e.set_defaults(run=evaluate)


def _inputs(p) -> None:
    p.add_argument("--inflow", type=Path, required=True, help="XLSX/CSV: stamps + one column "
                                                              "per series")
    p.add_argument("--weather", type=Path, help="XLSX/CSV: stamps + weather columns")
    p.add_argument("--holidays", type=Path, help="text: a header line, then DD/MM/YYYY dates")
    p.add_argument("--tz", default=DEFAULT_TZ, help=f"zone of the stamps (default {DEFAULT_TZ})")
    p.add_argument("--series", help="comma-separated column names to forecast (default all)")
    p.add_argument("--quick", action="store_true",
                   help="short training: fewer backtests and trees (tests, smoke runs)")


def backtest(settings, args) -> int:
    import pandas as pd

    if not 1 <= args.hours <= 168:
        raise SystemExit(f"tagus: --hours must be 1..168, found {args.hours}")
    data = load_inputs(args.inflow, args.weather, args.holidays, args.tz, args.series)
    start = parse_start(args.start, args.tz)
    _say(f"inflow: {len(data.series)} series, {data.first.tz_convert(args.tz):%d/%m/%Y %H:%M} .. "
         f"{data.last.tz_convert(args.tz):%d/%m/%Y %H:%M} local; training on data before "
         f"{start.tz_convert(args.tz):%d/%m/%Y %H:%M} local")
    config = train_config(args.quick)
    forecasts, quantiles = {}, []
    for name, series in data.series.items():
        fc = forecast_one(name, series, data, start, args.hours, config, args.tz)
        forecasts[name] = fc["p50"].to_numpy()
        quantiles.append(fc.assign(series=name))
    index = pd.date_range(start, periods=args.hours, freq="h")
    write_forecast_csv(args.out, index, forecasts, data.stamp_header, args.tz, args.iso)
    if args.quantiles:
        q = pd.concat(quantiles)
        q.index = q.index.tz_convert(args.tz).map(lambda t: t.isoformat())
        q.to_csv(args.out.with_suffix(".quantiles.csv"), index_label="valid_time",
                 float_format="%.4f")
    _say(f"wrote {args.out} ({args.hours} rows x {len(forecasts)} series)")
    return 0


def evaluate(settings, args) -> int:
    import numpy as np
    import pandas as pd

    from processors.forecast import metrics

    if args.weeks < 1:
        raise SystemExit("tagus: --weeks must be >= 1")
    data = load_inputs(args.inflow, args.weather, args.holidays, args.tz, args.series)
    mondays = last_mondays(data.last, args.tz, args.weeks)
    if not mondays:
        raise SystemExit("tagus: the inflow file holds no complete Monday-to-Sunday week")
    config = train_config(args.quick)
    _say(f"evaluating {len(data.series)} series on {len(mondays)} weeks: "
         f"{mondays[0].tz_convert(args.tz):%d/%m/%Y} .. {mondays[-1].tz_convert(args.tz):%d/%m/%Y}")
    rows = []
    for monday in mondays:
        _say(f"week from {monday.tz_convert(args.tz):%d/%m/%Y %H:%M} local")
        for name, series in data.series.items():
            fc = forecast_one(name, series, data, monday, 168, config, args.tz)
            obs = series.reindex(fc.index).to_numpy(dtype=float)
            naive = weekly_naive(series, fc.index)
            scored = ~np.isnan(obs) & ~np.isnan(naive)
            obs_s = np.where(scored, obs, np.nan)
            row = {"week": monday.tz_convert(args.tz).strftime("%Y-%m-%d"), "series": name,
                   "hours_scored": int(scored.sum())}
            for who, f in (("model", fc["p50"].to_numpy()), ("naive", naive)):
                for k, v in metrics.bwdf_indicators(obs_s, f).items():
                    row[f"{k}_{who}"] = v
            rows.append(row)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False, float_format="%.4f")
    print(format_table(table))
    return 0


# --- the per-series run -------------------------------------------------------------------

def train_config(quick: bool):
    from processors.forecast import TrainConfig

    if quick:
        return TrainConfig(backtest_origins=2, gbm_params=(("n_estimators", 60),),
                           gbm_origin_step_h=48, history_days=120)
    return TrainConfig()


def forecast_one(name, series, data, start, hours, config, tz):
    """Train on ``series`` before ``start`` and forecast ``hours`` from it; print the choice."""
    from processors.forecast import InsufficientHistory, predict, train
    from processors.forecast.api import fallback_forecast

    t0 = time.perf_counter()
    try:
        result = train(series, data.weather, data.holidays, tz, origin=start, config=config)
    except InsufficientHistory as e:
        _say(f"  {name}: {e}; using the fallback (weekly naive / last value)")
        return fallback_forecast(series, data.holidays, tz, issued_at=start, horizon_h=hours)
    fc = predict(result.artefact, series, data.weather, data.holidays, tz, issued_at=start,
                 horizon_h=hours, sha256=result.sha256)
    m = result.metrics
    excl = result.excluded
    by_reason = {}
    for p in excl:
        if p.start >= result.data_window[0]:
            by_reason[p.reason] = by_reason.get(p.reason, 0) + p.hours
    chosen, naive = m.get(result.chosen, {}), m.get("seasonal_naive", {})
    _say(f"  {name}: chose {result.chosen} (backtest PI1 {chosen.get('PI1', float('nan')):.3f} "
         f"PI3 {chosen.get('PI3', float('nan')):.3f}; naive {naive.get('PI1', float('nan')):.3f}"
         f"/{naive.get('PI3', float('nan')):.3f}); excluded "
         f"{', '.join(f'{h} h {r}' for r, h in sorted(by_reason.items())) or 'nothing'}; "
         f"{time.perf_counter() - t0:.1f} s")
    return fc


def weekly_naive(series, index):
    """Same hour one week earlier, else two weeks earlier (NaN if both missing)."""
    import numpy as np
    import pandas as pd

    s = series[~series.index.duplicated()]
    one = s.reindex(index - pd.Timedelta(hours=168)).to_numpy(dtype=float)
    two = s.reindex(index - pd.Timedelta(hours=336)).to_numpy(dtype=float)
    return np.where(np.isnan(one), two, one)


def last_mondays(last_stamp, tz: str, weeks: int) -> list:
    """Local Mondays 00:00 (as UTC) of the last ``weeks`` complete weeks ending by ``last_stamp``."""
    import pandas as pd

    local_last = last_stamp.tz_convert(tz)
    day = (local_last + pd.Timedelta(hours=1)).tz_localize(None).normalize()
    monday = day - pd.Timedelta(days=day.dayofweek)
    out = []
    while len(out) < weeks:
        start = monday.tz_localize(tz)
        end = (monday + pd.Timedelta(days=7)).tz_localize(tz)
        if end <= last_stamp + pd.Timedelta(hours=1):
            out.append(start.tz_convert("UTC"))
        monday -= pd.Timedelta(days=7)
        if monday < day - pd.Timedelta(days=7 * (weeks + 2)):
            break
    return sorted(out)


def format_table(table) -> str:
    """Per series: mean PI1/PI2/PI3 over the weeks, model vs naive, and the overall means."""
    cols = ["PI1", "PI2", "PI3"]
    g = table.groupby("series", sort=False)[[f"{k}_{w}" for k in cols for w in ("model", "naive")]].mean()
    width = max(12, max(len(s) for s in g.index) + 1)
    lines = [f"{'series':<{width}}" + "".join(f"{k + ' model':>11}{k + ' naive':>11}{'gain':>7}"
                                                for k in cols)]
    for name, r in g.iterrows():
        lines.append(f"{name:<{width}}" + "".join(
            f"{r[f'{k}_model']:11.3f}{r[f'{k}_naive']:11.3f}"
            f"{100 * (1 - r[f'{k}_model'] / r[f'{k}_naive']):6.1f}%" for k in cols))
    mean = g.mean()
    lines.append(f"{'mean':<{width}}" + "".join(
        f"{mean[f'{k}_model']:11.3f}{mean[f'{k}_naive']:11.3f}"
        f"{100 * (1 - mean[f'{k}_model'] / mean[f'{k}_naive']):6.1f}%" for k in cols))
    weeks = table["week"].nunique()
    lines.append(f"({weeks} weeks; gain = how much lower the model's error is than the "
                 "weekly seasonal naive's; hours without observation or naive are not scored)")
    return "\n".join(lines)


# --- files ----------------------------------------------------------------------------------

class Inputs:
    """Series (UTC-indexed, file unit), weather (canonical columns), holidays, stamp header."""

    def __init__(self, series, weather, holidays, stamp_header, first, last):
        self.series, self.weather, self.holidays = series, weather, holidays
        self.stamp_header, self.first, self.last = stamp_header, first, last


def load_inputs(inflow: Path, weather: Path | None, holidays: Path | None, tz: str,
                only: str | None = None) -> Inputs:
    header, frame = read_table(inflow, tz)
    if only:
        wanted = [c.strip() for c in only.split(",") if c.strip()]
        unknown = [c for c in wanted if c not in frame.columns]
        if unknown:
            raise SystemExit(f"tagus: --series {unknown} not in {list(frame.columns)}")
        frame = frame[wanted]
    series = {c: frame[c] for c in frame.columns}
    wx = weather_frame(read_table(weather, tz)[1]) if weather else None
    days = read_holidays(holidays) if holidays else frozenset()
    return Inputs(series, wx, days, header, frame.index[0], frame.index[-1])


def read_table(path: Path, tz: str):
    """(stamp header, frame of floats on UTC stamps) from an XLSX/XLS/ODS or CSV file."""
    import numpy as np
    import pandas as pd

    from processors.forecast.calendar import wall_clock_to_utc

    rows = _rows(path)
    if len(rows) < 2:
        raise SystemExit(f"tagus: {path}: expected a header and data rows, found {len(rows)} rows")
    header = ["" if h is None else str(h).strip() for h in rows[0]]
    body = [r for r in rows[1:] if r and r[0] not in (None, "")]
    naive = pd.DatetimeIndex([_stamp(r[0], path, i + 2) for i, r in enumerate(body)])
    local = wall_clock_to_utc(naive, tz)
    values = np.array([[_number(c) for c in (list(r[1:]) + [None] * len(header))[:len(header) - 1]]
                       for r in body], dtype=float)
    frame = pd.DataFrame(values, index=local.utc, columns=header[1:])
    if local.bad.any():
        kinds = sorted(set(local.reasons))
        _say(f"{path.name}: dropped {int(local.bad.sum())} rows with stamps that are not "
             f"one instant in {tz} ({', '.join(kinds)})")
        frame = frame[~local.bad]
    frame = frame[~frame.index.duplicated(keep="first")].sort_index()
    frame = frame.loc[:, [c for c in frame.columns if c]]
    return header[0], frame


def weather_frame(frame):
    """Map weather columns to canonical names by words in their headers; wind in km/h to m/s."""
    out = {}
    for col in frame.columns:
        low = col.lower()
        for words, name in _WEATHER_WORDS:
            if name not in out and any(w in low for w in words):
                values = frame[col]
                if name == "wind_speed_ms" and ("km/h" in low or "kmh" in low or "kph" in low):
                    values = values / 3.6
                out[name] = values
                break
    if not out:
        _say("weather: no rain/temperature/humidity/wind column recognised; ignoring the file")
        return None
    import pandas as pd

    return pd.DataFrame(out)


def read_holidays(path: Path) -> frozenset:
    """Dates from a text file: an optional header, then one DD/MM/YYYY or YYYY-MM-DD per line."""
    from datetime import date, datetime

    days: set[date] = set()
    for n, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        text = line.strip().strip(",;")
        if not text:
            continue
        for fmt in ("%d/%m/%Y", "%Y-%m-%d", "%d.%m.%Y", "%d-%m-%Y"):
            try:
                days.add(datetime.strptime(text, fmt).date())
                break
            except ValueError:
                continue
        else:
            if n > 1:
                raise SystemExit(f"tagus: {path}:{n}: expected a date DD/MM/YYYY, found {text!r}")
    return frozenset(days)


def parse_start(text: str, tz: str):
    """A local 'YYYY-MM-DD HH:MM' (or DD/MM/YYYY HH:MM) as a UTC instant on the hour."""
    import pandas as pd

    from processors.forecast.calendar import wall_clock_to_utc

    try:
        naive = pd.Timestamp(pd.to_datetime(text, dayfirst="/" in text))
    except (ValueError, TypeError) as e:
        raise SystemExit(f"tagus: --start: expected 'YYYY-MM-DD HH:MM', found {text!r}") from e
    if naive.tzinfo is not None:
        return naive.tz_convert("UTC")
    local = wall_clock_to_utc(pd.DatetimeIndex([naive]), tz)
    if local.bad[0]:
        raise SystemExit(f"tagus: --start {text!r} does not exist in {tz} (clocks jump forward)")
    start = local.utc[0]
    if start != start.floor("h"):
        raise SystemExit(f"tagus: --start must be on the hour, found {text!r}")
    return start


def write_forecast_csv(path: Path, index, forecasts: dict, stamp_header: str, tz: str,
                       iso: bool) -> None:
    import pandas as pd

    local = index.tz_convert(tz)
    stamps = [t.isoformat(timespec="minutes") for t in local] if iso else \
        [t.strftime("%d/%m/%Y %H:%M") for t in local]
    out = pd.DataFrame(forecasts, index=pd.Index(stamps, name=stamp_header))
    if out.isna().any().any():
        raise RuntimeError("forecast has missing values")  # complete() makes this unreachable
    path.parent.mkdir(parents=True, exist_ok=True)
    out.to_csv(path, float_format="%.4f")


def _rows(path: Path) -> list[list]:
    if not path.exists():
        raise SystemExit(f"tagus: {path}: no such file")
    if path.suffix.lower() in (".csv", ".txt", ".tsv"):
        import csv

        text = path.read_text(encoding="utf-8-sig")
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
        return [row for row in csv.reader(text.splitlines(), dialect)]
    from python_calamine import CalamineWorkbook

    book = CalamineWorkbook.from_path(str(path))
    return book.get_sheet_by_index(0).to_python(skip_empty_area=False)


def _stamp(cell, path: Path, line: int):
    from datetime import datetime

    import pandas as pd

    if isinstance(cell, datetime):
        return pd.Timestamp(cell)
    if isinstance(cell, (int, float)):  # an Excel serial day number
        return pd.Timestamp("1899-12-30") + pd.Timedelta(days=float(cell))
    text = str(cell).strip()
    for fmt in ("%d/%m/%Y %H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S",
                "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"):
        try:
            return pd.Timestamp(datetime.strptime(text, fmt))
        except ValueError:
            continue
    raise SystemExit(f"tagus: {path}:{line}: expected a stamp DD/MM/YYYY HH:mm, found {text!r}")


def _number(cell) -> float:
    if cell is None or isinstance(cell, bool):
        return float("nan")
    if isinstance(cell, (int, float)):
        return float(cell)
    text = str(cell).strip()
    if text.lower() in _MISSING:
        return float("nan")
    try:
        return float(text.replace(",", ".") if text.count(",") == 1 and "." not in text else text)
    except ValueError:
        return float("nan")


def _say(text: str) -> None:
    print(text, flush=True)
