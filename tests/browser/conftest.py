"""A real browser for the console's tests: Debian's headless Chromium through Selenium and
the system chromedriver (``ops/system-packages.txt`` lists both; ``ops/test.sh`` installs
them; ``ops/dev/console_browser.py``), and the seeded console of
``ops/dev/console_harness.py``.

Screenshots of every page go to a temporary folder (printed at the end of the session)
and, when the tests are run by hand (``CI`` unset), to ``var/console-screenshots/``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ops.dev.console_browser import Browser, missing, start_chromium
from ops.dev.console_harness import ConsoleServer
from tests.conftest import REPO

SKIPPED: list[str] = []  # why the browser tests were skipped, said again at the end


@pytest.fixture(scope="module")
def shot_dirs(tmp_path_factory) -> list[Path]:
    dirs = [tmp_path_factory.mktemp("console-screenshots")]
    if os.environ.get("CI", "").lower() not in ("1", "true"):
        by_hand = REPO / "var" / "console-screenshots"
        by_hand.mkdir(parents=True, exist_ok=True)
        dirs.append(by_hand)
    yield dirs
    print(f"\nconsole screenshots: {' and '.join(str(d) for d in dirs)}")


@pytest.fixture(scope="module")
def console(settings, shared_data, tmp_path_factory):
    """The API with its console, every component, a seeded L-Town tenant
    (ops/dev/console_harness.py)."""
    from tests.helpers import assert_accepted_were_stored, reset_jetstream

    server = ConsoleServer(settings, shared_data, tmp_path_factory.mktemp("console"),
                           reset=reset_jetstream, live_every_s=3.0).start()
    s = server.seeded
    print(f"\nconsole harness: seeded in {s.seed_s:.1f} s (optimise {s.optimise_s:.1f} s)")
    try:
        yield server
        server.call(assert_accepted_were_stored(server.nc, settings))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(console, shot_dirs):
    absent = missing()
    if absent:
        # only when they could not be installed (ops/test.sh installs
        # ops/system-packages.txt and stops when apt-get fails): said in the skip reason
        # and again at the end of the run
        SKIPPED.append(f"the console's browser tests did not run: {' and '.join(absent)} "
                       f"not installed (apt-get install chromium chromium-driver)")
        pytest.skip(SKIPPED[-1])
    driver = start_chromium()
    try:
        yield Browser(driver, console.url, shot_dirs)
    finally:
        driver.quit()


def pytest_terminal_summary(terminalreporter) -> None:
    """A skipped browser test is never silent: the reason ends the run's output."""
    for why in dict.fromkeys(SKIPPED):
        terminalreporter.write_sep("!", why, yellow=True, bold=True)
