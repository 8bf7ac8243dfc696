"""A real browser for the console's tests: Debian's headless Chromium through Selenium and
the system chromedriver (``ops/system-packages.txt`` lists both; ``ops/test.sh`` installs
them), and the seeded console of ``harness.py``.

Screenshots of every page go to a temporary folder (printed at the end of the session)
and, when the tests are run by hand (``CI`` unset), to ``var/console-screenshots/``.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.browser.harness import ConsoleServer
from tests.conftest import REPO

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1366, 768)
SKIPPED: list[str] = []  # why the browser tests were skipped, said again at the end
TABLET = (820, 1180)


class Browser:
    """One Chromium; ``visit`` loads a page, waits for its charts, fails on any error in
    the browser's console or a page wider than the window, and can take a screenshot."""

    def __init__(self, driver, base: str, shots: list[Path]) -> None:
        self.driver, self.base, self.shots = driver, base, shots
        self.sources: dict[str, str] = {}  # path -> page source, for the isolation test

    def visit(self, path: str, shot: str | None = None, *, wait_charts: bool = True,
              refused: bool = False) -> str:
        """``refused``: the page itself answers 4xx (an error page, a refused login):
        the browser's line about that status is expected, any other error is not."""
        self.driver.get(self.base + path)
        return self.settle(path, shot, wait_charts=wait_charts, refused=refused)

    def settle(self, path: str, shot: str | None = None, *, wait_charts: bool = True,
               refused: bool = False) -> str:
        """Wait for the page now shown (after a click), then check it as ``visit`` does."""
        from selenium.webdriver.support.ui import WebDriverWait

        d = self.driver
        WebDriverWait(d, 30).until(
            lambda d: d.execute_script("return document.readyState") == "complete")
        if wait_charts:
            WebDriverWait(d, 30).until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('.chart[data-figure]')]"
                ".every(e => e.querySelector('.main-svg'))"))
        self.check_console(path, refused_url=d.current_url if refused else None)
        overflow = d.execute_script("return document.documentElement.scrollWidth - "
                                    "document.documentElement.clientWidth")
        assert overflow <= 1, f"{path}: the page is {overflow} px wider than the window"
        source = d.page_source
        self.sources[f"{path} ({d.get_window_size()['width']} px)"] = source
        if shot:
            self.screenshot(shot)
        return source

    def check_console(self, where: str, refused_url: str | None = None) -> None:
        errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"
                  and not (refused_url and e["message"].startswith(refused_url.split("?")[0])
                           and "Failed to load resource" in e["message"])]
        assert not errors, f"{where}: errors in the browser console: {errors}"

    def screenshot(self, name: str) -> None:
        d = self.driver
        size = d.get_window_size()
        height = d.execute_script("return document.documentElement.scrollHeight")
        d.set_window_size(size["width"], max(size["height"], min(height + 140, 4000)))
        time.sleep(0.3)  # plotly redraws responsive charts on resize
        first = self.shots[0] / f"{name}.png"
        d.save_screenshot(str(first))
        for folder in self.shots[1:]:
            shutil.copyfile(first, folder / first.name)
        d.set_window_size(size["width"], size["height"])

    def login(self, token: str) -> None:
        from selenium.webdriver.common.by import By

        self.driver.delete_all_cookies()
        self.visit("/login")
        self.driver.find_element(By.ID, "token").send_keys(token)
        self.driver.find_element(By.ID, "login").click()
        self.settle("/ (after login)")

    def cookie(self) -> dict[str, str]:
        return {c["name"]: c["value"] for c in self.driver.get_cookies()}

    def text(self, element_id: str) -> str:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.ID, element_id).text


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
    """The API with its console, every component, a seeded L-Town tenant (harness.py)."""
    from tests.helpers import assert_accepted_were_stored

    server = ConsoleServer(settings, shared_data, tmp_path_factory.mktemp("console"),
                           reset=True).start()
    s = server.seeded
    print(f"\nconsole harness: seeded in {s.seed_s:.1f} s (optimise {s.optimise_s:.1f} s)")
    try:
        yield server
        server.call(assert_accepted_were_stored(server.nc, settings))
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(console, shot_dirs):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary = next((b for b in CHROMIUM if Path(b).exists()), None)
    if binary is None or not Path(CHROMEDRIVER).exists():
        # only when it could not be installed (ops/test.sh installs ops/system-packages.txt
        # and stops when apt-get fails): said in the skip reason and at the end of the run
        missing = [x for x, there in (("chromium", binary), ("chromium-driver",
                                                               Path(CHROMEDRIVER).exists()))
                   if not there]
        SKIPPED.append(f"the console's browser tests did not run: {' and '.join(missing)} "
                       f"not installed (apt-get install chromium chromium-driver)")
        pytest.skip(SKIPPED[-1])
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
                "--lang=en-GB", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(*DESKTOP)
    try:
        yield Browser(driver, console.url, shot_dirs)
    finally:
        driver.quit()


def pytest_terminal_summary(terminalreporter) -> None:
    """A skipped browser test is never silent: the reason ends the run's output."""
    for why in dict.fromkeys(SKIPPED):
        terminalreporter.write_sep("!", why, yellow=True, bold=True)
