"""The console in a real browser (headless Chromium), against a seeded L-Town tenant.

One browser and one seeded console for the module (seeding runs an ``optimise`` task: tens
of seconds); the tests run in file order as an operator's session would: log in, look at
every page and compare its numbers with the JSON API's, upload a file, approve the
schedule and see it released, acknowledge the alert, run a what-if, edit configuration
as an administrator, log out, and check that the other tenant's data never showed.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from ops.dev.console_browser import DESKTOP, TABLET
from ops.dev.console_harness import (
    OTHER_NAME, OTHER_SENSOR, raise_overflow_alert, redated_csv, request_proposal,
)

pytestmark = pytest.mark.servers
STATE: dict = {}  # what one test leaves for a later one (the what-if's task)


def money(v) -> str:
    return f"{v:,.2f}"


def until(check, timeout_s: float = 60.0, what: str = ""):
    """Poll ``check`` until it is truthy; an element replaced by the page's live refresh
    between finding and reading it (stale) is read again at the next poll."""
    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            got = check()
        except StaleElementReferenceException:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.5)


def test_login_is_required_and_a_wrong_token_refused(console, browser):
    from selenium.webdriver.common.by import By

    browser.visit("/schedule")
    assert "/login" in browser.driver.current_url
    browser.driver.find_element(By.ID, "token").send_keys("tgs_not-a-token")
    browser.driver.find_element(By.ID, "login").click()
    browser.settle("/login (refused)", refused=True)
    assert "unknown, expired or revoked" in browser.text("problem")
    # the API stays under /v1 with its tokens: no cookie opens it
    assert httpx.get(console.url + "/v1/sensors").status_code == 401


def test_session_cookie_and_csrf(console):
    """HttpOnly, SameSite, not Secure over plain HTTP; forms without the session's CSRF
    token, or from another origin, change nothing; logging in needs the form's nonce."""
    s = console.seeded
    with httpx.Client(base_url=console.url) as web:
        web.get("/login")
        refused = web.post("/login", data={"token": s.tokens["olga"], "nonce": "forged"})
        assert refused.status_code == 403 and "expired or did not come" in refused.text
        nonce = refused.text.split('name="nonce" value="')[1].split('"')[0]  # a new form
        r = web.post("/login", data={"token": s.tokens["olga"], "nonce": nonce})
        assert r.status_code == 303
        cookie = next(h for h in r.headers.get_list("set-cookie")
                      if h.startswith("tagus_session="))
        flags = cookie.lower()
        assert "httponly" in flags and "samesite=lax" in flags and "secure" not in flags
        url = f"/schedule/{s.schedule_id}/approve"
        assert web.post(url, data={"comment": "no csrf"}).status_code == 403
        csrf = web.get("/").text.split('data-csrf="')[1].split('"')[0]
        assert web.post(url, data={"csrf": csrf}, headers={"Origin": "https://evil.example"}
                        ).status_code == 403
        assert web.get(f"/v1/schedules/{s.schedule_id}", headers=_h(s.tokens["viewer"])
                       ).json()["state"] == "proposed"  # nothing was approved


def test_overview_equals_the_api(console, browser):
    from selenium.webdriver.common.by import By

    s = console.seeded
    browser.login(s.tokens["olga"])
    browser.visit("/", "overview")
    tok = s.tokens["viewer"]
    now = datetime.now(UTC)
    pts = console.api("/v1/sensors/T1/readings", tok,
                      start=(now - timedelta(hours=2)).isoformat(),
                      end=(now + timedelta(seconds=1)).isoformat()).json()["points"]
    tank = browser.driver.find_element(By.CSS_SELECTOR, '[data-tank="T1"] .level')
    assert abs(float(tank.get_attribute("data-value")) - pts[-1]["value"]) < 1e-9
    assert tank.text == f"{pts[-1]['value']:.2f} m"
    kpis = {k["name"]: k for k in console.api("/v1/kpis", tok, day=now.date().isoformat()
                                              ).json()["kpis"] if k["subject"] == "network"}
    assert browser.text("kpi-cost") == f"{money(kpis['cost']['value'])} EUR"
    assert browser.text("kpi-counterfactual").startswith(
        money(kpis["counterfactual_cost"]["value"]))
    assert browser.text("kpi-saving").startswith(money(kpis["saving"]["value"]))
    open_alerts = console.api("/v1/alerts", tok, state="open").json()["alerts"]
    assert browser.text("open-alert-count") == str(len(open_alerts)) != "0"
    sensors = [x["sensor"] for x in console.api("/v1/sensors", tok).json()["sensors"]]
    rows = browser.driver.find_elements(By.CSS_SELECTOR, "#freshness tr[data-sensor]")
    assert [r.get_attribute("data-sensor") for r in rows] == sensors
    assert "awaits approval" in browser.text("next-changes")


