"""A tenant's daily KPIs in one picture: energy, cost and saving per day, specific energy,
data completeness.  Rows come from the API's KPI query (``projections.api.queries.kpis``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def frame(rows: list[dict]) -> pd.DataFrame:
    """One column per (name, subject), one row per day (NaN where a day lacks it)."""
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    df["value"] = pd.to_numeric(df["value"], errors="coerce")
    df["day"] = pd.to_datetime(df["day"])
    return df.pivot_table(index="day", columns=["name", "subject"], values="value",
                          aggfunc="last", dropna=False)


def _col(wide: pd.DataFrame, name: str, subject: str = "network") -> pd.Series:
    if (name, subject) in wide.columns:
        return wide[(name, subject)]
    return pd.Series(float("nan"), index=wide.index)


def plot_daily(rows: list[dict], title: str, path: Path, *, currency: str = "") -> Path:
    """Three panels: energy (as run and counterfactual, kWh) with cost and saving on a
    second axis; specific energy (kWh/m3); completeness per sensor (%).  Writes a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = frame(rows)
    if wide.empty:
        raise ValueError("no KPIs to draw")
    days = wide.index
    width = 0.38
    x = range(len(days))
    fig, axes = plt.subplots(3, 1, figsize=(11, 9), sharex=True)

    ax = axes[0]
    ax.bar([i - width / 2 for i in x], _col(wide, "energy_kwh"), width, label="energy as run",
           color="tab:blue")
    ax.bar([i + width / 2 for i in x], _col(wide, "counterfactual_energy_kwh"), width,
           label="energy, own controls", color="tab:gray", alpha=0.6)
    ax.set_ylabel("kWh")
    ax.grid(alpha=0.3, axis="y")
    money = ax.twinx()
    money.plot(list(x), _col(wide, "cost"), "o-", color="tab:red", label="cost as run")
    money.plot(list(x), _col(wide, "saving"), "s--", color="tab:green", label="saving")
    money.axhline(0, color="black", lw=0.6)
    money.set_ylabel(currency or "cost")
    handles = ax.get_legend_handles_labels()
    more = money.get_legend_handles_labels()
    ax.legend(handles[0] + more[0], handles[1] + more[1], loc="upper left", fontsize=8,
              ncol=4)

    ax = axes[1]
    ax.plot(list(x), _col(wide, "specific_energy_kwh_per_m3"), "o-", color="tab:purple",
            label="network")
    pumps = sorted({s for n, s in wide.columns
                    if n == "specific_energy_kwh_per_m3" and s != "network"})
    if len(pumps) > 1:
        for p in pumps:
            ax.plot(list(x), _col(wide, "specific_energy_kwh_per_m3", p), ".-", lw=0.8,
                    label=p)
    ax.set_ylabel("kWh/m3")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8, ncol=4)

    ax = axes[2]
    sensors = sorted(s for n, s in wide.columns if n == "completeness")
    for s in sensors:
        ax.plot(list(x), _col(wide, "completeness", s) * 100.0, ".-", lw=0.9, label=s)
    ax.set_ylabel("completeness %")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    if sensors:
        ax.legend(loc="lower left", fontsize=8, ncol=min(len(sensors), 6))
    ax.set_xticks(list(x))
    ax.set_xticklabels([f"{d:%Y-%m-%d}" for d in days], rotation=45, ha="right")

    axes[0].set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
