"""The log a sysadmin reads at night: refused receipts, a device that goes and comes back."""

from __future__ import annotations

import json
import re
import time

from operator_helpers import onec, wait_for

from kktapp.owner import policy as owner


def log_lines(app_config) -> list[str]:
    with open(app_config["LOG_FILE"], encoding="utf-8") as fh:
        return fh.read().splitlines()


def test_refused_receipt_is_one_warning_with_field_and_reason(testapp, app_config):
    testapp.post("/kkt", onec("ТР-1", DocSumm="700.00"), content_type="application/x-www-form-urlencoded",
                 status=422)
    lines = [ln for ln in log_lines(app_config) if "ТР-1" in ln]
    assert len(lines) == 1
    line = lines[0]
    assert " WARNING kktapp.web.kkt1c: 1С: чек отклонён:" in line
    assert "поле=DocSumm" in line and "сумма документа не равна сумме позиций 756.00 ₽" in line
    assert "сумма=" in line  # the sum the service read, in rubles
    assert line.count("1С:") == 1
    assert not re.search(r"[A-Za-z]{4,}", line.split("kktapp.web.kkt1c:")[1].replace("DocSumm", "").replace("HTTP", ""))


def test_api_and_compat_refusals_are_one_warning_each(clients, app_config):
    clients.cashier.post_json("/api/v1/receipts", {"items": [], "payments": []}, status=422)
    body = json.dumps({"atol_device_data": {"atol_device_number": 1}, "comand": "CASH_INCOME", "data": -5})
    clients.cashier.post("/api/compat/atol-kkt-service", body.encode(), content_type="application/json", status=422)
    lines = [ln for ln in log_lines(app_config) if "отклонён" in ln]
    assert len(lines) == 2 and all(" WARNING " in ln for ln in lines), lines
    assert "API: запрос POST /api/v1/receipts отклонён: поле=items причина:" in lines[0]
    assert "compat: запрос POST /api/compat/atol-kkt-service отклонён: поле=data" in lines[1]


def test_device_down_logs_once_then_reminds_then_returns(testapp, emulator, app_config, monkeypatch):
    monkeypatch.setattr(owner, "DOWN_REMINDER", 2.5)
    service = testapp.app.extensions["kkt"]
    wait_for(lambda: service.snapshot(1).get("link") == "ok")
    emulator.power_off()
    wait_for(lambda: service.snapshot(1).get("link") == "down")
    time.sleep(4)  # several reconnect attempts (back-off up to 3 s) and one reminder
    emulator.power_on()
    wait_for(lambda: any("связь восстановлена" in ln for ln in log_lines(app_config)))
    lines = [ln for ln in log_lines(app_config) if "kktapp.owner" in ln and "ККТ 1" in ln]
    lost = [ln for ln in lines if "связь потеряна" in ln]
    reminders = [ln for ln in lines if "связи нет уже" in ln]
    back = [ln for ln in lines if "связь восстановлена" in ln]
    assert len(lost) == 1 and 1 <= len(reminders) <= 2 and len(back) == 1, lines
    assert "WARNING" in lost[0] and "ждут отправки: 0" in reminders[0]
    assert re.search(r"не было \d+ с", back[0])
    # Nothing else about the link while it was down, and no library English in our lines.
    between = lines[lines.index(lost[0]) + 1:lines.index(back[0])]
    assert all(ln in reminders for ln in between), between
    for line in lost + reminders + back:
        text = line.split("kktapp.owner:")[1]
        assert not re.search(r"Errno|refused|Connection|failed", text), line
