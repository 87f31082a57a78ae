"""The JSON API /api/v1 against two emulated devices, with HTTP Basic on (conftest ``clients``)."""

from __future__ import annotations

import threading
import time

import pytest
import webtest
from fakes import cash_records

API = "/api/v1"


def receipt(**changes) -> dict:
    """A small valid sale; ``changes`` replace top-level fields."""
    body = {
        "items": [{"name": "Чай чёрный", "price": "250.00", "quantity": 2, "tax": "vat22"}],
        "payments": [{"type": "electronic", "amount": 500}],
    }
    body.update(changes)
    return body


def receipts_of(emu) -> list[dict]:
    return [d for d in emu.documents() if d["type"] == "receipt"]


def error_of(res) -> dict:
    assert set(res.json) == {"error"}
    err = res.json["error"]
    assert isinstance(err["code"], int) and err["message"]
    return err


# --------------------------------------------------------------------------- devices


def test_devices_list(clients):
    res = clients.cashier.get(f"{API}/devices")
    devices = res.json["devices"]
    assert [(d["number"], d["name"]) for d in devices] == [(1, "Касса зала"), (2, "Касса сайта")]
    assert all("link" in d["snapshot"] for d in devices)


@pytest.mark.parametrize("device, serial", [(1, "00106201273705"), (2, "00106201279999")])
def test_device_status_fresh_from_each_device(device, serial, clients, emulator, emulator2):
    (emulator if device == 1 else emulator2).set_unsent(3)
    clients.cashier.post_json(f"{API}/devices/{device}/cash-in", {"amount": "12.50"})
    st = clients.cashier.get(f"{API}/devices/{device}/status").json
    assert st["device"] == device
    assert st["serial"] == serial  # all 14 digits (register 22), not 3F's last 8
    assert st["datetime"] and st["fiscal"] is True and st["paper_present"] is True
    assert st["shift"]["open"] is True and st["shift"]["state"] == "open" and st["shift"]["expired"] is False
    assert st["shift"]["number"] >= 1 and st["shift"]["expires_at"]
    assert st["totals"]["cash_in_drawer"] == 1250
    assert st["fn"]["unsent_count"] == 3 and st["fn"]["first_unsent_number"] >= 1
    assert st["fn"]["valid_until"] and st["fn"]["number"]


def test_device_status_expired_shift(clients, emulator):
    clients.cashier.post(f"{API}/devices/1/shift/open")
    emulator.advance_clock(25)
    st = clients.cashier.get(f"{API}/devices/1/status").json
    assert st["shift"]["expired"] is True and st["shift"]["state"] == "expired"


def test_device_snapshot(clients):
    res = clients.cashier.get(f"{API}/devices/2/snapshot")
    assert res.json["device"] == 2 and "queue" in res.json["snapshot"]


@pytest.mark.parametrize(
    "method, path",
    [("get", "/devices/9/status"), ("get", "/devices/9/snapshot"), ("post", "/devices/9/shift/open"),
     ("post", "/devices/9/reprint-last")],
)
def test_unknown_device_404(method, path, clients):
    res = getattr(clients.admin, method)(API + path, status=404)
    assert error_of(res)["code"] == 1012


# --------------------------------------------------------------------------- shift, cash, printing


def test_shift_open_x_report_close(clients, emulator):
    opened = clients.cashier.post(f"{API}/devices/1/shift/open")
    assert opened.json["state"] == "done" and opened.json["kind"] == "open_shift"
    assert opened.json["result"]["fiscal_document_number"] == 1
    clients.admin.post(f"{API}/devices/1/shift/x-report")
    closed = clients.admin.post(f"{API}/devices/1/shift/close")
    assert closed.json["result"]["shift_number"] == 1
    assert [d["type"] for d in emulator.documents()] == ["open_shift", "close_shift"]