def test_schedule_page_equals_the_api_and_explains_on_hover(console, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    s = console.seeded
    api = console.api(f"/v1/schedules/{s.schedule_id}", s.tokens["viewer"]).json()
    browser.visit(f"/schedule/{s.schedule_id}", "schedule")
    assert browser.text("cost") == f"{money(api['cost'])} {api['currency']}"
    assert browser.text("baseline-cost") == f"{money(api['baseline_cost'])} {api['currency']}"
    assert browser.text("saving").startswith(f"{money(api['saving'])} {api['currency']}")
    assert browser.text("schedule-state") == "proposed"
    assert "verified" in browser.text("verified")
    for listed in console.api("/v1/schedules", s.tokens["viewer"], days=30).json()["schedules"]:
        row = browser.driver.find_element(
            By.CSS_SELECTOR, f'#schedules tr[data-schedule="{listed["schedule_id"]}"]')
        assert row.find_element(By.CSS_SELECTOR, ".cost").text == money(listed["cost"])
    # the plan table holds every pump-period's reason as the API gives it
    reasons = {r for p in api["plan"]["pumps"] for r in p["reasons"]}
    table = browser.driver.find_element(By.ID, "plan-table").get_attribute("textContent")
    assert reasons and all(r in table for r in reasons)
    # hovering a pump-period shows why
    bar = browser.driver.find_elements(By.CSS_SELECTOR, "#gantt .barlayer .point path")[0]
    ActionChains(browser.driver).move_to_element(bar).perform()
    hover = until(lambda: browser.driver.find_element(By.CSS_SELECTOR, "#gantt .hoverlayer"
                                                      ).text, 10, "a hover label")
    assert "why:" in hover and any(r in hover.replace("\n", " ") for r in reasons)
    browser.check_console("gantt hover")
    # the price bands and the bounds are there, told apart by more than colour
    fig = browser.driver.execute_script("return document.getElementById('tank-chart').data")
    dashes = {t["name"]: t.get("line", {}).get("dash") for t in fig}
    assert dashes["T1 minimum 0.50 m"] == "dash" and dashes["T1 maximum 3.90 m"] == "dot"


def test_forecasts_page_equals_the_api(console, browser):
    from selenium.webdriver.common.by import By

    api = console.api("/v1/forecasts/zone:town", console.seeded.tokens["viewer"]).json()
    browser.visit("/forecasts?series=zone:town", "forecasts")
    assert browser.text("hours") == str(len(api["points"]))
    assert browser.text("model") == "ensemble (harness)"
    shown = [td.get_attribute("textContent") for td in
             browser.driver.find_elements(By.CSS_SELECTOR, "#forecast-table td.p50")]
    assert shown == [f"{p['p50']:.5g}" for p in api["points"]]
    measured = [p for p in api["points"] if p["actual"] is not None]
    inside = sum(p["p10"] <= p["actual"] <= p["p90"] for p in measured)
    assert browser.text("coverage").startswith(f"{100 * inside / len(measured):,.0f} %")
    mae = sum(abs(p["p50"] - p["actual"]) for p in measured) / len(measured)
    assert browser.text("mae") == f"{mae:.4g} {api['points'][0]['unit']}"
    skill = next(k for k in console.api("/v1/kpis", console.seeded.tokens["viewer"],
                                        day=datetime.now(UTC).date().isoformat()
                                        ).json()["kpis"] if k["name"] == "forecast_skill")
    assert browser.text("kpi-skill") == money(skill["value"])


def test_data_page_equals_the_api_and_a_dropped_file_is_ingested(console, browser,
                                                                  shared_data):
    from selenium.webdriver.common.by import By

    s = console.seeded
    tok = s.tokens["viewer"]
    browser.visit("/data?sensor=T1", "data")
    start = browser.driver.find_element(By.ID, "start").get_attribute("value")
    end = browser.driver.find_element(By.ID, "end").get_attribute("value")
    api = console.api("/v1/sensors/T1/readings", tok, start=start, end=end).json()
    assert browser.text("point-count") == str(len(api["points"])) != "0"
    for row in console.api("/v1/intakes", tok).json()["intakes"]:
        tr = browser.driver.find_element(By.CSS_SELECTOR, f'tr[data-intake="{row["intake_id"]}"]')
        assert tr.find_element(By.CSS_SELECTOR, ".accepted").text == str(row["values_accepted"])
        assert tr.find_element(By.CSS_SELECTOR, ".received").text == str(row["values_received"])
    # the explorer's export is the API's CSV, complete
    href = browser.driver.find_element(By.ID, "export").get_attribute("href")
    csv = httpx.get(href, cookies=browser.cookie(), timeout=30).text.splitlines()
    assert csv[-1] == f"# end: {len(api['points'])} rows"
    # a file dropped on the page is ingested (Chromium's own drag events carrying a File:
    # WebDriver cannot drag from the desktop; the file input shares the same sender); one
    # row out of range comes back as a rejection with its reason
    body = redated_csv(shared_data / "battledim" / "2019-01_SCADA_Levels.csv",
                       s.start - timedelta(days=1), datetime(2019, 1, 14, tzinfo=UTC),
                       datetime(2019, 1, 14, 2, tzinfo=UTC)).decode()
    lines = body.splitlines()
    lines[3] = lines[3].split(";")[0] + ";99,5"
    browser.driver.find_element(By.CSS_SELECTOR,
                                '#upload-mapping option[value="battledim_levels"]').click()
    highlighted = browser.driver.execute_script("""
        const dt = new DataTransfer();
        dt.items.add(new File([arguments[0]], arguments[1], {type: "text/csv"}));
        const zone = document.getElementById("dropzone");
        const ev = (kind) => new DragEvent(kind, {dataTransfer: dt, bubbles: true,
                                                  cancelable: true});
        zone.dispatchEvent(ev("dragover"));
        const over = zone.classList.contains("over");
        zone.dispatchEvent(ev("drop"));
        return over && !zone.classList.contains("over");""",
        "\n".join(lines) + "\n", "levels_by_hand.csv")
    assert highlighted, "the drop zone shows where a dragged file will go"
    until(lambda: "as upload" in browser.text("upload-result"), 30, "the upload answer")
    intake_id = browser.text("upload-result").split("as upload ")[1].split(":")[0]

    def outcome():
        for row in console.api("/v1/intakes", tok).json()["intakes"]:
            if row["intake_id"] == intake_id:
                return row
        return None
    row = until(outcome, 60, "the upload's outcome")
    assert row["status"] == "parsed", row
    assert row["filename"] == "levels_by_hand.csv" and row["source"] == "console"
    assert row["values_rejected"] == 1 and row["values_accepted"] == len(lines) - 2
    browser.visit(f"/data?intake={intake_id}", "data-rejections")
    assert row["reasons"] and all(r in browser.text("rejections") for r in row["reasons"])
    browser.check_console("upload")


def test_whatif_runs_the_twin(console, browser):
    """Started now, looked at later (an optimise run in the background).  L-Town has one
    pump: taking it out leaves nothing to schedule, so the what-if here is 15 % more
    demand."""
    from selenium.webdriver.common.by import By

    s = console.seeded
    browser.visit("/whatif", "whatif-form")
    d = browser.driver
    assert d.find_elements(By.CSS_SELECTOR, 'input[name="out_of_service"][value="PUMP_1"]')
    for name, value in (("whatif-start", s.start.strftime("%Y-%m-%dT%H:%MZ")),
                        ("whatif-hours", "6"), ("demand-multiplier", "1.15")):
        field = d.find_element(By.ID, name)
        field.clear()
        field.send_keys(value)
    d.find_element(By.CSS_SELECTOR, '#whatif-demand option[value="actual"]').click()
    limit = d.find_element(By.NAME, "time_limit_s")
    limit.clear()
    limit.send_keys("10")
    d.find_element(By.ID, "whatif-run").click()
    browser.settle("/whatif (requested)", wait_charts=False)
    assert "task=" in d.current_url
    STATE["whatif"] = d.current_url.split("task=")[1]


def test_approving_releases_the_schedule(console, browser):
    from selenium.webdriver.common.by import By

    s = console.seeded
    browser.visit(f"/schedule/{s.schedule_id}")
    browser.driver.find_element(By.NAME, "comment").send_keys("looks right")
    browser.driver.find_element(By.ID, "approve").click()
    browser.driver.switch_to.alert.accept()  # "Release this schedule to SCADA?"
    browser.settle("/schedule (approved)")
    assert "Approved" in browser.text("flash")
    tok = s.tokens["viewer"]
    until(lambda: console.api(f"/v1/schedules/{s.schedule_id}", tok).json()["state"]
          == "released", 60, "released")
    api = console.api(f"/v1/schedules/{s.schedule_id}", tok).json()
    assert api["version"] == 1 and api["released_by"] == "olga" and api["approved_by"] == "olga"
    in_force = console.api("/v1/schedules/in-force", tok).json()
    assert in_force["schedule_id"] == s.schedule_id
    # the page follows by itself (it refreshes its live part)
    until(lambda: browser.text("schedule-state") == "released v1", 30, "page shows v1")
    browser.check_console("after approval")
    browser.screenshot("schedule-released")
    browser.visit("/", "overview-released")
    assert browser.text("plan-version") == "1"
    assert browser.text("plan-cost") == money(api["cost"])


def test_tasks_and_alerts_pages_and_acknowledging(console, browser):
    from selenium.webdriver.common.by import By

    s = console.seeded
    tok = s.tokens["viewer"]
    tasks = console.api("/v1/tasks", tok).json()["tasks"]  # then the page: never older
    browser.visit("/tasks", "tasks")
    rows = browser.driver.find_elements(By.CSS_SELECTOR, "#task-list tr[data-task]")
    shown = {r.get_attribute("data-task"): r.get_attribute("data-state") for r in rows}
    assert {t["task_id"] for t in tasks} <= set(shown)
    finished = [t for t in tasks if t["state"] in ("completed", "failed", "cancelled")]
    assert finished and all(shown[t["task_id"]] == t["state"] for t in finished)
    browser.visit("/alerts", "alerts")
    (alert,) = console.api("/v1/alerts", tok, state="open").json()["alerts"]
    row = browser.driver.find_element(By.CSS_SELECTOR, f'tr[data-alert="{alert["alert_id"]}"]')
    assert row.find_element(By.CSS_SELECTOR, ".message").text.startswith(alert["message"])
    row.find_element(By.CSS_SELECTOR, "button.ack").click()
    browser.settle("/alerts (acknowledged)")
    assert "Acknowledged" in browser.text("flash")
    until(lambda: console.api("/v1/alerts", tok, state="open").json()["alerts"][0]
          ["acknowledged_by"] == "olga", 30, "acknowledged in the API")


def test_whatif_result_against_the_baseline(console, browser):
    from selenium.webdriver.common.by import By

    task = STATE["whatif"]
    browser.visit(f"/whatif?task={task}")
    until(lambda: browser.driver.find_elements(By.ID, "whatif-done")
          or "failed" in browser.text("whatif-result"), 120, "the what-if result")
    browser.settle("/whatif (done)", "whatif")
    result = browser.text("whatif-result")
    assert "failed" not in result.split("\n")[1], result
    tok = console.seeded.tokens["viewer"]
    listed = console.api("/v1/schedules", tok, days=1).json()["schedules"]
    mine = next(x for x in listed if x["schedule_id"] != console.seeded.schedule_id)
    STATE["whatif_schedule"] = mine["schedule_id"]
    assert browser.text("whatif-baseline") == money(mine["baseline_cost"])
    assert browser.text("whatif-cost") == money(mine["cost"])
    # a what-if is labelled as one and never offered for approval
    browser.visit(f"/schedule/{mine['schedule_id']}")
    assert "demand ×1.15" in browser.text("what-if-note")
    assert "what-if" in browser.text("why-not").lower()


def test_live_updates_announce_a_new_schedule_and_an_alert(console, browser):
    """A page left open announces, without a reload, a schedule proposed by an
    ``optimise`` task and an alert raised from a reading, and counts the open alerts."""
    from selenium.webdriver.common.by import By

    s = console.seeded
    tok = s.tokens["viewer"]
    browser.visit("/tasks")
    d = browser.driver
    until(lambda: d.execute_script("return document.body.dataset.liveReady"), 60,
          "the page's first poll of /console/live")
    known = {x["schedule_id"] for x in console.api("/v1/schedules", tok, days=2).json()
             ["schedules"]}
    before = console.api("/v1/alerts", tok, state="open").json()["alerts"]
    badge = d.find_element(By.ID, "alert-badge")
    assert badge.get_attribute("textContent") == str(len(before))
    # the what-if's result was announced as one (the banner follows from page to page
    # until dismissed), not as a schedule to review
    item = d.find_element(By.CSS_SELECTOR,
                          f'#live-banner li[data-news="schedule:{STATE["whatif_schedule"]}"]')
    assert "A what-if run finished" in item.text and "review" not in item.text
    d.find_element(By.ID, "live-dismiss").click()
    assert d.find_element(By.ID, "live-banner").get_attribute("hidden") is not None
    console.call(request_proposal(console.nc, s))
    console.call(raise_overflow_alert(console.nc, s))

    def new_alert():
        now_open = console.api("/v1/alerts", tok, state="open").json()["alerts"]
        fresh = [a for a in now_open if a["alert_id"] not in {b["alert_id"] for b in before}]
        return fresh[0] if fresh else None
    alert = until(new_alert, 90, "the overflow alert in the API")
    assert alert["severity"] == "critical"
    until(lambda: d.find_elements(By.CSS_SELECTOR,
                                  f'#live-banner li[data-news="alert:{alert["alert_id"]}"]'),
          60, "the alert announced on the open page")
    assert alert["message"] in browser.text("live-banner")
    until(lambda: badge.get_attribute("textContent") == str(len(before) + 1), 30,
          "the badge counting the new alert")

    def new_schedule():
        listed = console.api("/v1/schedules", tok, days=2).json()["schedules"]
        return next((x for x in listed if x["schedule_id"] not in known), None)
    proposed = until(new_schedule, 150, "the new proposal in the API")
    item = until(lambda: d.find_elements(
        By.CSS_SELECTOR, f'#live-banner li[data-news="schedule:{proposed["schedule_id"]}"]'),
        60, "the proposal announced on the open page")[0]
    link = item.find_element(By.TAG_NAME, "a").get_attribute("href")
    assert link.endswith(f"/schedule/{proposed['schedule_id']}")
    STATE["live_schedule"] = proposed["schedule_id"]
    # both stay until dismissed
    assert d.find_elements(By.CSS_SELECTOR,
                           f'#live-banner li[data-news="alert:{alert["alert_id"]}"]')
    browser.check_console("live updates")
    browser.screenshot("live-banner")
    d.find_element(By.ID, "live-dismiss").click()
    assert d.find_element(By.ID, "live-banner").get_attribute("hidden") is not None


def test_a_second_release_says_what_it_changed(console, browser):
    """The proposal of the live test overlaps release v1: approved, it becomes v2, and the
    releases list counts the pump-periods it changed, as the two plans in the API say."""
    from selenium.webdriver.common.by import By

    s = console.seeded
    tok = s.tokens["viewer"]
    new_id = STATE["live_schedule"]
    proposal = console.api(f"/v1/schedules/{new_id}", tok).json()
    assert proposal["verified"], ("the live test's proposal was not verified in EPANET "
                                  f"({proposal['status']}): it cannot be approved")
    browser.visit(f"/schedule/{new_id}")
    browser.driver.find_element(By.ID, "approve").click()
    browser.driver.switch_to.alert.accept()
    browser.settle("/schedule (approved: v2)")
    until(lambda: console.api(f"/v1/schedules/{new_id}", tok).json()["state"]
          == "released", 90, "the second release")
    new, old = (console.api(f"/v1/schedules/{x}", tok).json() for x in (new_id, s.schedule_id))
    assert (new["version"], old["version"]) == (2, 1)
    compared, changed = _changed_periods(new, old)
    assert compared > 0
    browser.visit(f"/schedule/{new_id}", "schedule-v2")
    row = browser.driver.find_element(By.CSS_SELECTOR, '#releases tr[data-version="2"]')
    assert f"{changed} of {compared} pump-periods (v1)" in row.text, row.text
    assert money(new["cost"]) in row.text and "olga" in row.text
    first = browser.driver.find_element(By.CSS_SELECTOR, '#releases tr[data-version="1"]')
    assert "first release" in first.text and money(old["cost"]) in first.text


def _changed_periods(new: dict, old: dict) -> tuple[int, int]:
    """(pump-periods of ``new`` at an instant ``old`` also plans, those whose speed
    differs), from the API's plans."""
    a0 = datetime.fromisoformat(new["start"].replace("Z", "+00:00"))
    b0 = datetime.fromisoformat(old["start"].replace("Z", "+00:00"))
    before = {p["pump"]: p["speeds"] for p in old["plan"]["pumps"]}
    compared = changed = 0
    for p in new["plan"]["pumps"]:
        for k, speed in enumerate(p["speeds"]):
            offset = (a0 + timedelta(seconds=k * new["period_s"]) - b0).total_seconds()
            j, rest = divmod(offset, old["period_s"])
            if p["pump"] in before and offset >= 0 and not rest and j < len(before[p["pump"]]):
                compared += 1
                changed += before[p["pump"]][int(j)] != speed
    return compared, changed


def test_configuration_history_and_an_admin_edit(console, browser):
    from selenium.webdriver.common.by import By

    s = console.seeded
    browser.visit("/config", "config")
    api = console.api("/v1/config/rules", s.tokens["viewer"]).json()
    row = browser.driver.find_element(By.CSS_SELECTOR, 'tr[data-kind="rules"] .version')
    assert row.text == str(api["version"])
    browser.visit("/config/rules")
    assert browser.driver.find_elements(By.ID, "needs-admin")  # olga may not edit
    # log out, log in as the administrator, change a bound, see the new version and diff
    browser.driver.find_element(By.ID, "logout").click()
    browser.settle("/login (logged out)")
    assert "/login" in browser.driver.current_url
    browser.visit("/")
    assert "/login" in browser.driver.current_url  # the session ended
    browser.login(s.tokens["ada-admin"])
    browser.visit("/config/rules")
    text = browser.driver.find_element(By.ID, "config-text")
    edited = text.get_attribute("value").replace("max_level_m: 3.9", "max_level_m: 3.8")
    browser.driver.execute_script("arguments[0].value = arguments[1]", text, edited)
    browser.driver.find_element(By.ID, "config-reason").send_keys("keep 10 cm of freeboard")
    browser.driver.find_element(By.ID, "config-save").click()
    browser.settle("/config/rules (saved)", "config-rules-diff")
    assert f"Saved as version {api['version'] + 1}" in browser.text("flash")
    after = console.api("/v1/config/rules", s.tokens["viewer"]).json()
    assert after["version"] == api["version"] + 1 and after["author"] == "ada-admin"
    assert after["document"]["tanks"]["T1"]["max_level_m"] == 3.8
    assert "+    max_level_m: 3.8" in browser.text("config-diff")


def test_tablet_layout(console, browser):
    browser.driver.set_window_size(*TABLET)
    try:
        browser.visit("/", "tablet-overview")
        browser.visit(f"/schedule/{console.seeded.schedule_id}", "tablet-schedule")
    finally:
        browser.driver.set_window_size(*DESKTOP)


def test_another_tenant_never_appears(console, browser):
    """Every page shown to L-Town's operators is free of the other tenant; the other
    tenant's operator sees its own sensor only and none of L-Town's schedules."""
    s = console.seeded
    shown = dict(browser.sources)
    assert len(shown) >= 12
    for page, source in shown.items():
        for foreign in (s.other, OTHER_NAME, OTHER_SENSOR):
            assert foreign not in source, f"{page} shows {foreign!r}"
    browser.login(s.tokens["other"])
    page = browser.visit("/", "other-tenant-overview")
    assert f'data-sensor="{OTHER_SENSOR}"' in page and 'data-sensor="T1"' not in page
    for path in ("/schedule", "/data", "/alerts", "/config"):
        source = browser.visit(path)
        assert s.tenant not in source and s.schedule_id not in source
    browser.visit(f"/schedule/{s.schedule_id}", wait_charts=False, refused=True)
    assert browser.text("error-title") == "Not found"
    with httpx.Client(base_url=console.url, cookies=browser.cookie()) as web:
        csrf = web.get("/").text.split('data-csrf="')[1].split('"')[0]
        r = web.post(f"/schedule/{s.schedule_id}/approve", data={"csrf": csrf})
        assert r.status_code == 404


def _h(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}
