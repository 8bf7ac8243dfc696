"""``tagus screenshots``: every page of the operators' console in headless Chromium.

A private stack (NATS and QuestDB on free ports in a temporary folder, stopped and
removed at the end), the console harness (``console_harness.py``: a re-dated L-Town
tenant with a verified schedule, a forecast, KPIs and a raised alert), then an
operator's tour at 1366x768: login, overview, schedule (and a reason on hover),
forecasts, data, tasks, alerts, configuration, a what-if run to its result, the
overview on a tablet.  PNGs of whole pages go to ``--out`` (``var/console-screenshots``);
``--docs`` also writes the README's pictures (the first screen of three pages, reduced
to 256 colours) to ``docs/console/``.  ``--serve`` seeds the same console and serves it
until Ctrl-C, printing its URL and tokens (to look at it by hand).

Needs Debian's ``chromium`` and ``chromium-driver`` (``ops/system-packages.txt``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

from ops.dev.console_browser import DESKTOP, TABLET, Browser, start_chromium
from ops.dev.console_harness import ConsoleServer

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "console"
DOC_PAGES = ("overview", "schedule-hover", "whatif")  # the README's pictures


@contextlib.contextmanager
def private_stack():
    """Settings of a NATS + QuestDB started on free ports in a temporary folder; both
    stopped and the folder removed on exit (the environment is restored)."""
    from ops.dev import stack
    from ops.settings import load_settings

    root = Path(tempfile.mkdtemp(prefix="tagus-console-"))
    names = ("NATS_PORT", "NATS_MONITOR_PORT", "NATS_MQTT_PORT", "QUESTDB_HTTP_PORT",
             "QUESTDB_PG_PORT", "QUESTDB_ILP_PORT", "QUESTDB_MIN_HTTP_PORT")
    env = {"TAGUS_DATA_DIR": str(root / "var")}
    env |= {f"TAGUS_{n}": str(stack.free_port()) for n in names}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    settings = load_settings()
    try:
        for line in stack.up(settings):
            print(line, flush=True)
        yield settings, root
    finally:
        for line in stack.down(settings):
            print(line, flush=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)


def _until(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while not (got := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.5)
    return got


def tour(server: ConsoleServer, out: Path, docs: Path | None) -> list[Path]:
    """Visit every page as an operator (token ``olga``: operate, write) and save PNGs;
    returns them.  ``docs``: also the README's reduced pictures there."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    s = server.seeded
    out.mkdir(parents=True, exist_ok=True)
    driver = start_chromium(DESKTOP)
    b = Browser(driver, server.url, [out])
    shots: list[Path] = []
    first_screens: dict[str, Path] = {}

    def shot(name: str, scroll_to: str | None = None) -> None:
        shots.append(b.screenshot(name))
        if docs is not None and name in DOC_PAGES:
            if scroll_to:
                driver.execute_script(f"document.getElementById('{scroll_to}')"
                                      f".scrollIntoView()")
            first_screens[name] = b.screenshot(f"{name}-screen", full=False)

    try:
        driver.delete_all_cookies()
        b.visit("/login")
        shot("login")
        b.login(s.tokens["olga"])
        for path, name in (("/", "overview"), (f"/schedule/{s.schedule_id}", "schedule"),
                           ("/forecasts?series=zone:town", "forecasts"),
                           ("/data?sensor=T1", "data"), ("/tasks", "tasks"),
                           ("/alerts", "alerts"), ("/config", "config"),
                           ("/config/rules", "config-rules")):
            b.visit(path)
            shot(name)
        # a reason on hover: the first running pump-period of the Gantt chart
        b.visit(f"/schedule/{s.schedule_id}")
        driver.execute_script("document.getElementById('gantt').scrollIntoView()")
        bar = driver.find_elements(By.CSS_SELECTOR, "#gantt .barlayer .point path")[0]
        ActionChains(driver).move_to_element(bar).perform()
        _until(lambda: driver.find_element(By.CSS_SELECTOR, "#gantt .hoverlayer").text,
               10, "a hover label on the Gantt chart")
        shots.append(b.screenshot("schedule-hover", full=False))
        if docs is not None:
            first_screens["schedule-hover"] = shots[-1]
        # a what-if: 15 % more demand over the seeded horizon, run to its result
        b.visit("/whatif")
        for field, value in (("whatif-start", s.start.strftime("%Y-%m-%dT%H:%MZ")),
                             ("whatif-hours", "6"), ("demand-multiplier", "1.15")):
            el = driver.find_element(By.ID, field)
            el.clear()
            el.send_keys(value)
        driver.find_element(By.CSS_SELECTOR, '#whatif-demand option[value="actual"]').click()
        limit = driver.find_element(By.NAME, "time_limit_s")
        limit.clear()
        limit.send_keys("10")
        driver.find_element(By.ID, "whatif-run").click()
        b.settle("/whatif (requested)", wait_charts=False)
        _until(lambda: driver.find_elements(By.ID, "whatif-done"), 300, "the what-if result")
        b.settle("/whatif (done)")
        shot("whatif", scroll_to="whatif-live")
        driver.set_window_size(*TABLET)
        b.visit("/")
        shot("tablet-overview")
    finally:
        driver.quit()
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        for name, path in first_screens.items():
            shots.append(_small_png(path, docs / f"{name.removesuffix('-screen')}.png"))
    return shots


