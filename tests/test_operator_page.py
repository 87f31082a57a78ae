"""The operator page /operator and the status page /kkt (HTML), through WebTest.

Devices from conftest ``clients``: two emulators, HTTP Basic on (admin and cashier).
"""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest
from operator_helpers import onec, wait_for

from kktapp.errors import ResultCode
from kktapp.web import present, statuspage

API = "/api/v1"


def post_1c(client, number: str, status: int | str = "*", rub: str = "756.00"):
    return client.post("/kkt", onec(number, rub), content_type="application/x-www-form-urlencoded", status=status)


def device_off(clients, emulator) -> None:
    emulator.power_off()
    wait_for(lambda: clients.app.extensions["kkt"].snapshot(1).get("link") == "down")


# --------------------------------------------------------------------------- operator page


def test_operator_page_needs_admin(clients):
    res = clients.anon.get("/operator", status=401)
    assert res.headers["WWW-Authenticate"].startswith("Basic")
    assert "нужна авторизация" in res.text
    assert "недостаточно прав" in clients.cashier.get("/operator", status=403).text


def test_operator_lists_searches_and_cancels(clients, emulator):
    assert post_1c(clients.cashier, "ТР00-1", status=200).json["result_code"] == 0
    device_off(clients, emulator)
    post_1c(clients.cashier, "ТР00-2", status=202)
    post_1c(clients.cashier, "ТР00-3", status=202)

    page = clients.admin.get("/operator")
    assert page.headers["Cache-Control"] == "no-store" and page.headers["X-Frame-Options"] == "DENY"
    assert "Найдено чеков: 3" in page.text
    assert "756,00\u00a0₽" in page.text
    rows = page.html.select("#receipt-list tbody tr")
    assert [r["data-state"] for r in rows] == ["queued", "queued", "done"]
    # Only queued receipts have a cancel button.
    assert [bool(r.select("button[data-action=cancel]")) for r in rows] == [True, True, False]

    found = clients.admin.get("/operator", params={"q": "тр00-2"})
    assert "Найдено чеков: 1" in found.text and "ТР00-2" in found.text
    assert "Найдено чеков: 1" in clients.admin.get("/operator", params={"state": "done"}).text

    form = found.forms[len(found.forms) - 1]  # the cancel form of the one row
    assert form.action.endswith("/cancel?q=%D1%82%D1%8000-2")
    done = form.submit().follow()
    assert f"Чек ТР00-2 от {dt.date.today():%d.%m.%Y} отменён" in done.text
    assert "отменён" in done.html.select("#receipt-list tbody tr")[0].text
    assert clients.app.extensions["kkt"].list_receipts(states=("queued",))[1] == 1
    # 1C asking again for the cancelled document hears so.
    answer = post_1c(clients.cashier, "ТР00-2", status=409).json
    assert answer["result_code"] == ResultCode.CANCELLED


def test_a_document_number_cannot_put_script_into_the_page(clients, emulator):
    # The key is the caller's text: it goes into the confirm dialog as data, never as JavaScript.
    device_off(clients, emulator)
    evil = "Q');document.title='pwned';('"
    post_1c(clients.cashier, evil, status=202)
    page = clients.admin.get("/operator")
    forms = page.html.select("form[onsubmit]")
    assert forms and {f["onsubmit"] for f in forms} == {"return confirm(this.dataset.confirm)"}
    assert any(evil in f["data-confirm"] for f in forms)


def test_operator_cancel_refused_for_a_receipt_being_sent(clients, emulator):
    emulator.set_latency(0.4)
    job = clients.cashier.post_json(f"{API}/receipts?wait=0", {
        "items": [{"name": "Чай", "price": 100, "tax": "vat22"}], "payments": [{"type": "cash", "amount": 100}],
    }, status=202).json
    page = clients.admin.get("/operator")
    svc = clients.app.extensions["kkt"]
    wait_for(lambda: svc.get_job(job["id"]).state == "sending")
    res = clients.admin.post(f"/operator/receipts/{job['id']}/cancel", {"csrf": page.forms[0]["csrf"].value},
                             status=409)
    assert "Чек не отменён: чек уже отправляется в ККТ" in res.text
    emulator.set_latency(0)


