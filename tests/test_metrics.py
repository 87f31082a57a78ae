"""GET /healthz and GET /metrics against the emulator, and the health rules on crafted snapshots."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time

import pytest
import webtest
from prometheus_client.parser import text_string_to_metric_families

from kktapp import health
from kktapp.journal import Journal

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def onec(number: str, amount: int = 756) -> bytes:
    return json.dumps({
        "DocNumber": number, "DocDate": dt.date.today().strftime("%d.%m.%Y"), "DocSumm": amount,
        "Goods": {"Position_1": {"Name": "Кофе", "Price": amount, "Quantity": 1, "Tax": 22, "PositionSumm": amount}},
    }, ensure_ascii=False).encode()


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def healthy(testapp) -> bool:
    return testapp.get("/healthz", status="*").status_int == 200


# --------------------------------------------------------------------------- /healthz


def test_healthz_ok_then_503_when_the_emulator_stops_then_ok_again(testapp, emulator):
    wait_for(lambda: healthy(testapp))
    res = testapp.get("/healthz", status=200)
    body = res.json
    assert body["status"] == "ok" and body["problems"] == []
    assert body["devices"][0]["device"] == 1 and body["devices"][0]["ok"] is True
    assert res.headers["Content-Type"].startswith("application/json")
    # No secrets: neither the device address nor its port.
    assert "socket://" not in res.text and str(emulator.port) not in res.text

    emulator.stop()
    wait_for(lambda: not healthy(testapp))
    body = testapp.get("/healthz", status=503).json
    assert body["status"] == "problem"
    assert [(p["device"], p["problem"]) for p in body["problems"]] == [(1, "link_down")]
    assert body["problems"][0]["message"] == "нет связи с ККТ"
    assert str(emulator.port) not in json.dumps(body)


def test_healthz_lists_an_unsettled_receipt(app, testapp, emulator):
    wait_for(lambda: healthy(testapp))
    emulator.power_off()
    journal: Journal = app.extensions["kkt"].journal
    job, _ = journal.accept(device=1, kind="receipt", key="ТР-1", fingerprint="f", payload={})
    journal.mark_sending(job.id, 1)
    journal.mark_unknown(job.id, "связь прервалась")
    wait_for(lambda: not healthy(testapp))
    codes = {p["problem"] for p in testapp.get("/healthz", status=503).json["problems"]}
    assert "unsettled" in codes


def test_healthz_needs_no_login(api_app):
    res = webtest.TestApp(api_app, extra_environ={"REMOTE_ADDR": "192.0.2.10"}).get("/healthz", status="*")
    assert res.status_int in (200, 503) and "problems" in res.json


# --------------------------------------------------------------------------- /metrics


def test_metrics_count_a_receipt(app, testapp, emulator):
    before = samples(testapp.get("/metrics").text)
    assert ("kkt_receipts_total", (("device", "1"), ("result", "done"))) not in before
    answer = testapp.post("/kkt", onec("ТР00-1"), content_type="application/x-www-form-urlencoded").json
    assert answer["result_code"] == 0
    wait_for(lambda: healthy(testapp))
    res = testapp.get("/metrics")
    assert res.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    got = samples(res.text)
    dev = (("device", "1"),)
    assert got[("kkt_receipts_total", (("device", "1"), ("result", "done")))] == 1
    assert got[("kkt_receipt_duration_seconds_count", dev)] == 1
    assert got[("kkt_receipt_duration_seconds_bucket", (("device", "1"), ("le", "+Inf")))] == 1
    assert 0 < got[("kkt_receipt_duration_seconds_sum", dev)] < 20
    assert got[("kkt_queue_length", dev)] == 0
    assert got[("kkt_unsettled_receipts", dev)] == 0
    assert got[("kkt_device_up", dev)] == 1
    assert 0 <= got[("kkt_shift_age_seconds", dev)] < 3600  # the service opened the shift for this receipt
    assert got[("kkt_fn_days_left", dev)] > 30
    assert got[("kkt_ofd_unsent_documents", dev)] >= 0
    assert ("kkt_ofd_oldest_unsent_age_seconds", dev) in got
    # A refused receipt counts as failed.
    emulator.paper_out()
    testapp.post("/kkt", onec("ТР00-2"), content_type="application/x-www-form-urlencoded", status=502)
    got = samples(testapp.get("/metrics").text)
    assert got[("kkt_receipts_total", (("device", "1"), ("result", "failed")))] == 1
    assert got[("kkt_receipts_total", (("device", "1"), ("result", "done")))] == 1


def test_metrics_device_down_and_queue(app, testapp, emulator):
    emulator.power_off()
    wait_for(lambda: app.extensions["kkt"].snapshot(1).get("link") == "down")
    testapp.post("/kkt", onec("ТР00-9"), content_type="application/x-www-form-urlencoded", status=202)
    got = samples(testapp.get("/metrics").text)
    assert got[("kkt_device_up", (("device", "1"),))] == 0
    assert got[("kkt_queue_length", (("device", "1"),))] == 1


def test_metrics_are_the_same_in_another_process_and_survive_pruning(app, testapp, emulator, app_config):
    for n in range(3):
        assert testapp.post("/kkt", onec(f"ТР00-{n}"), content_type="application/x-www-form-urlencoded").json[
            "result_code"] == 0
    mine = samples(testapp.get("/metrics").text)
    # Another process (as another gunicorn or mod_wsgi worker would be) reads the same journal.
    script = (
        "import sys; from kktapp.service import FiscalService, DeviceConfig; from kktapp.metrics import render;"
        "svc = FiscalService(sys.argv[1], [DeviceConfig(1, 'Касса 1', sys.argv[2])]);"
        "sys.stdout.write(render(svc).decode()); svc.stop()"
    )
    out = subprocess.run([sys.executable, "-c", script, app_config["JOURNAL_PATH"], emulator.url], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    theirs = samples(out)
    key = ("kkt_receipts_total", (("device", "1"), ("result", "done")))
    assert mine[key] == theirs[key] == 3
    hist = ("kkt_receipt_duration_seconds_count", (("device", "1"),))
    assert mine[hist] == theirs[hist] == 3
    # Pruning old receipts keeps the counters where they were (Prometheus counters never go down).
    journal: Journal = app.extensions["kkt"].journal
    assert journal.prune(days=-1) >= 3
    after = samples(testapp.get("/metrics").text)
    assert after[key] == 3 and after[hist] == 3


def test_metrics_login_from_other_addresses(api_app):
    from conftest import ApiClients

    clients = ApiClients(api_app)
    clients.anon.get("/metrics", status=401)
    assert "kkt_device_up" in clients.cashier.get("/metrics").text
    local = webtest.TestApp(api_app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
    assert "kkt_receipts_total" in local.get("/metrics").text or "kkt_queue_length" in local.get("/metrics").text


# --------------------------------------------------------------------------- health rules


NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=3)))


def snap(**changes) -> dict:
    base = {
        "device": 1, "link": "ok", "read_at": (NOW - dt.timedelta(seconds=5)).isoformat(),
        "status": {"datetime": "2026-11-30T12:00:00", "paper_present": True},
        "shift": {"state": "open", "opened_at": "2026-11-30T09:00:00"},
        "fn": {"valid_until": "2027-11-30", "unsent_count": 0, "first_unsent_at": None, "warnings": 0},
        "unsettled": [], "queue": {"queued": 0},
    }
    base.update(changes)
    return base


@pytest.mark.parametrize("changes, code, critical", [
    ({"link": "down"}, "link_down", True),
    ({"read_at": None, "link": "unknown"}, "no_data", True),
    ({"read_at": (NOW - dt.timedelta(minutes=10)).isoformat()}, "stale", True),
    ({"unsettled": [{"state": "unknown", "since": NOW.isoformat()}]}, "unsettled", True),
    ({"status": {"datetime": "2026-11-30T12:00:00", "paper_present": False}}, "no_paper", True),
    ({"status": {"datetime": "2026-11-30T12:00:00", "paper_present": True, "paper_near_end": True}},
     "paper_near_end", False),
    ({"shift": {"state": "open", "opened_at": "2026-11-29T10:00:00"}}, "shift_over_24h", False),
    ({"shift": {"state": "expired", "opened_at": "2026-11-29T10:00:00"}}, "shift_over_24h", False),
    ({"fn": {"valid_until": "2026-12-20", "unsent_count": 0}}, "fn_expiring", False),
    ({"fn": {"valid_until": "2026-11-01", "unsent_count": 0}}, "fn_expiring", True),
    ({"fn": {"valid_until": "2027-11-30", "unsent_count": 4, "first_unsent_at": "2026-11-28T10:00:00"}},
     "ofd_backlog", False),
    ({"fn": {"valid_until": "2027-11-30", "unsent_count": 4, "first_unsent_at": "2026-11-02T10:00:00"}},
     "ofd_backlog", True),
])
def test_health_rules(changes, code, critical):
    found = health.problems(snap(**changes), NOW, status_refresh=10)
    assert [(p.code, p.critical) for p in found] == [(code, critical)], found
    assert all(p.text for p in found)


def test_health_nothing_wrong():
    assert health.problems(snap(), NOW, status_refresh=10) == []
    # A receipt being sent right now is not unsettled; one stuck in sending is.
    assert health.problems(snap(unsettled=[{"state": "sending", "since": NOW.isoformat()}]), NOW, 10) == []
    old = (NOW - dt.timedelta(minutes=5)).isoformat()
    assert [p.code for p in health.problems(snap(unsettled=[{"state": "sending", "since": old}]), NOW, 10)] == [
        "unsettled"]


def test_shift_age_uses_the_device_clock():
    # The device clock runs 2 hours ahead of the server: the shift is older by its clock.
    s = snap(status={"datetime": "2026-11-30T14:00:00", "paper_present": True})
    s["read_at"] = NOW.isoformat()
    assert health.shift_age(s, NOW) == dt.timedelta(hours=5)