def test_settlement_report_is_a_journalled_fn_document(clients, emulator):
    res = clients.admin.post(f"{API}/devices/1/settlement-report", headers={"Idempotency-Key": "ofd-1"})
    assert res.json["state"] == "done" and res.json["kind"] == "settlement_report"
    doc = emulator.documents()[-1]
    assert doc["type"] == "settlement_report"
    assert res.json["result"]["fiscal_document_number"] == doc["fd_number"]
    assert res.json["result"]["fiscal_sign"] == doc["fiscal_sign"]
    again = clients.admin.post(f"{API}/devices/1/settlement-report", headers={"Idempotency-Key": "ofd-1"})
    assert again.json["id"] == res.json["id"] and len(emulator.documents()) == 1


@pytest.mark.parametrize("path", ["shift/x-report", "shift/close", "settlement-report", "cancel-receipt",
                                  "reset-summary", "tech-reset"])
def test_admin_operations_refused_for_cashier(path, clients, emulator):
    res = clients.cashier.post(f"{API}/devices/1/{path}", status=403)
    err = error_of(res)
    assert err["code"] == 1011 and "администратор" in err["message"]
    assert not emulator.documents()


def test_cash_in_and_out_in_roubles(clients, emulator, emulator2):
    clients.cashier.post_json(f"{API}/devices/1/cash-in", {"amount": 1000})
    res = clients.cashier.post_json(f"{API}/devices/1/cash-out", {"amount": "250.50"})
    assert res.json["result"]["total"] == 25050
    clients.cashier.post_json(f"{API}/devices/2/cash-in", {"amount": 1.01})
    assert [(d["type"], d["total"]) for d in cash_records(emulator)] == [
        ("cash_in", 100000), ("cash_out", 25050)]
    assert [(d["type"], d["total"]) for d in cash_records(emulator2)] == [
        ("cash_in", 101)]


@pytest.mark.parametrize("amount", [0, -1, "1.005", "много", None, True])
def test_cash_bad_amount_422(amount, clients, emulator):
    res = clients.cashier.post_json(f"{API}/devices/1/cash-in", {"amount": amount}, status=422)
    assert error_of(res)["field"] == "amount"
    assert not emulator.documents()


def test_cash_out_more_than_drawer_is_a_device_error(clients):
    res = clients.cashier.post_json(f"{API}/devices/1/cash-out", {"amount": 10}, status=502)
    assert res.json["state"] == "failed"
    assert 1 <= res.json["error"]["code"] <= 255 and res.json["error"]["message"]


def test_cash_in_idempotency_key(clients, emulator):
    headers = {"Idempotency-Key": "cash-2026-1"}
    first = clients.cashier.post_json(f"{API}/devices/1/cash-in", {"amount": 100}, headers=headers)
    again = clients.cashier.post_json(f"{API}/devices/1/cash-in", {"amount": "100.00"}, headers=headers)
    assert first.json["id"] == again.json["id"] and again.json["key"] == "cash-2026-1"
    assert len([d for d in cash_records(emulator) if d["type"] == "cash_in"]) == 1
    res = clients.cashier.post_json(f"{API}/devices/1/cash-in", {"amount": 200}, headers=headers, status=409)
    assert error_of(res)["code"] == 1009


def test_print_plain_and_formatted_lines(clients):
    lines = ["Простая строка", {"text": "Жирно по центру", "bold": True, "align": "center"},
             {"text": "Крупно", "double_width": True, "double_height": True, "inverse": True, "underline": True,
              "italic": True, "align": "right"}]
    res = clients.cashier.post_json(f"{API}/devices/2/print", {"lines": lines})
    assert res.json["state"] == "done" and res.json["device"] == 2


@pytest.mark.parametrize(
    "body, field",
    [({"lines": []}, "lines"), ({}, "lines"), ({"lines": [{"text": "x", "align": "justify"}]}, "lines.0.align"),
     ({"lines": [{"bold": True}]}, "lines.0.text"), ({"lines": [5]}, "lines.0"),
     ({"lines": ["x"], "colour": "red"}, "colour")],
)
def test_print_bad_lines_422(body, field, clients):
    res = clients.cashier.post_json(f"{API}/devices/1/print", body, status=422)
    assert error_of(res)["field"] == field


