"""Chart figures as plotly.js JSON (data + layout), built here and drawn by the page.

Pure functions of what the queries returned.  Colours are the Okabe-Ito palette, and
nothing is told apart by colour alone: tank minimum dashed and maximum dotted, the band
between them hatched; price bands are shades of one hue with their price written on
them and a step line of the price on its own axis; a running pump is a filled bar, a
stopped one an outline.  Times are the tenant's local clock (the axis says which zone).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

BLUE, ORANGE, SKY, GREEN = "#0072B2", "#E69F00", "#56B4E9", "#009E73"
VERMILLION, PURPLE, INK, GREY = "#D55E00", "#CC79A7", "#1b1b1b", "#6b6b6b"
SERIES = (BLUE, VERMILLION, GREEN, PURPLE, ORANGE, SKY)
MARKERS = ("circle", "square", "diamond", "triangle-up", "x", "star")
FONT = {"family": "system-ui, -apple-system, Segoe UI, Roboto, DejaVu Sans, sans-serif",
        "size": 12}


def to_json(fig: dict) -> str:
    """For a ``<script type="application/json">``: ``</`` cannot close the element."""
    return json.dumps(fig, separators=(",", ":"), default=str).replace("</", "<\\/")


def _t(t: datetime, zone: str) -> str:
    return t.astimezone(ZoneInfo(zone)).strftime("%Y-%m-%d %H:%M:%S")


def _layout(zone: str, height: int, **extra) -> dict:
    out = {"height": height, "margin": {"l": 64, "r": 64, "t": 36, "b": 44}, "font": FONT,
           "paper_bgcolor": "#fff", "plot_bgcolor": "#fff", "hovermode": "closest",
           "legend": {"orientation": "h", "y": 1.02, "yanchor": "bottom", "x": 0},
           "xaxis": {"type": "date", "title": {"text": f"time ({zone})"},
                     "gridcolor": "#e6e6e6"}}
    out.update(extra)
    return out


def _price_tiers(prices: list[float]) -> dict[float, float]:
    """Price -> shade strength 0.08..0.38 (the cheapest lightest)."""
    levels = sorted(set(round(p, 6) for p in prices))
    if len(levels) == 1:
        return {levels[0]: 0.12}
    return {p: 0.08 + 0.30 * i / (len(levels) - 1) for i, p in enumerate(levels)}


def gantt(plan: dict, start: datetime, period_s: int, zone: str, currency: str) -> dict:
    """Pumps x periods: a bar per pump-period (filled: running, outline: stopped), the
    reason on hover; the price per period as shaded bands behind and a step line."""
    pumps = plan.get("pumps", [])
    prices = list((plan.get("inputs") or {}).get("prices_per_kwh") or [])
    n = len(pumps[0]["speeds"]) if pumps else 0
    step = timedelta(seconds=period_s)
    starts = [start + k * step for k in range(n)]
    ms = period_s * 1000
    data, shapes, notes = [], [], []
    tiers = _price_tiers(prices) if prices else {}
    k = 0
    while k < min(n, len(prices)):  # one shaded band per run of equal prices
        j = k
        while j + 1 < min(n, len(prices)) and round(prices[j + 1], 6) == round(prices[k], 6):
            j += 1
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "layer": "below",
                       "x0": _t(starts[k], zone), "x1": _t(starts[j] + step, zone),
                       "y0": 0, "y1": 1, "line": {"width": 0},
                       "fillcolor": f"rgba(230,159,0,{tiers[round(prices[k], 6)]:.2f})"})
        notes.append({"x": _t(starts[k] + (starts[j] + step - starts[k]) / 2, zone),
                      "y": 1.0, "xref": "x", "yref": "paper", "yanchor": "bottom",
                      "showarrow": False, "font": {"size": 11, "color": "#5a3d00"},
                      "text": f"{prices[k]:.3f} {currency}/kWh"})
        k = j + 1
    for on in (True, False):
        ys, base, xs, text, width = [], [], [], [], []
        for p in pumps:
            for k, speed in enumerate(p["speeds"]):
                if (speed > 0) != on:
                    continue
                reason = p.get("reasons", [""] * n)[k] if k < len(p.get("reasons", [])) \
                    else ""
                price = f"<br>price {prices[k]:.3f} {currency}/kWh" if k < len(prices) else ""
                state = f"running at speed {speed:.2f}" if on else "stopped"
                ys.append(p["pump"])
                base.append(_t(starts[k], zone))
                xs.append(ms)
                text.append(f"<b>{p['pump']}</b> {_t(starts[k], zone)[11:16]}–"
                            f"{_t(starts[k] + step, zone)[11:16]}: {state}{price}"
                            f"<br>why: {reason or '—'}")
        data.append({"type": "bar", "orientation": "h", "y": ys, "base": base, "x": xs,
                     "name": "running" if on else "stopped", "hovertext": text,
                     "hoverinfo": "text", "width": 0.6,
                     "marker": {"color": BLUE if on else "rgba(255,255,255,0.55)",
                                "line": {"color": BLUE if on else GREY, "width": 1}}})
    if prices:
        xs = [_t(s, zone) for s in starts[:len(prices)]] + [_t(starts[len(prices) - 1] + step,
                                                              zone)]
        data.append({"type": "scatter", "mode": "lines", "x": xs, "y": prices + prices[-1:],
                     "line": {"shape": "hv", "color": "#8a5a00", "width": 1.5, "dash": "dot"},
                     "yaxis": "y2", "name": f"price ({currency}/kWh)",
                     "hovertemplate": "%{y:.3f} " + currency + "/kWh<extra>price</extra>"})
    height = 150 + 40 * max(1, len(pumps))
    return {"data": data, "layout": _layout(
        zone, height, barmode="overlay", shapes=shapes, annotations=notes,
        margin={"l": 90, "r": 70, "t": 48, "b": 44},
        yaxis={"type": "category", "autorange": "reversed", "title": {"text": "pump"}},
        yaxis2={"overlaying": "y", "side": "right", "showgrid": False, "rangemode": "tozero",
                "tickformat": ".3f",
                "title": {"text": f"{currency}/kWh"}})}


def tanks(plan: dict, start: datetime, period_s: int, zone: str) -> dict:
    """EPANET's level of each tank at each period start (and the horizon's end), with its
    minimum (dashed) and maximum (dotted) and the band between them hatched."""
    data, step = [], timedelta(seconds=period_s)
    for i, (tank, levels) in enumerate(sorted((plan.get("tanks") or {}).items())):
        xs = [_t(start + k * step, zone) for k in range(len(levels))]
        lo, hi = (plan.get("tank_bounds") or {}).get(tank, [None, None])
        colour = SERIES[i % len(SERIES)]
        if lo is not None and hi is not None:
            data.append({"type": "scatter", "mode": "lines", "x": [xs[0], xs[-1]], "y": [lo, lo],
                         "line": {"color": INK, "dash": "dash", "width": 1.5},
                         "name": f"{tank} minimum {lo:.2f} m", "hoverinfo": "name"})
            data.append({"type": "scatter", "mode": "lines", "x": [xs[0], xs[-1]], "y": [hi, hi],
                         "line": {"color": INK, "dash": "dot", "width": 2},
                         "fill": "tonexty", "fillcolor": "rgba(86,180,233,0.10)",
                         "fillpattern": {"shape": "/", "fgcolor": "rgba(0,114,178,0.25)",
                                         "size": 8},
                         "name": f"{tank} maximum {hi:.2f} m", "hoverinfo": "name"})
        data.append({"type": "scatter", "mode": "lines+markers", "x": xs, "y": levels,
                     "name": f"{tank} level (EPANET)",
                     "line": {"color": colour, "width": 2.5},
                     "marker": {"symbol": MARKERS[i % len(MARKERS)], "size": 6},
                     "hovertemplate": tank + " %{x|%H:%M}: %{y:.2f} m<extra></extra>"})
    return {"data": data, "layout": _layout(zone, 330, yaxis={"title": {"text": "level (m)"},
                                                             "gridcolor": "#e6e6e6"})}


def forecast(points: list[dict], zone: str, unit: str) -> dict:
    """P10-P90 (light) and P25-P75 (darker) bands, the median dashed, measured solid."""
    xs = [_t(datetime.fromisoformat(p["valid_at"].replace("Z", "+00:00")), zone)
          for p in points]

    def q(name):
        return [p.get(name) for p in points]

    data = [
        {"type": "scatter", "mode": "lines", "x": xs, "y": q("p10"), "line": {"width": 0},
         "showlegend": False, "hoverinfo": "skip"},
        {"type": "scatter", "mode": "lines", "x": xs, "y": q("p90"), "line": {"width": 0},
         "fill": "tonexty", "fillcolor": "rgba(86,180,233,0.25)", "name": "P10–P90",
         "hoverinfo": "skip"},
        {"type": "scatter", "mode": "lines", "x": xs, "y": q("p25"), "line": {"width": 0},
         "showlegend": False, "hoverinfo": "skip"},
        {"type": "scatter", "mode": "lines", "x": xs, "y": q("p75"), "line": {"width": 0},
         "fill": "tonexty", "fillcolor": "rgba(0,114,178,0.25)", "name": "P25–P75",
         "hoverinfo": "skip"},
        {"type": "scatter", "mode": "lines", "x": xs, "y": q("p50"), "name": "forecast (P50)",
         "line": {"color": BLUE, "width": 2, "dash": "dash"},
         "customdata": [[p.get("p10"), p.get("p90")] for p in points],
         "hovertemplate": "%{x|%d %b %H:%M}: P50 %{y:.4g}, P10 %{customdata[0]:.4g}, "
                          "P90 %{customdata[1]:.4g} " + unit + "<extra></extra>"},
        {"type": "scatter", "mode": "lines+markers", "x": xs, "y": q("actual"),
         "name": "measured", "line": {"color": INK, "width": 2},
         "marker": {"symbol": "circle", "size": 5},
         "hovertemplate": "%{x|%d %b %H:%M}: measured %{y:.4g} " + unit + "<extra></extra>"}]
    return {"data": data, "layout": _layout(zone, 360, yaxis={"title": {"text": unit},
                                                             "gridcolor": "#e6e6e6"})}


def series(points: list[dict], zone: str, sensor: str, unit: str) -> dict:
    xs = [_t(datetime.fromisoformat(p["ts"].replace("Z", "+00:00")), zone) for p in points]
    return {"data": [{"type": "scatter", "mode": "lines", "x": xs,
                      "y": [p["value"] for p in points], "name": sensor,
                      "line": {"color": BLUE, "width": 1.8},
                      "hovertemplate": "%{x|%d %b %H:%M:%S}: %{y:.4g} " + unit +
                                       "<extra></extra>"}],
            "layout": _layout(zone, 340, showlegend=False,
                              yaxis={"title": {"text": f"{sensor} ({unit})"},
                                     "gridcolor": "#e6e6e6"})}
