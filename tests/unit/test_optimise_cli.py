"""``tagus optimise benchmark`` on a small instance: the exact interface, the CSV."""

import csv

from ops.cli import main


def test_benchmark_command_writes_the_schedule(shared_data, tmp_path, capsys):
    out = tmp_path / "schedule.csv"
    rc = main(["optimise", "benchmark", "--inp", str(shared_data / "battledim/L-TOWN.inp"),
               "--tou", "0.10,0.25,8", "--hours", "3", "--time-limit", "10", "--out", str(out)])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["status_PUMP_1"] and len(rows) == 1 + 3
    assert all(0.0 <= float(r[0]) <= 1.0 for r in rows[1:])
    assert "status: feasible" in printed.out and "tank T1" in printed.out
    assert "cost:" in printed.out and "time:" in printed.out
    assert "baseline (own controls)" in printed.err  # progress while it works


def test_benchmark_command_rejects_a_bad_tariff(shared_data, tmp_path, capsys):
    rc = main(["optimise", "benchmark", "--inp", str(shared_data / "battledim/L-TOWN.inp"),
               "--tou", "cheap", "--out", str(tmp_path / "x.csv")])
    assert rc == 2 and "OFF,PEAK,PEAK_START_H" in capsys.readouterr().err