def test_print_needs_paper(clients, emulator):
    emulator.paper_out()
    res = clients.cashier.post_json(f"{API}/devices/1/print", {"lines": ["x"]}, status=502)
    assert res.json["state"] == "failed"


def test_reprint_last_after_receipt(clients):
    clients.cashier.post_json(f"{API}/receipts", receipt())
    res = clients.cashier.post(f"{API}/devices/1/reprint-last")
    assert res.json["state"] == "done" and res.json["kind"] == "reprint_last"


def test_cancel_receipt_admin(clients):
    assert clients.admin.post(f"{API}/devices/1/cancel-receipt").json["state"] == "done"


@pytest.mark.parametrize("path", ["reset-summary", "tech-reset"])
def test_resets_disabled_by_default(path, clients):
    res = clients.admin.post(f"{API}/devices/1/{path}", status=403)
    assert error_of(res)["code"] == 1013


@pytest.fixture
def resets_allowed(api_config):
    api_config["ALLOW_DEVICE_RESET"] = True


@pytest.mark.parametrize("path", ["reset-summary", "tech-reset"])
def test_resets_for_admin_when_enabled(path, resets_allowed, clients):
    assert clients.admin.post(f"{API}/devices/2/{path}").json["state"] == "done"
    clients.cashier.post(f"{API}/devices/2/{path}", status=403)


# --------------------------------------------------------------------------- receipts


def test_sell_with_item_and_receipt_discounts_exact_to_the_kopeck(clients, emulator):
    body = receipt(
        items=[
            {"name": "Кофе", "price": "333.33", "quantity": 3, "tax": "vat22", "discount": "0.99"},
            {"name": "Сахар", "price": "10.01", "quantity": "0.5", "tax": "vat10"},
            {"name": "Пакет", "price": 5, "tax": "vat22", "payment_object": "commodity", "unit": 0},
        ],
        discount="9.99",
        payments=[{"type": "cash", "amount": 1000}, {"type": "electronic", "amount": 500}],
    )
    res = clients.cashier.post_json(f"{API}/receipts", body)
    # 999.99 - 0.99 + 5.01 + 5.00 = 1009.01; minus 9.99 = 999.02
    assert res.json["state"] == "done" and res.json["result"]["total"] == 99902
    doc = receipts_of(emulator)[-1]
    assert doc["total"] == 99902 == sum(i["amount"] for i in doc["items"])
    assert doc["payments"] == [{"type": "cash", "amount": 100000}, {"type": "electronic", "amount": 50000}]
    assert doc["change"] == 150000 - 99902


@pytest.mark.parametrize("kind", ["sell", "sell_return", "buy", "buy_return"])
def test_four_settlement_types(kind, clients, emulator):
    res = clients.cashier.post_json(f"{API}/receipts", receipt(type=kind))
    assert res.json["state"] == "done"
    assert receipts_of(emulator)[-1]["receipt_type"] == kind


@pytest.mark.parametrize("kind", ["sell_correction", "sell_return_correction", "buy_correction",
                                  "buy_return_correction"])
def test_correction_receipts(kind, clients, emulator):
    body = receipt(type=kind, correction={"type": "order", "date": "2025-12-20", "order_number": "ЕД-7-1"},
                   items=[{"name": "Выручка", "price": 500, "tax": "vat20"}])
    clients.cashier.post_json(f"{API}/receipts", body)
    doc = receipts_of(emulator)[-1]
    assert doc["receipt_type"] == kind
    # 1178 and 1179 travel inside the composite tag 1174 (kktapp/atol/model.py).
    assert doc["attributes"]["1173"] == 1
    assert doc["attributes"]["1174"] == {"1178": "2025-12-20", "1179": "ЕД-7-1"}
    # 20 % is right for a 2025 settlement even in 2026.
    assert doc["items"][0]["tax"] == "vat20"


