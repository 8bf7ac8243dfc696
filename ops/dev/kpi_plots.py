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
                          aggfunc="last")


def _col(wide: pd.DataFrame, name: str, subject: str = "network") -> pd.Series:
    if (name, subject) in wide.columns:
        return wide[(name, subject)]
    return pd.Series(float("nan"), index=wide.index)


def plot_daily(rows: list[dict], title: str, path: Path, *, currency: str = "") -> Path:
    """Four panels per day: energy as run and under the network's own controls (kWh);
    cost as run, the counterfactual's, and the saving (currency); specific energy
    (kWh/m3); completeness per sensor (%).  Writes a PNG and returns its path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    wide = frame(rows)
    if wide.empty:
        raise ValueError("no KPIs to draw")
    days = wide.index
    x = list(range(len(days)))
    left, right = [i - 0.2 for i in x], [i + 0.2 for i in x]
    fig, axes = plt.subplots(4, 1, figsize=(11, 11), sharex=True)

    ax = axes[0]
    ax.bar(left, _col(wide, "energy_kwh"), 0.38, label="as run", color="tab:blue")
    ax.bar(right, _col(wide, "counterfactual_energy_kwh"), 0.38,
           label="network's own controls", color="tab:gray", alpha=0.6)
    ax.set_ylabel("energy kWh")

    ax = axes[1]
    ax.bar(left, _col(wide, "cost"), 0.38, label="cost as run", color="tab:red")
    ax.bar(right, _col(wide, "counterfactual_cost"), 0.38, label="cost, own controls",
           color="tab:gray", alpha=0.6)
    ax.plot(x, _col(wide, "saving"), "s--", color="tab:green", label="saving")
    ax.axhline(0, color="black", lw=0.6)
    ax.set_ylabel(currency or "cost")

    ax = axes[2]
    ax.plot(x, _col(wide, "specific_energy_kwh_per_m3"), "o-", color="tab:purple",
            label="network")
    pumps = sorted({s for n, s in wide.columns
                    if n == "specific_energy_kwh_per_m3" and s != "network"})
    if len(pumps) > 1:
        for p in pumps:
            ax.plot(x, _col(wide, "specific_energy_kwh_per_m3", p), ".-", lw=0.8, label=p)
    ax.set_ylabel("kWh/m3")

    ax = axes[3]
    for s in sorted(s for n, s in wide.columns if n == "completeness"):
        ax.plot(x, _col(wide, "completeness", s) * 100.0, ".-", lw=0.9, label=s)
    ax.set_ylabel("completeness %")
    ax.set_ylim(-2, 102)
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8, ncol=6)
    axes[-1].set_xticks(x)
    axes[-1].set_xticklabels([f"{d:%Y-%m-%d}" for d in days], rotation=45, ha="right")
    axes[0].set_title(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
