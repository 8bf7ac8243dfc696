"""``tagus forecast backtest`` on the real BWDF files, short configuration."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from ops.cli import main
from ops.commands.forecast import last_mondays, read_table


@pytest.fixture(scope="module")
def bwdf() -> Path:
    env = os.environ.get("TAGUS_SHARED_DATA")
    path = (Path(env) if env else Path(__file__).resolve().parents[2] / ".." / "shared" / "data") / "bwdf"
    if not (path / "InflowData_1.xlsx").is_file():
        pytest.skip(f"BWDF files not found in {path} (set TAGUS_SHARED_DATA)")
    return path


def test_backtest_writes_one_row_per_hour_per_series(bwdf, tmp_path, capsys):
    out = tmp_path / "forecast.csv"
    code = main(["forecast", "backtest", "--inflow", str(bwdf / "InflowData_1.xlsx"),
                 "--weather", str(bwdf / "WeatherData_1.xlsx"),
                 "--holidays", str(bwdf / "Holidays.txt"),
                 "--start", "2021-10-25 00:00", "--hours", "168", "--out", str(out),
                 "--series", "DMA C (L/s),DMA H (L/s)", "--quick"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "DMA C (L/s): chose" in printed and "DMA H (L/s): chose" in printed
    rows = list(csv.reader(out.read_text().splitlines()))
    assert rows[0] == ["Date-time CET-CEST (DD/MM/YYYY HH:mm)", "DMA C (L/s)", "DMA H (L/s)"]
    assert len(rows) == 1 + 168
    stamps = [r[0] for r in rows[1:]]
    assert stamps[0] == "25/10/2021 00:00" and stamps[-1] == "31/10/2021 22:00"
    assert stamps.count("31/10/2021 02:00") == 2  # the autumn hour, twice like the input
    values = np.array([[float(v) for v in r[1:]] for r in rows[1:]])
    assert np.isfinite(values).all()
    # the file's own observations for that week, read independently of the forecast
    _, inflow = read_table(bwdf / "InflowData_1.xlsx", "Europe/Rome")
    start = inflow.index.get_loc(inflow.index[inflow.index >= "2021-10-24 22:00Z"][0])
    obs = inflow[["DMA C (L/s)", "DMA H (L/s)"]].iloc[start:start + 168].to_numpy()
    assert np.nanmean(np.abs(obs - values)) < 0.25 * np.nanmean(obs)


def test_read_table_keeps_dst_hours_and_evaluation_weeks(bwdf):
    header, inflow = read_table(bwdf / "InflowData_1.xlsx", "Europe/Rome")
    assert header.startswith("Date-time")
    assert len(inflow) == 13679 and inflow.index.is_unique
    assert (np.diff(inflow.index.asi8) == 3_600_000_000_000).all()  # consecutive UTC hours
    mondays = last_mondays(inflow.index[-1], "Europe/Rome", 8)
    assert [m.tz_convert("Europe/Rome").strftime("%d/%m") for m in mondays] == [
        "30/05", "06/06", "13/06", "20/06", "27/06", "04/07", "11/07", "18/07"]


def test_read_table_csv_with_semicolons_decimal_commas_and_the_autumn_hour(tmp_path):
    path = tmp_path / "inflow.csv"
    path.write_text("Date-time CET-CEST (DD/MM/YYYY HH:mm);DMA X (L/s);\n"
                    "31/10/2021 01:00;1,5;\n31/10/2021 02:00;#N/A;\n31/10/2021 02:00;3;\n"
                    "31/10/2021 03:00;NaN;\n")
    header, frame = read_table(path, "Europe/Rome")
    assert list(frame.columns) == ["DMA X (L/s)"]
    assert [t.strftime("%H") for t in frame.index] == ["23", "00", "01", "02"]  # UTC
    assert frame["DMA X (L/s)"].tolist()[0] == 1.5 and frame["DMA X (L/s)"].tolist()[2] == 3.0
    assert np.isnan(frame["DMA X (L/s)"].tolist()[1]) and np.isnan(frame["DMA X (L/s)"].tolist()[3])
