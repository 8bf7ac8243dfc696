"""The OPC UA server's timeline: a pump's command now and its next change (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from producers.opcua.timeline import command, next_change
from tests.schedule_support import released

START = datetime(2024, 5, 1, tzinfo=UTC)
H = timedelta(hours=1)
V1 = released("t", 1, START, {"P1": [0.0, 1.0, 1.0, 0.0]})
# v2, released at 01:30, replaces v1 from 02:00: P1 stays off at 02:00
V2 = released("t", 2, START + 2 * H, {"P1": [0.0, 0.5]}, released_at=START + 1.5 * H)


def test_command_and_next_change_within_one_schedule():
    assert command([V1], "P1", START + 0.5 * H) == 0.0
    assert next_change([V1], "P1", START + 0.5 * H) == (START + H, 1.0)
    assert next_change([V1], "P1", START + 1.5 * H) == (START + 3 * H, 0.0)
    assert next_change([V1], "P1", START + 3.5 * H) == (START + 4 * H, None)  # horizon ends
    assert command([V1], "P1", START - H) is None and command([V1], "P2", START) is None


def test_a_later_release_takes_over_from_its_start():
    both = [V1, V2]
    assert command(both, "P1", START + 1.2 * H) == 1.0  # v2 not released yet
    assert next_change(both, "P1", START + 1.2 * H) == (START + 2 * H, 0.0)
    assert next_change(both, "P1", START + 2.2 * H) == (START + 3 * H, 0.5)
    assert next_change(both, "P1", START + 4.5 * H) is None
