"""The 1C contract (POST/GET /kkt) end to end: WebTest → app → service → driver → ATOL emulator.

Bodies are written the way 1C's ЗаписьJSON writes them (tab indents, numbers as written,
Cyrillic as UTF-8) and posted with the seed's ``application/x-www-form-urlencoded`` header.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import webtest
from werkzeug.security import generate_password_hash

from kktapp import __version__, domain
from kktapp.atol import codec, commands
from kktapp.errors import LinkError, ResultCode, ValidationFailed
from kktapp.journal import Job
from kktapp.owner import Reasons
from kktapp.service import fingerprint
from kktapp.web import kkt1c

FORM = "application/x-www-form-urlencoded;charset=utf-8"
LEGACY_RATE = domain.general_rate(dt.date.today()).value


# --------------------------------------------------------------------------- helpers


def to_1c_json(value: Any, level: int = 0) -> str:
    """JSON as 1C's ЗаписьJSON with Символы.Таб writes it: tab indents, Decimal as plain digits."""
    pad, inner = "\t" * level, "\t" * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {to_1c_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(value, list):
        return "[\n" + ",\n".join(inner + to_1c_json(v, level + 1) for v in value) + "\n" + pad + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def position(name: str = "Чай чёрный «Цейлон», 100 г", price: str = "325.12", qty: str = "6", tax: Any = 22) -> dict:
    amount = domain.position_amount(domain.to_kopecks(Decimal(price)), Decimal(qty))
    return {
        "Name": name,
        "Price": Decimal(price),
        "Quantity": Decimal(qty),
        "Tax": tax,
        "PositionSumm": Decimal(amount).scaleb(-2),
    }


def document(*positions: dict, number: str = "ТР00-003655", **extra: Any) -> dict:
    goods = {f"Position_{i}": p for i, p in enumerate(positions or (position(),), 1)}
    total = sum(domain.to_kopecks(p["PositionSumm"]) for p in goods.values())
    body = {"DocNumber": number, "DocDate": "06.10.2017", "DocSumm": Decimal(total).scaleb(-2), "Goods": goods}
    body.update(extra)
    return body


def post(testapp, body: Any, *, content_type: str = FORM, status: int | str = "*", url: str = "/kkt", **kw):
    raw = body if isinstance(body, bytes) else to_1c_json(body).encode("utf-8")
    return testapp.post(url, params=raw, content_type=content_type, status=status, **kw)


def on_device(name: str) -> str:
    """A name as the device stores it: its code page has no «», so the codec writes " instead."""
    return codec.decode_text(codec.encode_text(name))


def receipts(emulator) -> list[dict]:
    return [d for d in emulator.documents() if d["type"] == "receipt"]


def assert_answer_shape(data: dict) -> None:
    """Every answer carries the same keys, so 1C can always read result_code and check_number."""
    for key in (
        "check_number",
        "result_code",
        "result_description",
        "fiscal_document_number",
        "fiscal_sign",
        "shift_number",
        "receipt_datetime",
        "doc_number",
    ):
        assert key in data, key
    assert isinstance(data["check_number"], int)
    assert isinstance(data["result_code"], int)
    assert isinstance(data["result_description"], str) and data["result_description"]


# --------------------------------------------------------------------------- success


def test_receipt_is_fiscalised(testapp, emulator):
    body = document(position(), position("Кофе зерновой", "99.90", "1.5", "10"))
    res = post(testapp, body, status=200)

    assert res.content_type == "application/json"
    data = res.json
    assert_answer_shape(data)
    assert data["result_code"] == 0
    assert data["result_description"] == kkt1c.DONE_TEXT
    assert data["doc_number"] == "ТР00-003655"
    assert data["check_number"] >= 1
    assert data["fiscal_sign"]
    assert data["test_mode"] is False

    docs = receipts(emulator)
    assert len(docs) == 1
    doc = docs[0]
    assert doc["fd_number"] == data["fiscal_document_number"]
    assert doc["receipt_number"] == data["check_number"]
    assert doc["shift_number"] == data["shift_number"]
    assert doc["total"] == 195072 + 14985
    assert [i["name"] for i in doc["items"]] == [on_device("Чай чёрный «Цейлон», 100 г"), "Кофе зерновой"]
    assert [i["price"] for i in doc["items"]] == [32512, 9990]
    assert [i["amount"] for i in doc["items"]] == [195072, 14985]
    assert [i["tax"] for i in doc["items"]] == ["vat22", "vat10"]
    assert doc["payments"] == [{"type": "electronic", "amount": 195072 + 14985}]


def test_closed_shift_is_opened_first(testapp, emulator):
    post(testapp, document(), status=200)
    kinds = [d["type"] for d in emulator.documents()]
    assert kinds == ["open_shift", "receipt"]


def test_shift_over_24_hours_is_closed_and_reopened(testapp, emulator):
    first = post(testapp, document(number="ТР00-1"), status=200).json
    emulator.advance_clock(25)
    second = post(testapp, document(number="ТР00-2"), status=200).json

    kinds = [d["type"] for d in emulator.documents()]
    assert kinds == ["open_shift", "receipt", "close_shift", "open_shift", "receipt"]
    assert second["shift_number"] == first["shift_number"] + 1
    assert second["check_number"] == 1


@pytest.mark.parametrize("content_type", [FORM, "application/json", "application/json; charset=utf-8", "text/plain"])
def test_content_types(testapp, emulator, content_type):
    data = post(testapp, document(), content_type=content_type, status=200).json
    assert data["result_code"] == 0
    assert len(receipts(emulator)) == 1


def test_body_with_bom(testapp, emulator):
    raw = b"\xef\xbb\xbf" + to_1c_json(document()).encode("utf-8")
    assert post(testapp, raw, status=200).json["result_code"] == 0
    assert len(receipts(emulator)) == 1


def test_cyrillic_and_long_names(testapp, emulator):
    names = ["Ёлочная игрушка «Шар» №5 — 10 см", "Щётка для обуви, чёрная", "Я" * 128]
    post(testapp, document(*(position(n, "10.00", "1") for n in names)), status=200)
    assert [i["name"] for i in receipts(emulator)[0]["items"]] == [on_device(n) for n in names]


def test_position_10_prints_after_position_9(testapp, emulator):
    goods = {f"Position_{n}": position(f"Товар {n}", f"{n}.00", "1") for n in range(1, 13)}
    keys = list(goods)
    random.Random(4).shuffle(keys)
    body = document()
    body["Goods"] = {k: goods[k] for k in keys}
    body["DocSumm"] = Decimal(sum(range(1, 13)))
    post(testapp, body, status=200)
    assert [i["name"] for i in receipts(emulator)[0]["items"]] == [f"Товар {n}" for n in range(1, 13)]


def test_hundred_positions(testapp, emulator):
    positions = [position(f"Позиция {n}", f"{n}.{n % 100:02d}", "1.25" if n % 3 == 0 else "2") for n in range(1, 101)]
    body = document(*positions)
    data = post(testapp, body, status=200).json
    assert data["result_code"] == 0
    doc = receipts(emulator)[0]
    assert len(doc["items"]) == 100
    assert doc["total"] == domain.to_kopecks(body["DocSumm"])
    assert doc["items"][99]["name"] == "Позиция 100"


@pytest.mark.parametrize("tax", [18, 20, "18", "НДС18", "nds18", "НДС 20%"])
def test_legacy_tax_means_todays_general_rate(testapp, emulator, tax):
    post(testapp, document(position(tax=tax)), status=200)
    assert receipts(emulator)[0]["items"][0]["tax"] == LEGACY_RATE


@pytest.mark.parametrize(
    "tax, rate",
    [
        (0, "vat0"),
        (10, "vat10"),
        (22, "vat22"),
        (5, "vat5"),
        (7, "vat7"),
        ("10/110", "vat110"),
        ("22/122", "vat122"),
        ("без НДС", "none"),
        ("none", "none"),
    ],
)
def test_current_rates(testapp, emulator, tax, rate):
    post(testapp, document(position(tax=tax)), status=200)
    assert receipts(emulator)[0]["items"][0]["tax"] == rate


def test_optional_fields_cash_contact_electronic_only(testapp, emulator):
    body = document(PaymentType="cash", CustomerContact="buyer@example.ru", ElectronicOnly=True, Device=1)
    data = post(testapp, body, status=200).json
    assert data["result_code"] == 0
    doc = receipts(emulator)[0]
    assert doc["payments"][0]["type"] == "cash"
    assert doc["customer_contact"] == "buyer@example.ru"
    assert doc.get("electronic") is True


def test_default_payment_from_config(app_config, emulator, request):
    app_config["DEFAULT_PAYMENT"] = "cash"
    testapp = request.getfixturevalue("testapp")
    post(testapp, document(), status=200)
    assert receipts(emulator)[0]["payments"][0]["type"] == "cash"


def test_taxation_from_config_reaches_the_device(app_config, emulator, request):
    # Tag 1055 was never written: a register registered for several systems used its default.
    app_config["TAXATION"] = "usnIncome"
    testapp = request.getfixturevalue("testapp")
    post(testapp, document(), status=200)
    assert receipts(emulator)[0]["attributes"]["1055"] == int(domain.TaxationSystem.USN_INCOME)


def test_usn_rate_under_osn_names_the_tax(app_config, emulator, request):
    """5 % and 7 % are УСН rates (fiscal-rules.md §1): under TAXATION osn the receipt never reaches the KKT."""
    app_config["TAXATION"] = "osn"
    testapp = request.getfixturevalue("testapp")
    data = post(testapp, document(position(), position(name="Кофе", tax=5)), status=422).json
    assert (data["result_code"], data["field"]) == (ResultCode.VALIDATION, "Goods.Position_2.Tax")
    assert "УСН" in data["result_description"]
    assert emulator.documents() == []


def test_a_too_long_cashier_in_the_settings_is_named(app_config, emulator, request):
    """Tag 1021 holds up to 64 characters: a longer CASHIER_NAME is refused before the KKT, naming the setting."""
    app_config["CASHIER_NAME"] = "Кассир " + "я" * 60
    testapp = request.getfixturevalue("testapp")
    data = post(testapp, document(), status=422).json
    assert data["field"] == "CASHIER_NAME (настройки сервиса)" and "64" in data["result_description"]
    assert emulator.documents() == []


def test_internet_sales_from_the_site_carry_1008_1187_and_1125(app_config, emulator, request):
    # fiscal-rules.md §5: from 01.09.2025 an internet sale carries 1008, 1187 = the site, and 1125.
    app_config.update(ONEC_INTERNET=True, ONEC_SETTLEMENT_PLACE="https://shop.example.ru")
    testapp = request.getfixturevalue("testapp")
    data = post(testapp, document(), status=422).json
    assert (data["result_code"], data["field"]) == (ResultCode.VALIDATION, "CustomerContact")
    assert "ONEC_INTERNET" in data["result_description"] and "1008" in data["result_description"]
    assert emulator.documents() == []
    post(testapp, document(CustomerContact="buyer@example.ru"), status=200)
    doc = receipts(emulator)[0]
    assert doc["customer_contact"] == "buyer@example.ru"
    assert doc["attributes"] == {"1187": "https://shop.example.ru", "1125": 1}


def test_internet_sales_without_the_site_name_the_setting(app_config, emulator, request):
    app_config["ONEC_INTERNET"] = True
    testapp = request.getfixturevalue("testapp")
    data = post(testapp, document(CustomerContact="buyer@example.ru")).json
    assert data["result_code"] != 0 and "ONEC_SETTLEMENT_PLACE" in data["result_description"]
    assert emulator.documents() == []


def test_posting_to_root_for_apache_mount(testapp, emulator):
    """Under ``WSGIScriptAlias /kkt /var/www/kkt/kkt.wsgi`` the app sees PATH_INFO "/"."""
    data = post(testapp, document(), url="/", extra_environ={"SCRIPT_NAME": "/kkt"}, status=200).json
    assert data["result_code"] == 0


# --------------------------------------------------------------------------- idempotency


def test_same_doc_number_twice_gives_one_receipt(testapp, emulator):
    first = post(testapp, document(), status=200).json
    again = post(testapp, document(), status=200).json
    assert again == first
    assert len(receipts(emulator)) == 1


def test_same_doc_number_other_document_is_conflict(testapp, emulator):
    post(testapp, document(), status=200)
    other = document(position(price="1.00", qty="1"))
    data = post(testapp, other, status=409).json
    assert_answer_shape(data)
    assert data["result_code"] == ResultCode.CONFLICT
    assert "номер документа" in data["result_description"]
    assert data["check_number"] == 0
    assert len(receipts(emulator)) == 1


def test_same_number_on_another_date_is_another_document(testapp, emulator):
    # 1C numbers documents within a period: next year's ТР00-003655 is a new payment.
    first = post(testapp, document(), status=200).json
    later = post(testapp, document(DocDate="06.10.2018"), status=200).json
    assert later["fiscal_document_number"] != first["fiscal_document_number"]
    assert later["doc_number"] == "ТР00-003655"
    assert len(receipts(emulator)) == 2


def test_numeric_doc_number_as_1c_writes_it(testapp, emulator):
    # A document type numbered by digits only: 1C writes the number without quotes.
    first = post(testapp, document(number=3655), status=200).json
    assert first["result_code"] == 0 and first["doc_number"] == "3655"
    again = post(testapp, document(number=3655), status=200).json
    assert again == first
    assert len(receipts(emulator)) == 1


def test_doc_number_with_a_no_break_space(testapp, emulator):
    data = post(testapp, document(number="ТР00\u00a0003655"), status=200).json
    assert data["result_code"] == 0


def test_control_character_in_doc_number_is_named(testapp, emulator):
    data = post(testapp, document(number="ТР00\t003655"), status=422).json
    assert "U+0009" in data["result_description"]


def test_a_document_journalled_under_its_number_alone_is_answered_from_the_journal(app, testapp, emulator):
    # Accepted by a version that keyed on DocNumber alone, sent again after the upgrade: the
    # stored answer, not a second receipt.
    service = app.extensions["kkt"]
    body = document(DocDate="06.10.2016")
    as_parsed = json.loads(to_1c_json(body), parse_float=Decimal)
    with app.app_context():
        receipt = kkt1c.parse_receipt(as_parsed, dt.date.today(), app.config)[1]
    job = service.submit_receipt(receipt, key="ТР00-003655", fingerprint=fingerprint(as_parsed), source="1c", wait=10)
    assert job.state == "done"
    data = post(testapp, body, status=200).json
    assert data["fiscal_document_number"] == job.result["fiscal_document_number"]
    assert len(receipts(emulator)) == 1
    # Another document under that bare number (the next period's) is not that one.
    assert post(testapp, document(), status=200).json["result_code"] == 0
    assert len(receipts(emulator)) == 2


def test_a_new_document_is_looked_up_in_one_journal_read(app, testapp, emulator, monkeypatch):
    """The bare-number key and the cancelled check share one read: before the receipt is
    journalled, a 1C request asks the journal once (besides the link flag)."""
    journal = app.extensions["kkt"].journal
    reads: list[str] = []
    for name in ("find_by_key", "find_by_keys"):
        original = getattr(journal, name)
        monkeypatch.setattr(journal, name, lambda *a, _o=original, _n=name: (reads.append(_n), _o(*a))[1])
    assert post(testapp, document(), status=200).json["result_code"] == 0
    assert reads == ["find_by_keys"]


def test_find_by_keys_answers_as_find_by_key_does(app):
    journal = app.extensions["kkt"].journal
    for attempt in range(2):  # two failed attempts, then the live one
        job, _ = journal.accept(device=1, kind="receipt", key="k1", fingerprint="f", payload={}, source="t")
        if attempt < 1:
            journal.finish(job, "failed", error={"code": 1})
    journal.accept(device=1, kind="receipt", key="k2", fingerprint="f", payload={}, source="t")
    failed, _ = journal.accept(device=1, kind="receipt", key="k3", fingerprint="f", payload={}, source="t")
    journal.finish(failed, "failed", error={"code": 1})
    keys = ("k1", "k2", "k3", "nothing")
    found = journal.find_by_keys("receipt", keys)
    assert set(found) == {"k1", "k2", "k3"}
    for key in keys[:3]:
        assert found[key].to_dict() == journal.find_by_key("receipt", key).to_dict()
    assert found["k1"].state == "queued" and found["k3"].state == "failed"


def test_address_with_a_trailing_slash(testapp, emulator):
    assert post(testapp, document(), url="/kkt/", status=200).json["result_code"] == 0
    assert testapp.get("/kkt/", headers={"Accept": "application/json"}, status=200).json["service"] == "kkt"


# --------------------------------------------------------------------------- validation


def _set(path: str, value: Any):
    def change(body: dict) -> None:
        *parents, last = path.split(".")
        target = body
        for key in parents:
            target = target[key]
        if value is _DROP:
            del target[last]
        else:
            target[last] = value

    return change


_DROP = object()

INVALID = [
    ("DocNumber", _set("DocNumber", ""), "DocNumber"),
    ("DocNumber missing", _set("DocNumber", _DROP), "DocNumber"),
    ("DocNumber a fraction", _set("DocNumber", Decimal("36.55")), "DocNumber"),
    ("DocNumber true", _set("DocNumber", True), "DocNumber"),
    ("DocDate format", _set("DocDate", "2017-10-06"), "DocDate"),
    ("DocDate impossible", _set("DocDate", "31.02.2017"), "DocDate"),
    ("DocSumm wrong", _set("DocSumm", Decimal("1950.00")), "DocSumm"),
    ("DocSumm string", _set("DocSumm", "много"), "DocSumm"),
    ("no positions", _set("Goods", {}), "Goods"),
    ("Goods is an array", _set("Goods", [1, 2]), "Goods"),
    ("bad key", _set("Goods.Товар_1", position()), "Goods.Товар_1"),
    ("Position_0", _set("Goods.Position_0", position()), "Goods.Position_0"),
    ("Name empty", _set("Goods.Position_1.Name", ""), "Goods.Position_1.Name"),
    ("Name spaces", _set("Goods.Position_1.Name", "   "), "Goods.Position_1.Name"),
    ("Name too long", _set("Goods.Position_1.Name", "Я" * 129), "Goods.Position_1.Name"),
    ("Price negative", _set("Goods.Position_1.Price", Decimal("-325.12")), "Goods.Position_1.Price"),
    ("Price 3 decimals", _set("Goods.Position_1.Price", Decimal("325.125")), "Goods.Position_1.Price"),
    ("Quantity zero", _set("Goods.Position_1.Quantity", 0), "Goods.Position_1.Quantity"),
    ("Quantity negative", _set("Goods.Position_1.Quantity", -6), "Goods.Position_1.Quantity"),
    ("Quantity 4 decimals", _set("Goods.Position_1.Quantity", Decimal("6.0001")), "Goods.Position_1.Quantity"),
    ("PositionSumm above", _set("Goods.Position_1.PositionSumm", Decimal("1951.00")), "Goods.Position_1.PositionSumm"),
    ("Tax unknown", _set("Goods.Position_1.Tax", 30), "Goods.Position_1.Tax"),
    ("Tax missing", _set("Goods.Position_1.Tax", _DROP), "Goods.Position_1.Tax"),
    ("unknown position field", _set("Goods.Position_1.Discount", 5), "Goods.Position_1.Discount"),
    ("unknown field", _set("Comment", "x"), "Comment"),
    ("PaymentType", _set("PaymentType", "bitcoin"), "PaymentType"),
    ("CustomerContact", _set("CustomerContact", "позвоните мне"), "CustomerContact"),
    ("ElectronicOnly without contact", _set("ElectronicOnly", True), "CustomerContact"),
    ("Device", _set("Device", 0), "Device"),
]


@pytest.mark.parametrize("change, field", [(c, f) for _, c, f in INVALID], ids=[i for i, _, _ in INVALID])
def test_invalid_documents_never_reach_the_device(testapp, emulator, change, field):
    before = len(emulator.documents())
    body = document()
    change(body)
    res = post(testapp, body, status=422)
    data = res.json
    assert_answer_shape(data)
    assert data["result_code"] == ResultCode.VALIDATION
    assert data["field"] == field
    assert field in data["result_description"]
    assert data["check_number"] == 0
    assert len(emulator.documents()) == before


def test_unknown_device_is_a_validation_error(testapp, emulator):
    data = post(testapp, document(Device=7), status=422).json
    assert data["field"] == "Device" and data["value"] == 7
    assert "не настроена" in data["result_description"]
    assert emulator.documents() == []


def test_error_names_the_first_bad_position_in_numeric_order(testapp, emulator):
    body = document(*(position(f"Товар {n}", "1.00", "1") for n in range(1, 12)))
    body["Goods"]["Position_10"]["Price"] = Decimal("-1")
    body["Goods"]["Position_2"]["Quantity"] = 0
    data = post(testapp, body, status=422).json
    assert data["field"] == "Goods.Position_2.Quantity"
    assert data["value"] == 0


def test_error_shows_the_value(testapp, emulator):
    body = document()
    body["Goods"]["Position_1"]["Price"] = Decimal("325.125")
    data = post(testapp, body, status=422).json
    assert "325.125" in data["result_description"]
    assert data["value"] == "325.125"


#: The seed's own example (004: "Формирование POST-запроса"), verbatim, as 1C's ЗаписьJSON sends it.
SEED_RECEIPT = (
    '{\n\t"DocNumber": "ТР00-003655",\n\t"DocDate": "06.10.2017",\n\t"DocSumm": 1950,\n\t"Goods": {\n'
    '\t\t"Position_1": {\n\t\t\t"Name": "Наименование товара",\n\t\t\t"Price": 325.12,\n'
    '\t\t\t"Quantity": 6,\n\t\t\t"Tax": 18,\n\t\t\t"PositionSumm": 1950\n\t\t}\n\t}\n}'
).encode()


def test_seed_example_is_fiscalised_by_default_with_a_line_discount(testapp, emulator):
    """Цена 325.12 × 6 = 1950.72, Сумма 1950: in 1C the price is before the line discount, the
    sum after it, so the 72 kopecks are that line's discount and the receipt totals 1950."""
    data = post(testapp, SEED_RECEIPT, status=200).json
    assert (data["result_code"], data["doc_number"]) == (0, "ТР00-003655")
    assert data["check_number"] >= 1
    (doc,) = receipts(emulator)
    assert doc["total"] == 195000
    item = doc["items"][0]
    assert (item["price"], item["amount"], item["tax"]) == (32512, 195000, LEGACY_RATE)


def test_deploy_demo_receipt_is_the_seed_example_verbatim():
    demo = (Path(__file__).parent.parent / "deploy" / "demo-receipt.json").read_bytes()
    assert json.loads(demo) == json.loads(SEED_RECEIPT)


def test_line_discount_refused_when_switched_off_and_the_error_names_the_setting(app_config, emulator, request):
    app_config["ONEC_LINE_DISCOUNTS"] = False
    testapp = request.getfixturevalue("testapp")
    data = post(testapp, SEED_RECEIPT, status=422).json
    assert (data["result_code"], data["field"]) == (ResultCode.VALIDATION, "Goods.Position_1.PositionSumm")
    assert "1950.72" in data["result_description"]
    assert "ONEC_LINE_DISCOUNTS" in data["result_description"]
    assert emulator.documents() == []


def test_line_sum_above_price_times_quantity_is_refused_even_with_line_discounts(testapp, emulator):
    body = document(number="ТР00-003656")
    body["DocSumm"] = 1951
    body["Goods"]["Position_1"].update(PositionSumm=1951)
    assert post(testapp, body, status=422).json["field"] == "Goods.Position_1.PositionSumm"
    assert emulator.documents() == []


def test_changed_rate_and_text_are_logged(testapp, emulator, caplog):
    """18 % becoming today's rate and «» printing as "" are not silent: the service log says so."""
    caplog.set_level(logging.INFO, logger="kktapp")
    # A name no other test uses: the codec logs each changed text once per process.
    name = "Чай «Цейлон» — только в этом тесте"
    body = document(position(name=name, tax=18), position("Кофе", "100", "1", tax=18), number="ТР00-log")
    post(testapp, body, status=200)
    lines = [r.getMessage() for r in caplog.records]
    legacy = [m for m in lines if "устаревшая ставка НДС 18 (поле Tax)" in m and LEGACY_RATE in m]
    assert len(legacy) == 1, lines  # once a receipt, not once a line
    assert any("текст для ККТ изменён" in m and name in m and on_device(name) in m for m in lines), lines


def test_legacy_tax_refused_when_configured(app_config, emulator, request):
    app_config["ACCEPT_LEGACY_VAT"] = False
    testapp = request.getfixturevalue("testapp")
    data = post(testapp, document(position(tax=18)), status=422).json
    assert data["field"] == "Goods.Position_1.Tax"
    assert "устаревшая ставка" in data["result_description"]
    assert emulator.documents() == []


@pytest.mark.parametrize(
    "raw",
    [b"", b"DocNumber=1&DocSumm=100", b'{"DocNumber": ', '{"a": "Чай"}'.encode("cp1251"), b"[1, 2]", b"null"],
    ids=["empty", "form", "truncated", "cp1251", "array", "null"],
)
def test_body_that_is_not_a_document_gets_a_json_answer(testapp, emulator, raw):
    res = post(testapp, raw, status=422)
    assert res.content_type == "application/json"
    data = res.json
    assert_answer_shape(data)
    assert data["result_code"] == ResultCode.VALIDATION
    assert emulator.documents() == []


# --------------------------------------------------------------------------- device trouble


def test_no_paper(testapp, emulator):
    emulator.paper_out()
    res = post(testapp, document(), status="5*")
    data = res.json
    assert_answer_shape(data)
    assert data["result_code"] == 0x67
    assert "бумаг" in data["result_description"].lower()
    assert data["check_number"] == 0
    assert res.status_int == 502
    assert receipts(emulator) == []


def test_paper_runs_out_after_fiscalisation(testapp, emulator):
    """Fiscalised, but the paper copy failed: 1C must record the receipt (result_code 0), and is
    told that the service prints no copy on this device (atol model.REPRINT_OWED_COPY)."""
    post(testapp, document(number="ТР00-1"), status=200)
    emulator.paper_out(before="close_receipt")
    res = post(testapp, document(number="ТР00-2"), status=200)
    data = res.json
    assert data["result_code"] == 0
    assert data["check_number"] == 2
    assert data["result_description"] == Reasons.NO_COPY
    assert len(receipts(emulator)) == 2


def test_no_paper_then_retry_after_loading_paper(testapp, emulator):
    """A failed receipt was not fiscalised: the same DocNumber may be sent again."""
    emulator.paper_out()
    post(testapp, document(), status=502)
    emulator.paper_in()
    data = post(testapp, document(), status=200).json
    assert data["result_code"] == 0
    assert len(receipts(emulator)) == 1


def test_device_off(app_config, emulator, request):
    app_config["KKT_WAIT_TIMEOUT"] = 5
    testapp = request.getfixturevalue("testapp")
    emulator.power_off()
    # Accepted and queued: 202 with the code that tells 1C not to punch it by hand.
    res = post(testapp, document(), status=202)
    data = res.json
    assert_answer_shape(data)
    assert data["result_code"] == ResultCode.QUEUED
    assert "не пробивайте" in data["result_description"]
    assert "нет связи с ККТ" in data["result_description"]
    assert data["check_number"] == 0
    assert data["state"] == "queued"

    # Kept, not lost: once the device is back the receipt is fiscalised, and 1C's repeat of
    # the same document gets that receipt instead of a second one.
    emulator.power_on()
    app_config["KKT_WAIT_TIMEOUT"] = 20
    again = post(testapp, document(), status=200).json
    assert again["result_code"] == 0
    assert len(receipts(emulator)) == 1


def test_test_mode_fiscalises_nothing(app_config, emulator, request):
    app_config["TEST_MODE"] = True
    testapp = request.getfixturevalue("testapp")
    # The emulator's shift is closed: opening it is a fiscal document, which test mode must not make.
    refused = post(testapp, document(), status=403).json
    assert refused["result_code"] == ResultCode.DISABLED and "TEST_MODE" in refused["result_description"]
    assert emulator.documents() == []
    app = request.getfixturevalue("app")
    assert app.extensions["kkt"].submit("open_shift", wait=10).state == "done"
    data = post(testapp, document(), status=200).json
    assert_answer_shape(data)
    assert data["result_code"] == 0
    assert data["result_description"] == kkt1c.TEST_MODE_TEXT
    assert data["test_mode"] is True
    # 1C stores check_number as the document's receipt number: 0 keeps it "not printed".
    assert data["check_number"] == 0
    assert receipts(emulator) == []


# --------------------------------------------------------------------------- access


@pytest.fixture
def auth_config(app_config):
    app_config.update(
        AUTH_REQUIRED=True,
        USERS={"kassa": {"password_hash": generate_password_hash("kassa-1c-secret"), "role": "cashier"}},
        ONEC_ALLOWED_ADDRESSES=["10.0.0.5"],
    )
    return app_config


def test_auth_required_for_unknown_address(auth_config, emulator, request):
    testapp = request.getfixturevalue("testapp")
    res = post(testapp, document(), status=401)
    assert res.json["result_code"] == ResultCode.UNAUTHORIZED
    assert res.headers["WWW-Authenticate"].startswith("Basic")
    assert emulator.documents() == []


def test_auth_with_password(auth_config, emulator, request):
    testapp = request.getfixturevalue("testapp")
    testapp.authorization = ("Basic", ("kassa", "kassa-1c-secret"))
    assert post(testapp, document(), status=200).json["result_code"] == 0


def test_allowed_address_needs_no_password(auth_config, emulator, request):
    testapp = request.getfixturevalue("testapp")
    data = post(testapp, document(), extra_environ={"REMOTE_ADDR": "10.0.0.5"}, status=200).json
    assert data["result_code"] == 0


def test_status_page_is_public(auth_config, emulator, request):
    testapp = request.getfixturevalue("testapp")
    testapp.get("/kkt", status=200)


# --------------------------------------------------------------------------- wrong URL or method


def test_wrong_method_and_url_answer_json(testapp):
    res = testapp.put("/kkt", params=b"{}", status=405)
    assert res.json["result_code"] != 0 and "метод PUT" in res.json["result_description"]
    res = testapp.post("/kkt/receipt", params=b"{}", status=404)
    assert res.json["result_code"] == ResultCode.NOT_FOUND


# --------------------------------------------------------------------------- status page


def test_status_page_html(testapp, emulator):
    post(testapp, document(), status=200)
    res = testapp.get("/kkt", status=200)
    assert res.content_type == "text/html"
    text = res.text
    assert "Состояние ККТ" in text
    assert "на связи" in text and "АТОЛ 55Ф" in text
    assert emulator.state.serial == "00106201273705" and emulator.state.serial in text  # all 14 digits
    assert __version__ in text
    assert "Смена" in text and "Не отправлено в ОФД" in text
    assert "password" not in text.lower() and "пароль" not in text.lower()


def test_status_json(testapp, emulator):
    post(testapp, document(), status=200)
    res = testapp.get("/kkt", headers={"Accept": "application/json"}, status=200)
    assert res.content_type == "application/json"
    page = res.json
    assert page["version"] == __version__
    dev = page["devices"][0]
    assert dev["device"] == 1
    for key in ("link", "info", "status", "shift", "fn", "last_document", "unsettled", "updated_at"):
        assert key in dev, key
    assert dev["info"]["serial"] == dev["status"]["serial"] == emulator.state.serial
    assert "password" not in res.text.lower()


def test_status_root_for_apache_mount(testapp):
    assert "Состояние ККТ" in testapp.get("/", status=200).text


def test_status_with_device_off_answers_no_link(app_config, emulator, request):
    app_config["KKT_WAIT_TIMEOUT"] = 5
    testapp = request.getfixturevalue("testapp")
    post(testapp, document(number="ТР00-1"), status=200)
    emulator.power_off()
    # A receipt while the device is off: answered 202 "queued" once the owner found the link down.
    post(testapp, document(number="ТР00-2"), status=202)
    text = testapp.get("/kkt", status=200).text
    assert "нет связи с ККТ" in text
    page = testapp.get("/kkt", headers={"Accept": "application/json"}, status=200).json
    assert page["devices"][0]["link"] == "down"
    assert page["devices"][0]["queue"]["queued"] == 1  # the kept receipt waits for the link
    # The last known data is still shown.
    assert page["devices"][0]["info"]["model_name"] in text


def test_status_hides_credentials_in_urls():
    job = make_job("done", result=RESULT)
    testapp = stub_app(job)
    testapp.app.extensions["kkt"].snapshot = lambda device: {
        "device": device,
        "link": "down",
        "link_error": "нет связи с ККТ (rfc2217://admin:s3cret@10.0.0.9:4000): refused",
        "unsettled": [],
    }
    for accept in ("text/html", "application/json"):
        text = testapp.get("/kkt", headers={"Accept": accept}, status=200).text
        assert "s3cret" not in text and "rfc2217://***@10.0.0.9:4000" in text


# --------------------------------------------------------------------------- log


def test_one_log_line_per_request(testapp, emulator, app_config):
    data = post(testapp, document(number="ЛОГ-1"), status=200).json
    post(testapp, document(number=""), status=422)
    with open(app_config["LOG_FILE"], encoding="utf-8") as fh:
        lines = [ln for ln in fh if "kktapp.web.kkt1c" in ln and "1С:" in ln]
    assert len(lines) == 2
    assert "документ=ЛОГ-1" in lines[0]
    assert "сумма=1950.72" in lines[0]
    assert "код=0" in lines[0]
    assert f"ФД={data['fiscal_document_number']}" in lines[0]
    assert " мс" in lines[0]
    assert f"код={ResultCode.VALIDATION}" in lines[1]


def test_log_line_cannot_be_forged(testapp, emulator, app_config):
    forged = "ТР-1\n2026 INFO kktapp.web.kkt1c: 1С: документ=поддельный"
    data = post(testapp, document(number=forged), status=422).json
    assert data["field"] == "DocNumber"
    with open(app_config["LOG_FILE"], encoding="utf-8") as fh:
        lines = [ln for ln in fh if "kktapp.web.kkt1c" in ln]
    assert len(lines) == 1
    assert "документ=ТР-1?2026" in lines[0]
    assert emulator.documents() == []


# --------------------------------------------------------------------------- job states (stub service)


class StubService:
    """Answers submit_receipt with a prepared Job: states the emulator cannot produce on demand."""

    devices = {1: None}
    #: What the real service takes from its driver (the contract checks receipts against it).
    limits = commands.LIMITS

    def __init__(self, job):
        self.job = job
        self.submitted: list[dict] = []

    def submit_receipt(self, receipt, **kw):
        self.submitted.append(kw)
        return self.job

    def snapshot(self, device):
        return {"device": device, "link": "unknown", "link_error": None, "updated_at": None, "unsettled": []}

    def find_jobs(self, kind, keys):
        return {}


def stub_app(job, **config):
    from flask import Flask

    application = Flask("stub", template_folder=str(Path(kkt1c.__file__).parent.parent / "templates"))
    application.config.update(
        {"AUTH_REQUIRED": False, "KKT_WAIT_TIMEOUT": 1, "DEFAULT_PAYMENT": "electronic", **config}
    )
    application.extensions["kkt"] = StubService(job)
    application.register_blueprint(kkt1c.bp)
    return webtest.TestApp(application)


def make_job(state: str, *, result=None, error=None, reason: str = "", reprint: bool = False) -> Job:
    now = dt.datetime.now()
    return Job(
        id="job-1",
        device=1,
        kind="receipt",
        key="ТР00-003655",
        state=state,
        result=result,
        error=error,
        reason=reason,
        created_at=now,
        updated_at=now,
        reprint=reprint,
    )


RESULT = {
    "fiscal_document_number": 17,
    "fiscal_sign": "3522165001",
    "receipt_number": 4,
    "shift_number": 2,
    "datetime": "2026-11-22T10:00:00",
    "total": 195072,
    "fn_number": "9999078900001234",
    "printed": True,
    "test_mode": False,
}


@pytest.mark.parametrize(
    "job, status, code, text",
    [
        (make_job("done", result=RESULT), 200, 0, kkt1c.DONE_TEXT),
        (
            make_job("done", result={**RESULT, "printed": False}, reason=Reasons.REPRINT, reprint=True),
            200,
            0,
            "чек пробит, но не напечатан",
        ),
        (
            make_job("failed", error={"code": 0x67, "message": "Нет бумаги", "step": "закрытие чека"}),
            502,
            0x67,
            "Нет бумаги (шаг: закрытие чека)",
        ),
        (
            make_job("failed", error={"code": ResultCode.LINK_LOST, "message": LinkError.message}),
            503,
            ResultCode.LINK_LOST,
            "нет связи с ККТ",
        ),
        (make_job("unknown", reason=Reasons.INTERRUPTED), 503, ResultCode.UNKNOWN_OUTCOME, "сервис проверит ККТ"),
        # Queued for whatever reason: 202 and "do not punch it by hand", with the reason.
        (make_job("queued", reason=Reasons.LINK_DOWN), 202, ResultCode.QUEUED, "будет отправлен"),
        (make_job("queued", reason=Reasons.HELD), 202, ResultCode.QUEUED, "ждёт выяснения"),
        (make_job("sending"), 202, ResultCode.QUEUED, "не пробивайте"),
    ],
    ids=["done", "reprint", "device-error", "link-failed", "unknown", "queued-no-link", "held", "timeout"],
)
def test_job_states_map_to_answers(job, status, code, text):
    res = post(stub_app(job), document(), status=status)
    data = res.json
    assert_answer_shape(data)
    assert data["result_code"] == code
    assert text in data["result_description"]
    assert data["doc_number"] == "ТР00-003655"
    assert data["check_number"] == (4 if code == 0 else 0)
    if code == 0:
        assert data["fiscal_document_number"] == 17 and data["receipt_datetime"] == "2026-11-22T10:00:00"


def test_submit_arguments():
    testapp = stub_app(make_job("done", result=RESULT), KKT_WAIT_TIMEOUT=7)
    post(testapp, document(Device=1), status=200)
    kw = testapp.app.extensions["kkt"].submitted[0]
    assert kw["key"] == "ТР00-003655 от 06.10.2017" and kw["source"] == "1c" and kw["device"] == 1 and kw["wait"] == 7
    assert len(kw["fingerprint"]) == 64


def test_unexpected_error_is_a_json_500():
    class Broken(StubService):
        def submit_receipt(self, receipt, **kw):
            raise RuntimeError("boom")

    testapp = stub_app(None)
    testapp.app.extensions["kkt"] = Broken(None)
    data = post(testapp, document(), status=500).json
    assert_answer_shape(data)
    assert data["result_code"] == ResultCode.INTERNAL
    assert "boom" not in data["result_description"]


def test_the_received_value_is_shown_as_text():
    err = ValidationFailed("DocNumber", "не так", "ТР00\u00a0003655")
    assert "(получено: «ТР00\u00a0003655»)" in err.message
    assert "'\\t'" in ValidationFailed("DocNumber", "не так", "\t").message