def test_operator_forms_refuse_cross_site_requests(clients, emulator):
    device_off(clients, emulator)
    post_1c(clients.cashier, "ТР00-5", status=202)
    page = clients.admin.get("/operator")
    job_id = page.html.select("#receipt-list tbody tr")[0]["data-id"]
    url = f"/operator/receipts/{job_id}/cancel"
    # No token, a wrong token, a foreign Origin, a cross-site fetch: all refused, nothing cancelled.
    assert "запрос отклонён" in clients.admin.post(url, {}, status=403).text
    clients.admin.post(url, {"csrf": "x" * 43}, status=403)
    token = page.forms[0]["csrf"].value
    clients.admin.post(url, {"csrf": token}, headers={"Origin": "https://evil.example"}, status=403)
    clients.admin.post(url, {"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"}, status=403)
    clients.admin.post(f"{url}", {"csrf": token}, headers={"Origin": "http://localhost:80"}, status=303)
    assert clients.app.extensions["kkt"].get_job(job_id).state == "failed"


def test_operator_device_buttons(clients, emulator):
    page = clients.admin.get("/operator")
    buttons = [b["data-action"] for b in page.html.select("#device-1 button")]
    assert buttons == ["x-report", "z-report", "reprint", "test-print"]
    form = next(f for f in page.forms.values() if f.action.endswith("/devices/1/x-report"))
    res = form.submit().follow()
    assert "X-отчёт, касса № 1: выполнено" in res.text
    form = next(f for f in res.forms.values() if f.action.endswith("/devices/2/test-print"))
    assert "Печать текста, касса № 2: выполнено" in form.submit().follow().text
    form = next(f for f in res.forms.values() if f.action.endswith("/devices/1/reprint"))
    assert "касса № 1" in form.submit().follow().text
    assert post_1c(clients.cashier, "ТР00-7", status=200).json["result_code"] == 0
    form = next(f for f in res.forms.values() if f.action.endswith("/devices/1/z-report"))
    assert "Z-отчёт (закрытие смены), касса № 1: выполнено" in form.submit().follow().text
    assert emulator.shift_state() == "closed"
    # A report on a device that is off says so instead of waiting.
    device_off(clients, emulator)
    form = next(f for f in res.forms.values() if f.action.endswith("/devices/1/x-report"))
    assert "X-отчёт, касса № 1: не выполнено — нет связи" in form.submit().follow().text


# --------------------------------------------------------------------------- status page


def test_status_page_hides_money_and_numbers_from_anonymous(clients, emulator):
    answer = post_1c(clients.cashier, "ТР00-11", status=200).json
    device_off(clients, emulator)
    post_1c(clients.cashier, "ТР00-12", status=202)
    anon = clients.anon.get("/kkt").text
    assert "ТР00-12" not in anon and "756,00" not in anon and answer["fiscal_sign"] not in anon
    assert "Войти, чтобы увидеть" in anon and "в очереди" in anon
    data = clients.anon.get("/kkt", headers={"Accept": "application/json"}).json
    assert data["full"] is False
    text = json.dumps(data, ensure_ascii=False)
    assert answer["fiscal_sign"] not in text and "ТР00-12" not in text and "last_document" not in text
    # ?login=1 asks for the login; a logged-in viewer sees everything.
    clients.anon.get("/kkt?login=1", status=401)
    full = clients.cashier.get("/kkt").text
    assert "ТР00-12" in full and "756,00\u00a0₽" in full and answer["fiscal_sign"] in full
    assert clients.cashier.get("/kkt", headers={"Accept": "application/json"}).json["full"] is True


def test_status_page_fully_public_when_configured(api_config, request):
    api_config["STATUS_PAGE_PUBLIC"] = True
    clients = request.getfixturevalue("clients")
    assert clients.anon.get("/kkt", headers={"Accept": "application/json"}).json["full"] is True