@pytest.mark.parametrize("accept_legacy", [True, False])
def test_returns_keep_vat20_and_vat120(accept_legacy, api_config, emulator, request):
    """A 2026 return of a 2025 sale is made at 20 % (fiscal-rules.md §1); a sale maps vat20 to today's rate."""
    from tests.conftest import ApiClients

    api_config["ACCEPT_LEGACY_VAT"] = accept_legacy
    clients = ApiClients(request.getfixturevalue("app"))
    items = [{"name": "Чай", "price": 100, "tax": "vat20"}, {"name": "Аванс", "price": 100, "tax": "vat120"}]
    for kind in ("sell_return", "buy_return"):
        res = clients.cashier.post_json(f"{API}/receipts", receipt(type=kind, items=items,
                                                                 payments=[{"type": "electronic", "amount": 200}]))
        assert res.json["state"] == "done", res.json
        assert [i["tax"] for i in receipts_of(emulator)[-1]["items"]] == ["vat20", "vat120"]
    sale = clients.cashier.post_json(f"{API}/receipts", receipt(items=items[:1], payments=[
        {"type": "electronic", "amount": 100}]), expect_errors=True)
    if accept_legacy:
        assert receipts_of(emulator)[-1]["items"][0]["tax"] == "vat22"
    else:
        assert sale.status_int == 422 and len(receipts_of(emulator)) == 2


@pytest.mark.parametrize("accept_legacy", [True, False])
def test_credit_payment_keeps_vat20(accept_legacy, api_config, emulator, request):
    """A 2025 credit sale paid in 2026 is receipted at 20 % (FNS letter АБ-4-20/11248@, fiscal-rules.md §1)."""
    from tests.conftest import ApiClients

    api_config["ACCEPT_LEGACY_VAT"] = accept_legacy
    clients = ApiClients(request.getfixturevalue("app"))
    items = [{"name": "Оплата долга", "price": 100, "tax": "vat20", "payment_method": "creditPayment"},
             {"name": "Оплата долга (аванс)", "price": 100, "tax": "vat120", "payment_method": 7}]
    res = clients.cashier.post_json(f"{API}/receipts", receipt(items=items,
                                                             payments=[{"type": "electronic", "amount": 200}]))
    assert res.json["state"] == "done", res.json
    assert [i["tax"] for i in receipts_of(emulator)[-1]["items"]] == ["vat20", "vat120"]


@pytest.mark.parametrize(
    "changes, field",
    [
        # 22 % came into force on 01.01.2026: a correction of a 2025 settlement uses 20 % (fiscal-rules.md §1).
        ({"type": "sell_correction", "correction": {"type": "self", "date": "2025-12-20"},
          "items": [{"name": "Выручка", "price": 500, "tax": "vat22"}]}, "items.0.tax"),
        # 5 % and 7 % are УСН rates.
        ({"taxation": "osn", "items": [{"name": "Чай", "price": 500, "tax": "vat5"}]}, "items.0.tax"),
        # Goods with a marking code need the code, which the API cannot carry yet.
        ({"items": [{"name": "Обувь", "price": 500, "tax": "vat22", "payment_object": "commodityWithMarking"}]},
         "items.0.payment_object"),
        # 1179 is the number of an FNS order: none on a correction of one's own.
        ({"type": "sell_correction", "correction": {"type": "self", "date": "2026-02-01", "order_number": "1"},
          "items": [{"name": "Выручка", "price": 500, "tax": "vat22"}]}, "correction.order_number"),
        ({"cashier": {"name": "Иванов\x1b[2J"}}, "cashier.name"),
    ],
)
def test_fiscal_rules_refused_before_the_device(changes, field, clients, emulator):
    err = error_of(clients.cashier.post_json(f"{API}/receipts", receipt(**changes), status=422))
    assert err["field"] == field, err
    assert not emulator.documents()


