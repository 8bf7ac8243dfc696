"""Pictures of what QuestDB holds: hourly means of a few sensors, one panel per unit."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pandas as pd

from projections.api import queries

# SI unit -> (display unit, factor from SI)
DISPLAY = {"m3/s": ("L/s", 1000.0), "m": ("m", 1.0), "degC": ("°C", 1.0),
           "1": ("%", 100.0), "m/s": ("km/h", 3.6), "Pa": ("bar", 1e-5)}


async def hourly(conn, tenant: str, sensors: list[str], start: datetime,
                 end: datetime) -> pd.DataFrame:
    """Hourly mean per sensor (SI units) between ``start`` and ``end`` (UTC).

    ``conn``: an asyncpg connection to QuestDB; the queries are the API's, with bound
    tenant, sensor and times.
    """
    units = {s["sensor"]: s["unit"] for s in await queries.list_sensors(conn, tenant)}
    frames = []
    for sensor in sensors:
        q = queries.range_query(sensor, start, end, "1h", "avg", "none", limit=0)
        points, _ = await queries.readings(conn, tenant, q)
        frames.append(pd.DataFrame({"ts": [p["ts"] for p in points],
                                    "value": [p["value"] for p in points],
                                    "sensor": sensor, "unit": units.get(sensor, "?")}))
    df = pd.concat(frames, ignore_index=True)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def plot(df: pd.DataFrame, title: str, path: Path, *, tz: str = "UTC") -> Path:
    """One panel per unit; x axis in ``tz`` local time.  Writes a PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    units = list(dict.fromkeys(df["unit"]))
    fig, axes = plt.subplots(len(units), 1, figsize=(11, 2.6 * len(units) + 0.6),
                             sharex=True, squeeze=False)
    for ax, unit in zip(axes[:, 0], units, strict=True):
        label, factor = DISPLAY.get(unit, (unit, 1.0))
        part = df[df["unit"] == unit]
        for sensor, s in part.groupby("sensor"):
            ax.plot(s["ts"].dt.tz_convert(tz), s["value"] * factor, label=sensor, lw=1.1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize=8, ncol=4)
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel(f"time ({tz})")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_forecast(points: list[dict], title: str, path: Path, *, unit: str = "m3/s",
                  tz: str = "UTC") -> Path:
    """Forecast vs actual: the P10-P90 band, the median, what was measured.  ``points``:
    the API's ``/v1/forecasts/{series}`` points (valid_at, p10..p90, actual)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown, factor = DISPLAY.get(unit, (unit, 1.0))
    t = pd.to_datetime([p["valid_at"] for p in points], utc=True).tz_convert(tz)
    col = {q: [(p[q] if p[q] is not None else float("nan")) * factor for p in points]
           for q in ("p10", "p50", "p90")}
    actual = [(p["actual"] * factor) if p.get("actual") is not None else float("nan")
              for p in points]
    fig, ax = plt.subplots(figsize=(11, 4))
    # colour-blind safe: blue band and median, black measured (not told apart by red/green)
    ax.fill_between(t, col["p10"], col["p90"], color="#6baed6", alpha=0.35, label="P10-P90")
    ax.plot(t, col["p50"], color="#08519c", lw=1.6, label="forecast (median)")
    ax.plot(t, actual, color="black", lw=1.0, ls="--", label="measured")
    ax.set_ylabel(shown)
    ax.set_title(title)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    fig.autofmt_xdate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_schedule(detail: dict, title: str, path: Path, *, tz: str = "UTC") -> Path:
    """A proposed schedule as an operator checks it: the price per period, each pump's
    runs (relative speed), each tank's EPANET level against its bounds.  ``detail``: the
    API's ``/v1/schedules/{id}``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plan = detail["plan"]
    pumps, tanks = plan["pumps"], plan["tanks"]
    start = pd.Timestamp(detail["start"])
    step = pd.Timedelta(seconds=detail["period_s"])
    n = len(pumps[0]["speeds"]) if pumps else 0
    edges = [(start + k * step).tz_convert(tz) for k in range(n + 1)]
    fig, axes = plt.subplots(2 + len(pumps), 1, sharex=True, squeeze=False,
                             figsize=(11, 2.0 * (2 + len(pumps)) + 0.6),
                             gridspec_kw={"height_ratios": [1] + [0.7] * len(pumps) + [2]})
    ax = axes[0, 0]
    prices = plan.get("inputs", {}).get("prices_per_kwh", [])[:n]
    if prices:
        ax.stairs(prices, edges[:len(prices) + 1], color="#636363", lw=1.4)
    ax.set_ylabel(f"{detail.get('currency') or ''}/kWh")
    ax.set_title(title)
    for k, p in enumerate(pumps, start=1):
        ax = axes[k, 0]
        ax.stairs(p["speeds"], edges, fill=True, color="#08519c", alpha=0.8)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel(p["pump"], rotation=0, ha="right", va="center")
    ax = axes[-1, 0]
    for name, levels in tanks.items():
        line, = ax.plot(edges[:len(levels)], levels, lw=1.6, label=f"{name} (EPANET)")
        lo, hi = plan.get("tank_bounds", {}).get(name, (None, None))
        for bound in (lo, hi):
            if bound is not None:
                ax.axhline(bound, color=line.get_color(), ls=":", lw=1)
    ax.set_ylabel("level (m)")
    ax.legend(loc="upper right", fontsize=8)
    for a in axes[:, 0]:
        a.grid(alpha=0.3)
    axes[-1, 0].set_xlabel(f"time ({tz}); cost {detail['cost']:.2f} vs baseline "
                           f"{detail['baseline_cost']:.2f} {detail.get('currency') or ''}")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
