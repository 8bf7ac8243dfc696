"""``Rulebook.values_of`` (many sensors in one pass, what the push doors use) decides
exactly what ``Rulebook.values`` decides sensor by sensor: the same accepted series, the
same rejections with the same reasons, details and counts, the same duplicates state."""

from __future__ import annotations

import random

import numpy as np
import pytest

from processors.normalise.rules import (
    IS_MISSING, IS_TEXT, OK, RejectionCap, Rulebook, Segment, SensorRule, Tally, Window,
)

T0 = 1_700_000_000 * 10**9


def _sensors(rng: random.Random) -> list[SensorRule]:
    ids = [f"s{i}" for i in range(6)] + ["bad id!"]
    out = []
    for sid in ids:
        lo, hi = sorted((rng.uniform(-5, 5), rng.uniform(0, 50)))
        out.append(SensorRule(sid, "l/s", "m3/s", rng.choice([1.0, 1e-3]),
                              rng.choice([0.0, 0.5]), lo, hi))
    return out


def _case(rng: random.Random):
    """Segments of random sensors (one may repeat: duplicates across segments), each a
    few values with missing, text, out-of-range, non-finite and repeated instants."""
    sensors = _sensors(rng)
    segs, ks, t, values, codes, raws = [], [], [], [], [], []
    k = 0
    for _ in range(rng.randint(1, 12)):
        sensor = rng.choice(sensors)
        n = rng.choice([0, 1, 1, 1, 2, 5])
        override = rng.random() < 0.2
        segs.append(Segment(sensor, n, *((2.0, 1.0) if override else (None, None))))
        for _ in range(n):
            ks.append(k)
            k += 1
            t.append(T0 + rng.randint(0, 4) * 60 * 10**9)  # repeats: duplicates
            v = rng.choice([rng.uniform(-10, 60), float("inf"), float("nan")])
            values.append(v)
            codes.append(rng.choice([OK, OK, OK, OK, IS_MISSING, IS_TEXT]))
            raws.append(f"{v:.3f}")
    return (segs, np.array(ks, dtype=np.int64), np.array(t, dtype=np.int64),
            np.array(values, dtype=np.float64), np.array(codes, dtype=np.int8), raws, k)


def _book() -> Rulebook:
    return Rulebook(Window(0, 2**62), RejectionCap(per_reason=3))


@pytest.mark.parametrize("seed", range(200))
def test_values_of_equals_values_sensor_by_sensor(seed):
    rng = random.Random(seed)
    segs, ks, t, values, codes, raws, rows = _case(rng)
    one_pass, per_sensor = _book(), _book()
    a, b = Tally(list(range(1, rows + 1)), one_pass.cap), Tally(list(range(1, rows + 1)),
                                                                per_sensor.cap)
    one_pass.values_of(a, segs, ks, t, values, codes, raws, non_numeric="expected a number")
    start = 0
    for g in segs:
        sl = slice(start, start + g.n)
        per_sensor.values(b, g.sensor, ks[sl], t[sl], values[sl], codes[sl], raws[sl],
                          factor=g.factor, offset=g.offset, non_numeric="expected a number")
        start += g.n
    got, want = a.finish(), b.finish()
    assert got == want
    assert got.values_received == len(raws)  # every value accounted for, once
    state = lambda book: {s: (i._first, i._last, i._step, i._loose)  # noqa: E731
                          for s, i in book.seen.items()}
    assert state(one_pass) == state(per_sensor)  # the instants each sensor has taken