def test_position_attributes_header_footer_cashier(clients, emulator):
    body = receipt(
        items=[{"name": "Гречка", "price": 100, "quantity": "1.5", "tax": 10, "payment_method": "advance",
                "payment_object": 4, "unit": "kilogram", "department": 3}],
        payments=[{"type": "prepaid", "amount": 150}],
        header=["Магазин", {"text": "ИНН 7700000000", "align": "right"}],
        footer=[{"text": "Спасибо!", "bold": True}],
        cashier={"name": "Петрова О. В.", "inn": "500100732259"},
        taxation="usnIncome",
    )
    clients.cashier.post_json(f"{API}/receipts", body)
    doc = receipts_of(emulator)[-1]
    item = doc["items"][0]
    assert (item["price"], item["quantity"], item["amount"], item["tax"]) == (10000, "1.5", 15000, "vat10")
    assert (item["payment_method"], item["payment_object"], item["unit"], item["section"]) == (3, 4, 11, 3)
    assert doc["attributes"]["1021"] == "Петрова О. В." and doc["attributes"]["1203"] == "500100732259"
    assert doc["payments"] == [{"type": "prepaid", "amount": 15000}]


def test_electronic_only_receipt(clients, emulator):
    clients.cashier.post_json(f"{API}/receipts", receipt(electronic_only=True, customer_contact="buyer@example.ru"))
    doc = receipts_of(emulator)[-1]
    assert doc["electronic"] is True and doc["customer_contact"] == "buyer@example.ru"


def test_internet_sale_carries_the_site_and_the_flag(clients, emulator):
    # From 01.09.2025 an internet settlement carries 1008, 1187 = the site and 1125 (fiscal-rules.md §5).
    clients.cashier.post_json(f"{API}/receipts", receipt(
        customer_contact="buyer@example.ru", settlement_place="https://shop.example.ru", internet=True))
    doc = receipts_of(emulator)[-1]
    assert doc["customer_contact"] == "buyer@example.ru"
    assert doc["attributes"] == {"1187": "https://shop.example.ru", "1125": 1}


def test_credit_and_other_payments(clients, emulator):
    clients.cashier.post_json(f"{API}/receipts", receipt(
        payments=[{"type": "credit", "amount": 300}, {"type": "other", "amount": 200}]))
    assert receipts_of(emulator)[-1]["payments"] == [{"type": "credit", "amount": 30000},
                                                    {"type": "other", "amount": 20000}]


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"items": []}, "items"),
        ({"items": [{"name": "x", "price": "1.005", "tax": "vat22"}]}, "items.0.price"),
        ({"items": [{"name": "x", "price": 1, "tax": "vat99"}]}, "items.0.tax"),
        ({"items": [{"name": "", "price": 1, "tax": "vat22"}]}, "items.0.name"),
        ({"items": [{"name": "x", "price": 1, "quantity": 0, "tax": "vat22"}]}, "items.0.quantity"),
        ({"items": [{"name": "x", "price": 10, "quantity": 3, "amount": "30.02", "tax": "vat22"}]}, "items.0.amount"),
        ({"items": [{"name": "x", "price": 1, "tax": "vat22", "unit": "parsec"}]}, "items.0.unit"),
        ({"items": [{"name": "x", "price": 1, "tax": "vat22", "discount": 2}]}, "items.0.discount"),
        ({"discount": 501}, "discount"),
        ({"payments": [{"type": "cash", "amount": 100}]}, "payments"),
        ({"payments": [{"type": "electronic", "amount": 600}]}, "payments"),
        ({"payments": [{"type": "bitcoin", "amount": 500}]}, "payments.0.type"),
        ({"type": "gift"}, "type"),
        ({"type": "sell_correction"}, "correction"),
        ({"correction": {"type": "self", "date": "2026-01-01"}}, "correction"),
        ({"electronic_only": True}, "customer_contact"),
        ({"customer_contact": "не почта"}, "customer_contact"),
        # fiscal-rules.md §5: an internet settlement carries 1008 and 1187 (the site).
        ({"internet": True, "settlement_place": "shop.ru"}, "customer_contact"),
        ({"internet": True, "customer_contact": "a@b.ru"}, "settlement_place"),
        ({"settlement_place": "я" * 244}, "settlement_place"),
        ({"cashier": {"name": "Иванов", "inn": "123"}}, "cashier.inn"),
        ({"taxation": "envd"}, "taxation"),
        ({"device": 0}, "device"),
        ({"surprise": 1}, "surprise"),
    ],
)
def test_receipt_validation_422_names_the_field(changes, field, clients, emulator):
    res = clients.cashier.post_json(f"{API}/receipts", receipt(**changes), status=422)
    err = error_of(res)
    assert err["field"] == field, err
    assert err["code"] == 1001
    assert not emulator.documents()


