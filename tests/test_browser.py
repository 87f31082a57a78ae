"""The operator page and the status page in a real browser: Debian's chromium through chromium-driver.

The app is served over HTTP on a free loopback port, mounted at /kkt as under the seed's Apache
alias. Chromium runs headless with a fresh profile and no network features; the HTTP Basic login
is sent as a header through the DevTools protocol. Screenshots go to the test's temporary
directory, and also to $KKT_SCREENSHOT_DIR when set (to look at them).

Needs the Debian packages chromium and chromium-driver (``make test`` installs them); without
them the test is skipped, except under CI where that is a failure.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import shutil
import threading
from collections.abc import Iterator

import pytest
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROME_ARGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
    "--lang=ru-RU",
]

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    if os.environ.get("CI"):
        raise RuntimeError("chromium and chromium-driver are missing: make test installs them (APT_PACKAGES)")
    pytest.skip("chromium / chromium-driver not installed (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from conftest import API_USERS  # noqa: E402
from operator_helpers import onec, wait_for  # noqa: E402
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as ec  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture
def server(api_app) -> Iterator[str]:
    """The app on a free loopback port under /kkt; the base URL."""
    wsgi = DispatcherMiddleware(Response("not here", status=404), {"/kkt": api_app})
    httpd = make_server("127.0.0.1", 0, wsgi, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}/kkt"
    finally:
        httpd.shutdown()
        thread.join(10)


@pytest.fixture
def browser(tmp_path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.add_argument("--window-size=1280,1000")
    # The driver path is given, so Selenium Manager never looks for (or downloads) a driver.
    os.environ.setdefault("SE_OFFLINE", "true")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def login(driver, user: str | None) -> None:
    """Send (or stop sending) HTTP Basic credentials with every request of the browser."""
    headers = {}
    if user:
        token = base64.b64encode(f"{user}:{API_USERS[user][0]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": headers})


def screenshot(driver, tmp_path, name: str, width: int = 1280, full: bool = True) -> str:
    """A PNG of the whole page (the window grows to its height), or of the first screen only."""
    driver.set_window_size(width, 900)
    if full:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(height + 120, 600), 6000))
    path = str(tmp_path / f"{name}.png")
    driver.save_screenshot(path)
    target = os.environ.get("KKT_SCREENSHOT_DIR")
    if target:
        shutil.copy(path, os.path.join(target, f"{name}.png"))
    return path


def test_operator_and_status_pages_in_chromium(server, browser, clients, emulator, tmp_path):
    wait = WebDriverWait(browser, 30)
    post = {"content_type": "application/x-www-form-urlencoded"}
    assert clients.cashier.post("/kkt", onec("ТР00-001", "756.00"), **post).json["result_code"] == 0
    emulator.power_off()
    wait_for(lambda: clients.app.extensions["kkt"].snapshot(1).get("link") == "down")
    for number, rub in (("ТР00-002", "1950.72"), ("ТР00-003", "120.00")):
        assert clients.cashier.post("/kkt", onec(number, rub), status=202, **post).json["result_code"] == 1007

    # Status page, logged in: the device is down and the two waiting receipts are listed.
    login(browser, "admin")
    browser.get(f"{server}/")
    section = browser.find_element(By.ID, "device-1")
    assert section.find_element(By.CSS_SELECTOR, ".badge").text == "нет связи с ККТ"
    waiting = section.find_element(By.CSS_SELECTOR, "table.waiting").text
    assert "ТР00-002" in waiting and "1\u202f950,72 ₽" in waiting and "ТР00-003" in waiting
    assert "нет связи" in browser.find_element(By.ID, "summary").text
    screenshot(browser, tmp_path, "status-device-down")

    # Anonymous: no document numbers or money.
    login(browser, None)
    browser.get(f"{server}/")
    text = browser.find_element(By.TAG_NAME, "body").text
    assert "ТР00-002" not in text and "950,72" not in text and "Войти" in text
    screenshot(browser, tmp_path, "status-public")

    # Operator page: search, then cancel the found receipt (the browser's confirm is accepted).
    login(browser, "admin")
    browser.get(f"{server}/operator")
    assert "Найдено чеков: 3" in browser.find_element(By.ID, "found").text
    box = browser.find_element(By.NAME, "q")
    box.send_keys("тр00-003")
    browser.find_element(By.CSS_SELECTOR, "form.search button").click()
    wait.until(ec.text_to_be_present_in_element((By.ID, "found"), "Найдено чеков: 1"))
    rows = browser.find_elements(By.CSS_SELECTOR, "#receipt-list tbody tr")
    assert len(rows) == 1 and "ТР00-003" in rows[0].text
    rows[0].find_element(By.CSS_SELECTOR, "button[data-action=cancel]").click()
    wait.until(ec.alert_is_present())
    browser.switch_to.alert.accept()
    cancelled = f"Чек ТР00-003 от {dt.date.today():%d.%m.%Y} отменён"
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "p.alert"), cancelled))
    row = browser.find_element(By.CSS_SELECTOR, "#receipt-list tbody tr")
    assert "отменён" in row.text and not row.find_elements(By.CSS_SELECTOR, "button[data-action=cancel]")
    assert clients.app.extensions["kkt"].list_receipts(text="ТР00-003")[0][0].state == "failed"

    # The device comes back: the other queued receipt is fiscalised; then an X report by button.
    emulator.power_on()
    svc = clients.app.extensions["kkt"]
    wait_for(lambda: svc.list_receipts(text="ТР00-002")[0][0].state == "done")
    browser.get(f"{server}/operator")
    browser.find_element(By.CSS_SELECTOR, "#device-1 button[data-action=x-report]").click()
    wait.until(ec.text_to_be_present_in_element((By.CSS_SELECTOR, "p.alert"), "X-отчёт, касса № 1: выполнено"))
    assert [d for d in emulator.documents() if d["type"] == "receipt"][-1]["total"] == 195072
    screenshot(browser, tmp_path, "operator")
    screenshot(browser, tmp_path, "operator-phone", width=390, full=False)
    screenshot(browser, tmp_path, "operator-phone-full", width=390)

    # Everything settled: the status page turns green for both devices.
    wait_for(lambda: all(svc.snapshot(n).get("link") == "ok" for n in (1, 2)))
    browser.get(f"{server}/")
    badges = [b.get_attribute("class") for b in browser.find_elements(By.CSS_SELECTOR, "section .badge")]
    assert badges == ["badge ok", "badge ok"], badges
    screenshot(browser, tmp_path, "status-ok")
    screenshot(browser, tmp_path, "status-phone", width=390, full=False)
