"""Limits of issue 11: body size, the SEGMENT store, the device queue."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import webtest
from fakes import FakeDevice, FakeDriver

from kktapp.domain import Payment, PaymentType, Position, Receipt, SettlementType, VatRate
from kktapp.errors import QueueFull, ResultCode
from kktapp.service import DeviceConfig, FiscalService
from kktapp.web import compat

FORM = "application/x-www-form-urlencoded;charset=utf-8"
COMPAT = "/api/compat/atol-kkt-service"


# --------------------------------------------------------------------------- body size


@pytest.mark.parametrize("path, content_type", [
    ("/kkt", FORM), ("/api/v1/receipts", "application/json"), (COMPAT, "application/json"),
])
def test_a_body_over_max_content_length_is_refused_unread(testapp: webtest.TestApp, path: str,
                                                          content_type: str) -> None:
    limit = testapp.app.config["MAX_CONTENT_LENGTH"]
    assert 1024 * 1024 <= limit <= 8 * 1024 * 1024
    res = testapp.post(path, params=b" " * (limit + 1), content_type=content_type, status=413)
    assert res.content_type == "application/json"
    data = res.json
    assert ("result_code" in data) or ("error" in data)


# --------------------------------------------------------------------------- SEGMENT store


def _segment(guid: str, num: int, count: int, text: str) -> bytes:
    return json.dumps({"atol_device_data": {"atol_device_number": 1}, "comand": "SEGMENT",
                       "data": {"segment_guid": guid, "segment_num": num, "segment_count": count,
                                "text": text}}).encode()


def test_segment_parts_belong_to_the_first_sender(clients: Any, api_app: Any) -> None:
    inner = base64.b64encode(json.dumps({"comand": "CASH_REGISTER_INF", "data": ""}).encode()).decode()
    half = len(inner) // 2
    res = clients.cashier.post(COMPAT, _segment("g-own", 1, 2, inner[:half]), content_type="application/json")
    assert res.json["error_code"] == 0
    # Another user may neither replace part 1 nor complete the set.
    for num, text in ((1, "AAAA"), (2, inner[half:])):
        res = clients.admin.post(COMPAT, _segment("g-own", num, 2, text), content_type="application/json",
                                 status=409)
        assert res.json["error_code"] == -ResultCode.CONFLICT
    res = clients.cashier.post(COMPAT, _segment("g-own", 2, 2, inner[half:]), content_type="application/json")
    assert res.json["error_code"] == 0 and res.json["response"]["CashRegisterNum"] == 1


def test_segment_store_limits_per_user_and_in_total(tmp_path: Any) -> None:
    store = compat.SegmentStore(str(tmp_path / "seg.sqlite3"))
    for i in range(4):
        assert store.add(f"a{i}", 1, 2, "x" * 100, ttl=600, owner="a", user_limit=400, total_limit=700) is None
    with pytest.raises(compat.CompatError) as err:
        store.add("a9", 1, 2, "x", ttl=600, owner="a", user_limit=400, total_limit=700)
    assert err.value.http_status == 503
    # Re-sending a stored part does not count it twice.
    assert store.add("a0", 1, 2, "y" * 100, ttl=600, owner="a", user_limit=400, total_limit=700) is None
    for i in range(3):
        assert store.add(f"b{i}", 1, 2, "x" * 100, ttl=600, owner="b", user_limit=400, total_limit=700) is None
    with pytest.raises(compat.CompatError):
        store.add("b9", 1, 2, "x" * 100, ttl=600, owner="b", user_limit=400, total_limit=700)
    assert store.pending() == 7


def test_segment_store_of_the_previous_version_gets_the_owner_column(tmp_path: Any) -> None:
    import sqlite3

    path = str(tmp_path / "old.sqlite3")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE segments (guid TEXT NOT NULL, num INTEGER NOT NULL, count INTEGER NOT NULL,"
                     " text TEXT NOT NULL, received REAL NOT NULL, PRIMARY KEY (guid, num))")
        conn.execute("INSERT INTO segments VALUES ('old', 1, 2, 'AB', 9e9)")
    store = compat.SegmentStore(path)
    assert store.add("old", 2, 2, "CD", ttl=1e12, owner="") == "ABCD"


# --------------------------------------------------------------------------- device queue


def test_a_full_device_queue_answers_503_with_retry_after(tmp_path: Any) -> None:
    device = FakeDevice()
    device.online = False  # nothing leaves the queue
    service = FiscalService(str(tmp_path / "j.sqlite3"), [DeviceConfig(1, "Касса", "fake://1")],
                            driver_factory=lambda cfg: FakeDriver(device), queue_limit=3)
    receipt = Receipt(type=SettlementType.SELL,
                      positions=(Position(name="Хлеб", price=100, quantity=1, amount=100, vat=VatRate.VAT22),),
                      payments=(Payment(PaymentType.CASH, 100),))
    try:
        for i in range(3):
            service.submit_receipt(receipt, key=f"k{i}", wait=0)
        with pytest.raises(QueueFull) as err:
            service.submit_receipt(receipt, key="k3", wait=0)
        assert err.value.http_status == 503 and err.value.headers["Retry-After"].isdigit()
        # A repeat of a queued document is still answered from the journal.
        assert service.submit_receipt(receipt, key="k1", wait=0).state == "queued"
    finally:
        service.stop()
        service.journal.close()


def test_the_queue_limit_reaches_1c_as_503_with_retry_after(app_config: dict, emulator: Any) -> None:
    from kktapp import create_app

    app_config["DEVICE_QUEUE_LIMIT"] = 0
    app = create_app(app_config)
    try:
        client = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
        body = json.dumps({"DocNumber": "Q-1", "DocDate": "06.10.2017", "DocSumm": 1,
                           "Goods": {"Position_1": {"Name": "Ч", "Price": 1, "Quantity": 1, "Tax": 22,
                                                    "PositionSumm": 1}}}).encode()
        res = client.post("/kkt", params=body, content_type=FORM, status=503)
        assert res.json["result_code"] == ResultCode.QUEUE_FULL
        assert res.headers["Retry-After"].isdigit()
        res = client.post("/api/v1/receipts", params=json.dumps(
            {"items": [{"name": "Ч", "price": 1, "tax": "vat22"}], "payments": [{"type": "cash", "amount": 1}]}
        ).encode(), content_type="application/json", status=503)
        assert res.json["error"]["code"] == ResultCode.QUEUE_FULL and res.headers["Retry-After"]
    finally:
        app.extensions["kkt"].stop()
        app.extensions["kkt"].journal.close()
