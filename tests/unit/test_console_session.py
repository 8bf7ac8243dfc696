"""Console sessions expire (idle, absolute), the oldest goes when full; the console's
redirects stay on this site.  Pure: a clock we move by hand."""

from __future__ import annotations

from dataclasses import dataclass

from projections.console.session import Sessions
from projections.console.web import age, number, redirect


@dataclass
class Record:
    tenant: str = "ltown"
    name: str = "olga"
    scopes: tuple[str, ...] = ("operate",)


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_session_ends_after_being_idle_and_requests_keep_it_alive():
    clock = Clock()
    sessions = Sessions(idle_s=60, absolute_s=3600, clock=clock)
    s = sessions.create("tgs_a", Record())
    clock.t += 59
    assert sessions.get(s.id) is s  # touched: idle counts from here
    clock.t += 59
    assert sessions.get(s.id) is s
    clock.t += 61
    assert sessions.get(s.id) is None
    assert len(sessions) == 0  # forgotten, not just refused


def test_a_session_ends_at_its_absolute_limit_however_busy():
    clock = Clock()
    sessions = Sessions(idle_s=60, absolute_s=300, clock=clock)
    s = sessions.create("tgs_a", Record())
    for _ in range(10):
        clock.t += 30
        assert sessions.get(s.id) is s
    clock.t += 1  # 301 s after login
    assert sessions.get(s.id) is None


def test_sessions_have_their_own_ids_and_csrf_tokens_and_logout_ends_one():
    sessions = Sessions(clock=Clock())
    a, b = sessions.create("tgs_a", Record()), sessions.create("tgs_b", Record(name="bo"))
    assert a.id != b.id and a.csrf != b.csrf and len(a.id) >= 40
    sessions.end(a.id)
    assert sessions.get(a.id) is None and sessions.get(b.id) is b
    assert sessions.get(None) is None and sessions.get("made-up") is None


def test_when_full_the_least_recently_used_session_goes():
    clock = Clock()
    sessions = Sessions(max_sessions=2, clock=clock)
    a = sessions.create("tgs_a", Record())
    clock.t += 1
    b = sessions.create("tgs_b", Record())
    clock.t += 1
    sessions.get(a.id)  # a is used again: b is now the oldest
    clock.t += 1
    c = sessions.create("tgs_c", Record())
    assert sessions.get(b.id) is None
    assert sessions.get(a.id) is a and sessions.get(c.id) is c


def test_redirects_stay_on_this_site_and_carry_their_message():
    assert redirect("/schedule/x", "Approved.").headers["location"] == \
        "/schedule/x?flash=Approved."
    assert redirect("/whatif?task=1", "ok").headers["location"] == "/whatif?task=1&flash=ok"
    for elsewhere in ("https://evil.example/", "//evil.example/x", "javascript:alert(1)"):
        assert redirect(elsewhere).headers["location"] == "/"


def test_numbers_and_ages_as_the_pages_show_them():
    assert number(1234.5) == "1,234.50" and number(0.123456, 3) == "0.123"
    assert number(None) == number(float("nan")) == "\u2014"
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert age(now - timedelta(seconds=30), now) == "30 s ago"
    assert age(now - timedelta(minutes=5), now) == "5 min ago"
    assert age(now + timedelta(hours=2), now) == "in 2.0 h"
    assert age(None, now) == "never"