def _small_png(source: Path, target: Path) -> Path:
    """``source`` reduced to 256 colours (a few tens of kB), as ``target``."""
    from PIL import Image

    with Image.open(source) as im:
        im.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE).save(
            target, optimize=True)
    return target


def run(shared_data: Path, out: Path, *, docs: bool = False, serve: bool = False) -> int:
    """The tour (or ``serve``) on a private stack; 2 when the L-Town files are missing."""
    if not (shared_data / "battledim" / "L-TOWN.inp").is_file():
        print(f"tagus screenshots: no battledim/L-TOWN.inp under {shared_data} "
              f"(--shared-data or TAGUS_SHARED_DATA)")
        return 2
    t0 = time.monotonic()
    with private_stack() as (settings, root):
        server = ConsoleServer(settings, shared_data, root).start()
        try:
            seeded = server.seeded
            print(f"console: {server.url}/  tenant {seeded.tenant} (seeded in "
                  f"{seeded.seed_s:.1f} s, optimise {seeded.optimise_s:.1f} s)", flush=True)
            if serve:
                for name, token in seeded.tokens.items():
                    print(f"  token {name}: {token}")
                print("Ctrl-C stops it (and the private stack)", flush=True)
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
                return 0
            shots = tour(server, out, DOCS if docs else None)
        finally:
            server.stop()
    for path in shots:
        print(f"{path} ({path.stat().st_size // 1024} kB)")
    print(f"{len(shots)} screenshots in {time.monotonic() - t0:.0f} s")
    return 0


def add_arguments(ap: argparse.ArgumentParser, shared_data: Path | None = None) -> None:
    ap.add_argument("--out", type=Path, default=REPO / "var" / "console-screenshots",
                    help="folder for the PNGs of whole pages (default var/console-screenshots)")
    ap.add_argument("--docs", action="store_true",
                    help=f"also write the README's pictures to {DOCS.relative_to(REPO)}")
    ap.add_argument("--serve", action="store_true",
                    help="seed the console and serve it until Ctrl-C instead")
    ap.add_argument("--shared-data", type=Path, default=shared_data or Path(
        os.environ.get("TAGUS_SHARED_DATA", REPO.parent / "shared" / "data")),
        help="where battledim/ is (default: the settings' shared data)")


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m ops.dev.screenshots",
                                 description=__doc__.split("\n")[0])
    add_arguments(ap)
    args = ap.parse_args(argv)
    return run(args.shared_data, args.out, docs=args.docs, serve=args.serve)


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