def test_status_page_waiting_receipts_and_warnings(clients, emulator):
    post_1c(clients.cashier, "ТР00-20", status=200)
    device_off(clients, emulator)
    post_1c(clients.cashier, "ТР00-21", status=202, rub="1950.72")
    page = clients.cashier.get("/kkt")
    section = page.html.select_one("#device-1")
    badge = section.select_one(".badge")
    assert "bad" in badge["class"] and badge.text == "нет связи с ККТ"
    row = section.select_one("table.waiting tbody tr")
    cells = {td["data-label"]: td.text for td in row.select("td")}
    assert cells["Документ"] == f"ТР00-21 от {dt.date.today():%d.%m.%Y}" and cells["Сумма"] == "1\u202f950,72\u00a0₽"
    assert cells["Состояние"] == "в очереди" and re.fullmatch(r"\d+ с", cells["Ждёт"])
    assert "нет связи" in cells["Причина"]
    alerts = [a.text for a in page.html.select("#summary .alert")]
    assert any("Касса № 1" in a and "нет связи" in a for a in alerts)
    # The other device is fine and says so in green.
    assert "ok" in page.html.select_one("#device-2 .badge")["class"]
    # Read time: real, with its zone and age, and marked stale once the device is gone.
    rows = {tr.th.text: tr.td for tr in section.select("table.kv tr")}
    assert re.search(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d \S+ \(\d+ (с|мин) назад\)", rows["Данные прочитаны"].text)
    assert rows["Часы ККТ при чтении"].text != "—" and rows["Часы сервера при чтении"].text != "—"
    assert "00:00:00" not in rows["Действует до"].text and re.fullmatch(r"\d\d\.\d\d\.\d{4}", rows["Действует до"].text)


def test_status_page_all_green(clients):
    wait_for(lambda: clients.app.extensions["kkt"].snapshot(2).get("link") == "ok")
    wait_for(lambda: clients.app.extensions["kkt"].snapshot(1).get("link") == "ok")
    page = clients.cashier.get("/kkt")
    assert page.html.select_one("#summary")["class"] == ["alert", "ok"]
    assert [b["class"] for b in page.html.select("section .badge")] == [["badge", "ok"], ["badge", "ok"]]


# --------------------------------------------------------------------------- view helpers


def test_money_dates_and_times_as_people_write_them():
    assert present.rub(75600) == "756,00\u00a0₽"
    assert present.rub(195072) == "1\u202f950,72\u00a0₽"
    assert present.rub(123456789) == "1\u202f234\u202f567,89\u00a0₽"
    assert present.rub(None) == "—"
    assert present.date("2027-05-01") == "01.05.2027"
    assert present.date("2027-05-01T00:00:00") == "01.05.2027"
    assert present.device_time("2026-03-01T09:00:00") == "01.03.2026 09:00"
    assert present.device_time("2026-03-01T09:00:05") == "01.03.2026 09:00:05"
    msk = dt.timezone(dt.timedelta(hours=3))
    text = present.server_time(dt.datetime(2026, 3, 1, 9, 0, tzinfo=msk))
    assert re.fullmatch(r"\d\d\.\d\d\.2026 \d\d:00:00 \S+", text)


def test_device_view_of_a_full_snapshot():
    """The page's rows from a snapshot with every part filled (as the service reports it)."""
    now = dt.datetime(2026, 3, 2, 12, 0).astimezone()
    read = (now - dt.timedelta(seconds=4)).isoformat()
    snap = {
        "device": 1, "name": "Касса сайта", "link": "ok", "link_error": None, "read_at": read,
        "info": {"model_name": "АТОЛ 55Ф", "serial": "00106900000001", "firmware": "5.17.0"},
        "status": {"paper_present": False, "cover_open": False, "datetime": "2026-03-02T12:05:00"},
        "shift": {"state": "expired", "number": 7, "opened_at": "2026-03-01T09:00:00",
                  "expires_at": "2026-03-02T09:00:00", "receipts": 12},
        "fn": {"fn_number": "9999078900001234", "last_fd_number": 140, "unsent_count": 3,
               "first_unsent_at": "2026-02-20T10:00:00", "valid_until": "2027-05-01"},
        "last_document": {"fd_number": 140, "result": {"datetime": "2026-03-02T11:00:00", "total": 195072,
                                                       "receipt_number": 12, "fiscal_sign": "1234567890"}},
        "queue": {"queued": 2}, "unsettled": [{"key": "ТР00-9", "state": "unknown", "reason": "связь прервалась"}],
    }
    view = statuspage.device_view(snap, now, status_refresh=10, full=True)
    rows = {label: (value, tone) for group in view["groups"] for label, value, tone in group["rows"]}
    assert view["title"] == "Касса № 1 — Касса сайта"
    assert view["badge"] == ("bad", "есть проблемы")
    codes = [p.code for p in view["problems"]]
    assert codes[:2] == ["unsettled", "no_paper"] and {"shift_over_24h", "ofd_backlog"} <= set(codes)
    assert rows["Бумага"] == ("нет бумаги", "bad")
    assert rows["Открыта (по часам ККТ)"][0] == "01.03.2026 09:00"
    assert "24 часов" in rows["Состояние"][0] and rows["Состояние"][1] == "warn"
    assert rows["Не отправлено в ОФД"] == ("3", "bad")
    assert rows["Действует до"][0] == "01.05.2027"
    assert rows["Сумма"][0] == "1\u202f950,72\u00a0₽"
    assert rows["Фискальный признак"][0] == "1234567890"
    assert rows["Расхождение часов"] == ("часы ККТ спешат на 5 мин", "warn")
    assert rows["Данные прочитаны"][0].endswith("(4 с назад)")
    public = statuspage.device_view(statuspage.redact(snap), now, status_refresh=10, full=False)
    text = json.dumps(public["groups"], ensure_ascii=False)
    assert "1234567890" not in text and "195072" not in text and "Последний документ" not in text
    assert statuspage.redact(snap)["unsettled"] == [{"state": "unknown", "reason": "связь прервалась"}]


@pytest.mark.parametrize("age, marked", [(5, False), (600, True)])
def test_device_view_marks_stale_data(age, marked):
    now = dt.datetime.now().astimezone()
    snap = {"device": 1, "link": "ok", "read_at": (now - dt.timedelta(seconds=age)).isoformat()}
    view = statuspage.device_view(snap, now, status_refresh=10, full=False)
    value, tone = next((v, t) for label, v, t in view["groups"][0]["rows"] if label == "Данные прочитаны")
    assert ("данные устарели" in value) is marked and (tone == "bad") is marked


def test_pages_also_under_kkt_as_the_shipped_apache_config_passes_them(clients):
    """apache/kkt.conf hands /kkt/... to the app with the full path: /kkt/operator, /kkt/healthz, /kkt/metrics."""
    page = clients.admin.get("/kkt/operator")
    actions = [f.action for f in page.forms.values() if f.method.lower() == "post"]
    assert actions and all(a.startswith("/kkt/operator/") for a in actions)
    res = next(f for f in page.forms.values() if f.action.endswith("/devices/2/x-report")).submit()
    assert res.status_int == 303 and res.headers["Location"].startswith("/kkt/operator?done=")
    assert clients.cashier.get("/kkt").html.find("a", string="Страница оператора")["href"] == "/kkt/operator"
    assert clients.anon.get("/kkt/healthz", status="*").json["status"] in ("ok", "problem")
    assert "kkt_device_up" in clients.cashier.get("/kkt/metrics").text


def test_status_page_lists_an_unsettled_receipt(clients, emulator):
    from fakes import make_receipt

    from kktapp.journal import receipt_to_json

    device_off(clients, emulator)
    journal = clients.app.extensions["kkt"].journal
    job, _ = journal.accept(device=1, kind="receipt", key="ТР00-31", fingerprint="f", source="1c",
                            payload={"receipt": receipt_to_json(make_receipt(price=12345))})
    journal.mark_sending(job.id, 7)
    journal.mark_unknown(job.id, "связь прервалась посреди чека")
    page = clients.cashier.get("/kkt")
    row = page.html.select_one("#device-1 table.waiting tbody tr")
    cells = {td["data-label"]: td for td in row.select("td")}
    assert cells["Документ"].text == "ТР00-31" and cells["Сумма"].text == "123,45\u00a0₽"
    assert cells["Состояние"].text == "результат выясняется" and "text-bad" in cells["Состояние"]["class"]
    assert cells["Причина"].text == "связь прервалась посреди чека"
    alerts = " ".join(a.text for a in page.html.select("#device-1 .alert"))
    assert "неподтверждённых чеков: 1" in alerts


# --------------------------------------------------------------------------- settle an unknown receipt by hand


def unknown_1c_receipt(clients, emulator, number: str) -> str:
    """A 1C receipt whose outcome the device could not tell (the device is off, so the owner
    leaves it alone), and a second one queued behind it; the unknown job's id."""
    device_off(clients, emulator)
    job_id = post_1c(clients.cashier, number, status=202).json["job_id"]
    journal = clients.app.extensions["kkt"].journal
    journal.mark_sending(job_id, 7)
    journal.mark_unknown(job_id, "в ФН после ФД 7 чек с другой суммой: решает оператор")
    held = post_1c(clients.cashier, number + "-за-ним", status=202).json
    assert held["state"] == "queued"
    return job_id


def settle_form(page, job_id: str, verdict: str):
    for form in page.forms.values():
        if f"/receipts/{job_id}/settle" in form.action and form["verdict"].value == verdict:
            return form
    raise AssertionError(f"no {verdict} form for {job_id}")


def receipts_named(emulator, text: str) -> list[dict]:
    return [d for d in emulator.documents() if d["type"] == "receipt" and d["items"][0]["name"] == text]


def test_settle_buttons_only_for_unknown_receipts(clients, emulator):
    assert post_1c(clients.cashier, "ТР00-40", status=200).json["result_code"] == 0
    job_id = unknown_1c_receipt(clients, emulator, "ТР00-41")
    rows = clients.admin.get("/operator").html.select("#receipt-list tbody tr")
    assert [r["data-state"] for r in rows] == ["queued", "unknown", "done"]
    assert [bool(r.select("button[data-action=settle-fiscalised]")) for r in rows] == [False, True, False]
    assert [bool(r.select("button[data-action=settle-not-fiscalised]")) for r in rows] == [False, True, False]
    assert rows[1]["data-id"] == job_id and rows[1].select_one("input[name=fd]") is not None


def test_settled_as_fiscalised_answers_1c_with_the_fd_and_frees_the_queue(clients, emulator):
    svc = clients.app.extensions["kkt"]
    job_id = unknown_1c_receipt(clients, emulator, "ТР00-42")
    form = settle_form(clients.admin.get("/operator"), job_id, "fiscalised")
    form["fd"] = "4321"
    form["fp"] = "3512874106"
    page = form.submit().follow()
    assert "записан как пробитый, ФД 4321" in page.text
    job = svc.get_job(job_id)
    assert job.state == "done" and job.result["settled_by_hand"]["who"] == "admin"
    assert job.result["settled_by_hand"]["fiscal_document_number"] == 4321
    assert not svc.unsettled(1)
    emulator.power_on()
    # The receipt behind it prints; the settled one is not sent.
    wait_for(lambda: receipts_named(emulator, "Кофе в зёрнах, 1 кг"))
    wait_for(lambda: svc.list_receipts(states=("queued",))[1] == 0)
    assert len(receipts_named(emulator, "Кофе в зёрнах, 1 кг")) == 1
    again = post_1c(clients.cashier, "ТР00-42", status=200).json
    assert again["result_code"] == 0 and again["fiscal_document_number"] == 4321
    assert again["fiscal_sign"] == "3512874106" and again["check_number"] == 0
    assert len(receipts_named(emulator, "Кофе в зёрнах, 1 кг")) == 1


def test_settled_as_not_fiscalised_frees_the_key_and_the_queue(clients, emulator):
    svc = clients.app.extensions["kkt"]
    job_id = unknown_1c_receipt(clients, emulator, "ТР00-43")
    page = settle_form(clients.admin.get("/operator"), job_id, "not-fiscalised").submit().follow()
    assert "записан как не пробитый" in page.text
    job = svc.get_job(job_id)
    assert job.state == "failed" and job.error["code"] == ResultCode.SETTLED_NOT_FISCALISED
    assert job.error["message"] == "снят оператором: документ не пробит"
    assert not svc.unsettled(1)
    emulator.power_on()
    wait_for(lambda: svc.list_receipts(states=("queued",))[1] == 0)
    assert len(receipts_named(emulator, "Кофе в зёрнах, 1 кг")) == 1  # the one behind it
    # The key is free: the same document is a new receipt.
    again = post_1c(clients.cashier, "ТР00-43", status=200).json
    assert again["result_code"] == 0 and again["job_id"] != job_id
    assert len(receipts_named(emulator, "Кофе в зёрнах, 1 кг")) == 2


def test_a_receipt_settled_by_hand_cannot_be_settled_again(clients, emulator):
    job_id = unknown_1c_receipt(clients, emulator, "ТР00-44")
    page = clients.admin.get("/operator")
    form = settle_form(page, job_id, "fiscalised")
    form["fd"] = "12"
    form.submit().follow()
    res = settle_form(page, job_id, "not-fiscalised").submit(status=409)
    assert "Результат не установлен: результат уже установлен: документ пробит" in res.text
    assert clients.app.extensions["kkt"].get_job(job_id).state == "done"


def test_settle_refused_without_the_token_and_without_an_fd(clients, emulator):
    job_id = unknown_1c_receipt(clients, emulator, "ТР00-45")
    page = clients.admin.get("/operator")
    res = clients.admin.post(f"/operator/receipts/{job_id}/settle", {"verdict": "not-fiscalised"}, status=403)
    assert "запрос отклонён" in res.text
    res = settle_form(page, job_id, "fiscalised").submit(status=422)
    assert "fiscal_document_number" in res.text
    assert clients.app.extensions["kkt"].get_job(job_id).state == "unknown"