def test_receipt_not_json_422(clients):
    res = clients.cashier.post(f"{API}/receipts", b"{oops", content_type="application/json", status=422)
    assert error_of(res)["field"] == "body"


def test_receipt_amount_within_one_kopeck_is_taken(clients, emulator):
    body = receipt(items=[{"name": "x", "price": "0.33", "quantity": 3, "amount": "1.00", "tax": "vat22"}],
                   payments=[{"type": "cash", "amount": 1}])
    clients.cashier.post_json(f"{API}/receipts", body)
    assert receipts_of(emulator)[-1]["total"] == 100


def test_receipt_on_unknown_device_404(clients):
    clients.cashier.post_json(f"{API}/receipts", receipt(device=5), status=404)


def test_receipt_idempotency_key_header(clients, emulator):
    headers = {"Idempotency-Key": "order-1"}
    first = clients.cashier.post_json(f"{API}/receipts", receipt(), headers=headers)
    # Same receipt, numbers spelled differently: the same document, not a conflict.
    same = receipt(items=[{"name": "Чай чёрный", "price": 250, "quantity": "2.000", "tax": "vat22"}])
    again = clients.cashier.post_json(f"{API}/receipts", same, headers=headers)
    assert first.json["id"] == again.json["id"] and again.json["key"] == "order-1"
    assert len(receipts_of(emulator)) == 1
    other = receipt(payments=[{"type": "cash", "amount": 500}])
    res = clients.cashier.post_json(f"{API}/receipts", other, headers=headers, status=409)
    assert error_of(res)["code"] == 1009
    assert len(receipts_of(emulator)) == 1


def test_receipt_idempotency_key_in_body(clients, emulator):
    first = clients.cashier.post_json(f"{API}/receipts", receipt(id="order-2"))
    again = clients.cashier.post_json(f"{API}/receipts", receipt(id="order-2"))
    assert first.json["id"] == again.json["id"]
    assert len(receipts_of(emulator)) == 1


def test_receipt_key_header_and_body_must_agree(clients):
    res = clients.cashier.post_json(f"{API}/receipts", receipt(id="a"), headers={"Idempotency-Key": "b"}, status=422)
    assert error_of(res)["field"] == "id"


def test_receipt_without_key_is_not_deduplicated(clients, emulator):
    clients.cashier.post_json(f"{API}/receipts", receipt())
    clients.cashier.post_json(f"{API}/receipts", receipt())
    assert len(receipts_of(emulator)) == 2


def test_same_key_on_two_devices_is_a_conflict(clients):
    clients.cashier.post_json(f"{API}/receipts", receipt(id="k"))
    clients.cashier.post_json(f"{API}/receipts", receipt(id="k", device=2), status=409)


def test_receipt_async_202_then_poll_location(clients, emulator):
    emulator.set_device_time(0.05)
    res = clients.cashier.post_json(f"{API}/receipts?wait=0", receipt(), status=202)
    assert res.json["state"] in ("queued", "sending")
    location = res.headers["Location"]
    assert location.endswith(f"/api/v1/receipts/{res.json['id']}")
    deadline = time.monotonic() + 30
    state = res.json["state"]
    while state not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.05)
        state = clients.cashier.get(location).json["state"]
    final = clients.cashier.get(location).json
    assert final["state"] == "done" and final["result"]["total"] == 50000
    assert clients.cashier.get(f"{API}/jobs/{res.json['id']}").json == final


