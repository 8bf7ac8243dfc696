"""Headless Chromium for the console: Debian's ``chromium`` through Selenium and the
system ``chromedriver`` (``ops/system-packages.txt`` lists both), and ``Browser``, which
visits pages the way the browser tests and ``tagus screenshots`` need (wait for the
charts, fail on any error in the browser's console or a page wider than its window,
screenshots of the whole page)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1366, 768)
TABLET = (820, 1180)


class ChromiumMissing(RuntimeError):
    """Chromium or its driver is not installed."""


def missing() -> list[str]:
    """The Debian packages of the two that are not installed."""
    out = []
    if not any(Path(b).exists() for b in CHROMIUM):
        out.append("chromium")
    if not Path(CHROMEDRIVER).exists():
        out.append("chromium-driver")
    return out


def start_chromium(size: tuple[int, int] = DESKTOP):
    """A headless Chromium driven by the system chromedriver (its console log kept)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    absent = missing()
    if absent:
        raise ChromiumMissing(f"{' and '.join(absent)} not installed (apt-get install "
                              f"chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = next(b for b in CHROMIUM if Path(b).exists())
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                "--disable-gpu", f"--window-size={size[0]},{size[1]}",
                "--lang=en-GB", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_window_size(*size)
    return driver


class Browser:
    """One Chromium; ``visit`` loads a page, waits for its charts, fails on any error in
    the browser's console or a page wider than the window, and can take a screenshot
    into the first of ``shots`` (copied to the others)."""

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
        if overflow > 1:
            raise AssertionError(f"{path}: the page is {overflow} px wider than the window")
        source = d.page_source
        self.sources[f"{path} ({d.get_window_size()['width']} px)"] = source
        if shot:
            self.screenshot(shot)
        return source

    def check_console(self, where: str, refused_url: str | None = None) -> None:
        errors = [e for e in self.driver.get_log("browser") if e["level"] == "SEVERE"
                  and not (refused_url and e["message"].startswith(refused_url.split("?")[0])
                           and "Failed to load resource" in e["message"])]
        if errors:
            raise AssertionError(f"{where}: errors in the browser console: {errors}")

    def screenshot(self, name: str, *, full: bool = True) -> Path:
        """``<name>.png`` of the page (``full``: its whole height, up to 4000 px)."""
        d = self.driver
        size = d.get_window_size()
        if full:
            height = d.execute_script("return document.documentElement.scrollHeight")
            d.set_window_size(size["width"], max(size["height"], min(height + 140, 4000)))
            time.sleep(0.3)  # plotly redraws responsive charts on resize
        first = self.shots[0] / f"{name}.png"
        d.save_screenshot(str(first))
        for folder in self.shots[1:]:
            shutil.copyfile(first, folder / first.name)
        if full:
            d.set_window_size(size["width"], size["height"])
        return first

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
