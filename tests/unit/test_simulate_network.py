"""The twin's network loader: summary in SI, natural period, typed errors."""

from pathlib import Path

import pytest
import wntr

from processors.simulate import NetworkInputError, load_network, natural_period_s

NET3 = Path(wntr.__file__).parent / "library" / "networks" / "Net3.inp"


def test_net3_summary_in_si():
    net = load_network(NET3.read_bytes())
    s = net.summary()
    assert (s["junctions"], s["tanks"], s["pumps"], s["reservoirs"]) == (92, 3, 2, 2)
    assert s["flow_units"] == "GPM" and s["duration_s"] == 168 * 3600
    assert s["controls"] == 18
    tank1 = net.tank("1")
    assert tank1.max_level_m == pytest.approx(32.1 * 0.3048)  # feet converted to m
    assert tank1.volume_m3(tank1.max_level_m) > tank1.volume_m3(tank1.min_level_m)
    assert tank1.level_m(tank1.volume_m3(5.0)) == pytest.approx(5.0)
    assert {c.targets for c in net.controls_on(["335"])} == {("335",)}


def test_natural_period(shared_data):
    poormond = load_network((shared_data / "pumpsched/poormond/Poormond-48_Steps-Day_1.inp").read_bytes())
    assert natural_period_s(poormond, poormond.times.duration_s) == 1800  # 48 rows
    ltown = load_network((shared_data / "battledim/L-TOWN.inp").read_bytes())
    assert natural_period_s(ltown, 24 * 3600) == 3600  # 5-minute patterns -> hours
    vanzyl = load_network((shared_data / "pumpsched/vanzyl/van_zyl.inp").read_bytes())
    assert vanzyl.times.pattern_start_s == 7 * 3600
    assert vanzyl.pattern_value("pumptariff", 0) == pytest.approx(0.1194)  # 07:00 is peak
    assert vanzyl.pattern_value("pumptariff", 17 * 3600) == pytest.approx(0.0244)  # 00:00


def test_unreadable_network_is_a_typed_error():
    with pytest.raises(NetworkInputError, match="SECTIONS"):
        load_network(b"not an epanet file")
    with pytest.raises(NetworkInputError):
        load_network("[JUNCTIONS]\n J1 10 x\n[END]\n")