@pytest.mark.parametrize("wait", ["abc", "-1", "121", "nan"])
def test_bad_wait_422(wait, clients):
    res = clients.cashier.post_json(f"{API}/receipts?wait={wait}", receipt(), status=422)
    assert error_of(res)["field"] == "wait"


def test_unknown_job_404(clients):
    res = clients.cashier.get(f"{API}/receipts/no-such-job", status=404)
    assert error_of(res)["code"] == 1012
    clients.cashier.get(f"{API}/jobs/no-such-job", status=404)


def test_receipts_on_two_devices_at_the_same_time(clients, emulator, emulator2):
    emulator.set_device_time(0.01)
    emulator2.set_device_time(0.01)
    results: dict[int, list[dict]] = {1: [], 2: []}

    def sell(device: int) -> None:
        client = clients.as_user("kassa", "kassa-secret-1")
        for i in range(3):
            body = receipt(device=device, id=f"dev{device}-{i}")
            results[device].append(client.post_json(f"{API}/receipts", body).json)

    threads = [threading.Thread(target=sell, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for device, emu in ((1, emulator), (2, emulator2)):
        assert [r["state"] for r in results[device]] == ["done"] * 3
        assert {r["device"] for r in results[device]} == {device}
        assert [d["total"] for d in receipts_of(emu)] == [50000] * 3


def test_dead_device_does_not_block_the_other(clients, emulator, emulator2):
    emulator.power_off()
    # The receipt is accepted and waits in the queue (202), never refused: the design keeps it
    # for the device's return, and the other register goes on meanwhile.
    slow = clients.cashier.post_json(f"{API}/receipts?wait=0.2", receipt(id="while-off"), status=202)
    assert slow.json["state"] in ("queued", "sending", "unknown")
    ok = clients.cashier.post_json(f"{API}/receipts", receipt(device=2))
    assert ok.json["state"] == "done"
    assert receipts_of(emulator) == []
    emulator.power_on()
    location = slow.headers["Location"]
    deadline = time.monotonic() + 30
    while clients.cashier.get(location).json["state"] != "done" and time.monotonic() < deadline:
        time.sleep(0.05)
    final = clients.cashier.get(location).json
    assert final["state"] == "done"
    assert [d["total"] for d in receipts_of(emulator)] == [50000]


# --------------------------------------------------------------------------- access


@pytest.mark.parametrize(
    "method, path",
    [("get", "/devices"), ("get", "/devices/1/status"), ("post", "/devices/1/shift/open"), ("post", "/receipts"),
     ("get", "/jobs/x"), ("post", "/devices/1/print")],
)
def test_no_credentials_401(method, path, clients, emulator):
    res = getattr(clients.anon, method)(API + path, status=401)
    assert res.headers["WWW-Authenticate"].startswith('Basic realm="kkt"')
    err = error_of(res)
    assert err["code"] == 1010 and "логин" in err["message"]
    assert not emulator.documents()


def test_wrong_password_401(clients):
    res = clients.as_user("kassa", "nope").get(f"{API}/devices", status=401)
    assert error_of(res)["message"] == "неверный логин или пароль"


def test_openapi_is_public(clients):
    assert clients.anon.get(f"{API}/openapi.json").json["openapi"].startswith("3.")


def test_auth_off_everyone_is_admin(clients):
    clients.app.config["AUTH_REQUIRED"] = False
    assert clients.anon.post(f"{API}/devices/1/shift/x-report").json["state"] == "done"


def test_errors_are_russian_json_for_405_inside_blueprint(clients):
    # Unknown methods are answered by Flask before the blueprint; the blueprint's own aborts are JSON.
    res = clients.cashier.get(f"{API}/devices/1/status?wait=1000", status=422)
    assert "секунд" in error_of(res)["message"]


def test_webtest_clients_do_not_share_credentials(clients):
    assert isinstance(clients.anon, webtest.TestApp)
    assert "HTTP_AUTHORIZATION" not in clients.anon.extra_environ
