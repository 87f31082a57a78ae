"""KKM Server's API (POST /Execute) on two emulated registers, with bodies shaped as the public clients send them.

Sources of the shapes (kkmserver-api.md; facts only):

* DJ — DJAlone1992/kkmServerClasses ``src/Command.php`` (``toJson``: Command, KktNumber, Timeout,
  IdCommand of 40 characters, CashierName, ``CashierVatin``, NotPrint), ``src/Cheque.php``
  (``toArray``: ClientAddress, ClientInfo, ClientINN, RRNCode, AuthorizationCode, IsFiscalCheck,
  TypeCheck, CheckStrings, Cash … CashProvision, NumberCopies, InternetMode, PrintSlipAfterCheck,
  PrintSlipForCashier), ``Cheque/Items/Position.php`` (Register with ``internalPaymentType``),
  ``Cheque/Items/Text.php`` (PrintText Text/Font/Intensity), ``Cheque/Enums/Tax.php`` (−1, 0, 5, 7,
  10, 22, 105, 107, 110, 122); its JS posts to ``/Execute`` with ``mode: 'cors'`` and Basic auth.
* AF — alexanderfefelov/kkmserver-api ``reference.conf`` (``http://localhost:5893/Execute/sync``,
  User/user), ``protocol/RegisterCheckRequest.scala`` (NumDevice, InnKkm, KktNumber, CashierVATIN,
  TaxVariant as a string, AdditionalProps, KPP, payments at the top level), ``protocol/package.scala``
  (VAT_18 = 18, VAT_118 = 118; statuses), ``GetRezultResponse.scala`` (``Rezult`` object).
* MU — Muraveiko/kkmserver ``src/kkmserver.js`` (2017): XMLHttpRequest to ``Execute/sync`` with
  no Content-Type (a browser sends text/plain), every CheckStrings element holding one key,
  ``CashLessType1..3``, ``CheckProps``, ``EAN13``, ``VerFFD``; List filters default to
  2100-01-01; ``funSuccess`` takes any non-empty Error for a failure; text marks ``>#N#<``, ``<#N#>``.
* KJ — kkmserver-js ``src/types/command-bodies.ts`` (GetDataCheck ``NumberCopies`` typed as a string).
* ST — salesduck/kkmserver-types ``src/command/request.ts`` (Timeout 1 = asynchronous, 0 = 60 s),
  ``src/commands/*.ts`` (response fields), ``checkStrings/*.ts``.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import time
from decimal import Decimal
from typing import Any

import pytest
import webtest
from fakes import cash_records

from kktapp import create_app
from kktapp.journal import RECEIPT
from kktapp.web.compat import dumps as exact_dumps
from tests.conftest import ApiClients

EXECUTE = "/Execute"
INN_1, INN_2 = "7701234567", "500100732259"


@pytest.fixture
def km_config(api_config: dict[str, Any], emulator, emulator2) -> dict[str, Any]:
    """Two registers with their organisations' INN in conf, CORS for one shop page, an OFD link."""
    api_config["DEVICES"] = [
        {"number": 1, "name": "Касса зала", "url": emulator.url, "inn": INN_1},
        {"number": 2, "name": "Касса сайта", "url": emulator2.url, "inn": INN_2},
    ]
    api_config["KKMSERVER_CORS_ORIGINS"] = ["https://shop.example.ru"]
    api_config["KKMSERVER_RECEIPT_URL"] = "https://check.ofd.ru/rec/{inn}/{reg_number}/{fn}/{fd}/{fp}"
    return api_config


@pytest.fixture(autouse=True)
def no_registration_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registers whose driver does not read the registration: the INN comes from conf DEVICES.

    The emulator answers A4 43 with one INN for every register; tests that need the
    registration path say what it returns (test_inn_from_registration_data…).
    """
    from kktapp.atol.driver import AtolDriver

    monkeypatch.setattr(AtolDriver, "registration", lambda self: {}, raising=False)


@pytest.fixture
def km(km_config: dict[str, Any], request: pytest.FixtureRequest) -> ApiClients:
    """Cashier, admin and anonymous clients of the app built from km_config."""
    return ApiClients(request.getfixturevalue("app"))


def ident(n: int | str) -> str:
    """A 40-character IdCommand, as DJ's Command::isValid demands."""
    return f"{n}".rjust(40, "0")


def receipts_of(emu) -> list[dict]:
    return [d for d in emu.documents() if d["type"] == "receipt"]


# --------------------------------------------------------------------------- request bodies


def dj_check(id_command: str, **changes: Any) -> dict:
    """DJ's Cheque::toJson for one service at 250.50 ₽ and a text line, paid in cash."""
    body = {
        "Command": "RegisterCheck", "KktNumber": "", "Timeout": 60, "IdCommand": id_command,
        "CashierName": "Иванов И.И.", "CashierVatin": "430601071197", "NotPrint": False,
        "ClientAddress": "+79991234567", "ClientInfo": "", "ClientINN": "", "RRNCode": "", "AuthorizationCode": "",
        "IsFiscalCheck": True, "TypeCheck": 0,
        "CheckStrings": [
            {"PrintText": {"Text": "Магазин «Ромашка»", "Font": 1, "Intensity": 15}},
            {"Register": {"Name": "Доставка", "Quantity": Decimal("1.0"), "Price": Decimal("250.5"),
                          "Amount": Decimal("250.5"), "Department": 0, "Tax": 22, "SignMethodCalculation": 4,
                          "SignCalculationObject": 4, "MeasureOfQuantity": 0, "internalPaymentType": 1}},
            {"PrintText": {"Text": "Спасибо за покупку!", "Font": 0, "Intensity": 0}},
        ],
        "Cash": Decimal("250.5"), "ElectronicPayment": 0, "AdvancePayment": 0, "Credit": 0, "CashProvision": 0,
        "NumberCopies": 0, "InternetMode": False, "PrintSlipAfterCheck": False, "PrintSlipForCashier": True,
    }
    body.update(changes)
    return body


def af_check(id_command: str, tax: int = -1, **changes: Any) -> dict:
    """AF's RegisterCheckRequest written by its play-json Writes (Doubles, payments at the top level)."""
    body = {
        "Command": "RegisterCheck", "IdCommand": id_command, "NumDevice": 0, "IsFiscalCheck": True,
        "TypeCheck": 0, "NotPrint": False, "CashierName": "Казакова Н.А.", "CashierVATIN": "430601071197",
        "TaxVariant": "0", "AdditionalProps": [], "KPP": "770101001",
        "CheckStrings": [{"Register": {"Name": "Сапоги женские DF-3099-1", "Quantity": Decimal("2.0"),
                                       "Price": Decimal("100.0"), "Amount": Decimal("200.0"), "Department": 0,
                                       "Tax": tax, "SignMethodCalculation": 4, "SignCalculationObject": 1}}],
        "Cash": Decimal("0.0"), "ElectronicPayment": Decimal("200.0"), "AdvancePayment": Decimal("0.0"),
        "Credit": Decimal("0.0"), "CashProvision": Decimal("0.0"),
    }
    body.update(changes)
    return body


def post(client: webtest.TestApp, body: dict, path: str = EXECUTE, **kw: Any) -> dict:
    """POST one command as DJ's JS does (JSON in UTF-8; Decimal written as a JSON number, no float)."""
    res = client.post(path, exact_dumps(body).encode(), headers={"Content-Type": "application/json; charset=UTF-8"},
                      status=200, **kw)
    assert res.content_type == "application/json"  # always HTTP 200 with JSON, whatever happened
    return json.loads(res.text, parse_float=Decimal)


# --------------------------------------------------------------------------- envelope, access, CORS


def test_unknown_command_is_status_3_naming_it(km):
    """kkmserver-api.md §3: Status 3 is "command or device not found"."""
    answer = post(km.cashier, {"Command": "ValidationMarkingCode", "IdCommand": ident(1)})
    assert answer["Status"] == 3 and "ValidationMarkingCode" in answer["Error"]
    assert answer["Command"] == "ValidationMarkingCode"
    assert post(km.anon, {"Command": "ValidationMarkingCode"})["Status"] == 2  # no password: refused first


@pytest.mark.parametrize("raw", [b"", b"{not json", b"[1, 2]", b'{"NumDevice": 1}'])
def test_bad_body_is_http_200_status_2(km, raw):
    res = km.cashier.post(EXECUTE, raw, headers={"Content-Type": "application/json"}, status=200)
    assert res.json["Status"] == 2 and res.json["Error"]


def test_wrong_role_refused(km, emulator):
    """XReport and ZReport/CloseShift need an admin, as in kkt's other contracts."""
    for command in ("ZReport", "CloseShift", "XReport"):
        answer = post(km.cashier, {"Command": command, "NumDevice": 1, "IdCommand": ident(command)})
        assert answer["Status"] == 2 and "администратор" in answer["Error"], answer
    assert post(km.admin, {"Command": "XReport", "NumDevice": 1, "IdCommand": ident("x")})["Status"] == 0
    assert emulator.documents() == []


def test_no_or_wrong_password_refused(km, emulator):
    assert post(km.anon, {"Command": "List"})["Status"] == 2
    wrong = km.as_user("kassa", "not-the-password")
    answer = post(wrong, dj_check(ident(2)))
    assert answer["Status"] == 2 and "пароль" in answer["Error"]
    assert receipts_of(emulator) == []


def test_cors_preflight_and_answer(km):
    pre = km.anon.options(EXECUTE, headers={
        "Origin": "https://shop.example.ru", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
        "Access-Control-Request-Private-Network": "true"}, status=200)
    assert pre.headers["Access-Control-Allow-Origin"] == "https://shop.example.ru"
    assert "POST" in pre.headers["Access-Control-Allow-Methods"]
    assert pre.headers["Access-Control-Allow-Headers"] == "authorization, content-type"
    assert pre.headers["Access-Control-Allow-Credentials"] == "true"
    assert pre.headers["Access-Control-Allow-Private-Network"] == "true"
    res = km.cashier.post(EXECUTE, b'{"Command": "GetLineLength", "NumDevice": 1}',
                          headers={"Origin": "https://shop.example.ru"}, status=200)
    assert res.headers["Access-Control-Allow-Origin"] == "https://shop.example.ru"
    other = km.anon.options(EXECUTE, headers={"Origin": "https://evil.example",
                                              "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_execute_sync_path_and_get(km):
    """AF posts to /Execute/sync (reference.conf); both paths answer the same way."""
    answer = post(km.cashier, {"Command": "GetLineLength", "NumDevice": 2, "IdCommand": ident(3)},
                  path="/Execute/sync")
    assert answer == {"Command": "GetLineLength", "Status": 0, "Error": "", "Warning": "", "Message": "",
                      "IdCommand": ident(3), "NumDevice": 2, "UnitName": "Касса сайта", "LineLength": 48}


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
@pytest.mark.parametrize("path", [EXECUTE, "/Execute/sync"])
def test_other_methods_answer_json(method, path, km, emulator):
    """Only POST runs a command; another method gets the contract's JSON (HTTP 200, Status 2), not an HTML 405."""
    res = getattr(km.cashier, method)(path, status=200)
    assert res.content_type == "application/json"
    assert res.json["Status"] == 2 and "POST" in res.json["Error"] and method.upper() in res.json["Error"]
    assert emulator.documents() == []


def test_unknown_path_under_execute_answers_json(km):
    res = km.cashier.post("/Execute/async", b'{"Command": "List"}', status=200)
    assert res.content_type == "application/json"
    assert res.json["Status"] == 2 and "/Execute/async" in res.json["Error"] and "POST" in res.json["Error"]


# --------------------------------------------------------------------------- List, GetDataKKT, routing


def test_list_two_registers(km):
    for device in (1, 2):  # List never touches a register: a status read fills each snapshot
        post(km.cashier, {"Command": "GetDataKKT", "NumDevice": device})
    answer = post(km.cashier, {"Command": "List", "IdCommand": ident(4)})
    assert answer["Status"] == 0
    units = {u["NumDevice"]: u for u in answer["ListUnit"]}
    assert set(units) == {1, 2}
    assert units[2]["KktNumber"] == "00106201279999" and units[2]["INN"] == INN_2
    assert units[1]["INN"] == INN_1 and units[1]["NameDevice"] == "Касса зала"
    for unit in units.values():
        assert unit["OnOff"] is True and unit["OnOf"] is True  # AF reads OnOff, ST types OnOf
        for name in ("IdDevice", "TypeDevice", "IdTypeDevice", "Firmware_Version", "IP", "UnitName", "FnNumber",
                     "RegNumber", "NameOrganization", "TaxVariant", "AddDate", "OFD_Error", "OFD_DateErrorDoc",
                     "FN_DateEnd"):
            assert isinstance(unit[name], str), name
        assert isinstance(unit["OFD_NumErrorDoc"], int) and isinstance(unit["PaperOver"], bool)
    only = post(km.cashier, {"Command": "List", "FN_IsFiscal": False})
    assert only["ListUnit"] == []


def test_get_data_kkt_session_state_fn_ofd(km, emulator2):
    def data() -> dict:
        answer = post(km.cashier, {"Command": "GetDataKKT", "NumDevice": 2})
        assert answer["Status"] == 0, answer
        return answer

    first = data()
    info = first["Info"]
    assert info["SessionState"] == 1 and first["LineLength"] == 48
    assert info["KktNumber"] == "00106201279999" and info["InnOrganization"] == INN_2
    assert info["FnNumber"] and info["FN_IsFiscal"] is True and info["FN_DateEnd"] != "0001-01-01T00:00:00"
    assert info["OFD_NumErrorDoc"] == 0 and info["OFD_Error"] == ""
    dt.datetime.strptime(info["DateTimeKKT"], "%Y-%m-%dT%H:%M:%S")
    for name in ("NameOrganization", "TaxVariant", "SenderEmail", "UrlServerOfd", "PortServerOfd", "NameOFD",
                 "UrlOfd", "InnOfd", "RegNumber", "FFDVersion", "FFDVersionFN", "FFDVersionKKT", "AddressSettle",
                 "PlaceSettle", "Firmware_Version"):
        assert isinstance(info[name], str), name  # AF's reader requires all of them, as strings
    post(km.cashier, {"Command": "DepositingCash", "NumDevice": 2, "Amount": Decimal("100.5")})
    emulator2.set_unsent(2)
    opened = data()
    assert opened["Info"]["SessionState"] == 2 and opened["SessionNumber"] == 1
    assert opened["CheckNumber"] == emulator2.documents()[-1]["fd_number"]
    assert opened["Info"]["BalanceCash"] == Decimal("100.50")
    assert opened["Info"]["OFD_NumErrorDoc"] == 2 and opened["Info"]["OFD_Error"]
    emulator2.advance_clock(25)
    assert data()["Info"]["SessionState"] == 3


def test_routing_num_device_zero_kkt_number_inn(km, emulator, emulator2):
    idle = post(km.cashier, {"Command": "GetLineLength", "NumDevice": 0})
    assert idle["NumDevice"] == 1  # both up and idle: the first
    by_serial = post(km.cashier, {"Command": "OpenShift", "KktNumber": "00106201279999", "NumDevice": 0})
    assert by_serial["Status"] == 0 and by_serial["NumDevice"] == 2
    by_inn = post(km.cashier, af_check(ident(5), InnKkm=INN_2))
    assert by_inn["Status"] == 0 and by_inn["NumDevice"] == 2, by_inn
    assert len(receipts_of(emulator2)) == 1 and receipts_of(emulator) == []
    assert post(km.cashier, {"Command": "GetDataKKT", "InnKkm": "0000000000"})["Status"] == 3
    assert post(km.cashier, {"Command": "GetDataKKT", "NumDevice": 7})["Status"] == 3
    assert post(km.cashier, {"Command": "GetDataKKT", "KktNumber": "123"})["Status"] == 3


def test_routing_by_id_device(km, app, emulator, emulator2):
    """ST OpenShift.ts/CloseShift.ts: IdDevice picks the register, as List names it; "" is not given."""
    ids = {u["NumDevice"]: u["IdDevice"] for u in post(km.cashier, {"Command": "List"})["ListUnit"]}
    x = post(km.admin, {"Command": "XReport", "IdDevice": ids[2], "IdCommand": ident("idx")})
    assert x["Status"] == 0 and x["NumDevice"] == 2, x
    assert app.extensions["kkt"].journal.find_by_key("x_report", "kkms:" + ident("idx")).device == 2
    opened = post(km.cashier, {"Command": "OpenShift", "IdDevice": ids[2], "NotPrint": False,
                               "CashierName": "Иванов И.И.", "CashierVATIN": ""})  # kkmserver-js's shape
    assert opened["Status"] == 0 and opened["NumDevice"] == 2
    assert [d["type"] for d in emulator2.documents()] == ["open_shift"]
    assert post(km.cashier, {"Command": "GetLineLength", "IdDevice": ""})["NumDevice"] == 1  # not given: any
    assert post(km.cashier, {"Command": "GetLineLength", "IdDevice": ids[2], "NumDevice": 2})["NumDevice"] == 2
    unknown = post(km.cashier, {"Command": "OpenShift", "IdDevice": "kkt-9"})
    assert unknown["Status"] == 3 and "IdDevice" in unknown["Error"] and "не найдена" in unknown["Error"]
    other = post(km.cashier, {"Command": "OpenShift", "IdDevice": ids[2], "NumDevice": 1})
    assert other["Status"] == 3 and "NumDevice" in other["Error"]
    assert emulator.documents() == [] and len(emulator2.documents()) == 1


def test_num_device_zero_skips_a_register_that_is_down(km, app, emulator, emulator2):
    svc = app.extensions["kkt"]
    emulator.power_off()
    deadline = time.monotonic() + 20
    while svc.snapshot(1).get("link") != "down":
        assert time.monotonic() < deadline, "register 1 never reported its link down"
        time.sleep(0.05)
    answer = post(km.cashier, dj_check(ident(6)))
    assert answer["Status"] == 0 and answer["NumDevice"] == 2
    assert len(receipts_of(emulator2)) == 1


# --------------------------------------------------------------------------- shift and cash


def test_open_shift_x_report_z_report_close_shift(km, emulator):
    opened = post(km.cashier, {"Command": "OpenShift", "NumDevice": 1, "CashierName": "Петрова А.А.",
                               "CashierVATIN": "430601071197", "IdCommand": ident(7)})
    doc = emulator.documents()[-1]
    assert opened["Status"] == 0 and doc["type"] == "open_shift"
    assert opened["CheckNumber"] == doc["fd_number"] and opened["SessionNumber"] == doc["shift_number"]
    assert opened["Info"]["SessionState"] == 2
    assert opened["QRCode"] == (f"t={dt.datetime.fromisoformat(doc['datetime']):%Y%m%dT%H%M}&fn={_fn(km, 1)}"
                                f"&i={doc['fd_number']}&fp={doc['fiscal_sign']}")
    assert "Петрова А.А." in json.dumps(doc, ensure_ascii=False)  # tag 1021 of this report
    assert post(km.admin, {"Command": "XReport", "NumDevice": 1})["Status"] == 0
    z = post(km.admin, {"Command": "ZReport", "NumDevice": 1, "CashierName": "Петрова А.А."})
    assert z["Status"] == 0 and emulator.documents()[-1]["type"] == "close_shift"
    post(km.cashier, {"Command": "OpenShift", "NumDevice": 1})
    closed = post(km.admin, {"Command": "CloseShift", "NumDevice": 1})
    assert closed["Status"] == 0 and closed["SessionNumber"] == 2
    assert [d["type"] for d in emulator.documents()] == ["open_shift", "close_shift", "open_shift", "close_shift"]


def test_ofd_report_is_the_settlement_state_report_formed_once(km, emulator):
    """kkmserver-api.md §5: OfdReport, the FN's «отчёт о текущем состоянии расчётов» (FFD type 21)."""
    body = {"Command": "OfdReport", "NumDevice": 1, "CashierName": "Петрова А.А.", "CashierVATIN": "430601071197",
            "IdCommand": ident("ofd")}
    answer = post(km.admin, body)
    doc = emulator.documents()[-1]
    assert answer["Status"] == 0 and answer["Error"] == "" and doc["type"] == "settlement_report"
    assert answer["CheckNumber"] == doc["fd_number"] and answer["Command"] == "OfdReport"
    assert "Петрова А.А." in json.dumps(doc, ensure_ascii=False)  # tag 1021 of this report
    # A repeat of the IdCommand forms nothing more; the shift was never opened for it.
    assert post(km.admin, body) == answer
    assert [d["type"] for d in emulator.documents()] == ["settlement_report"]
    assert post(km.cashier, {"Command": "GetDataKKT", "NumDevice": 1})["Info"]["SessionState"] == 1


def test_ofd_report_needs_an_admin_like_the_other_reports(km, emulator):
    answer = post(km.cashier, {"Command": "OfdReport", "NumDevice": 1, "IdCommand": ident("ofd-cashier")})
    assert answer["Status"] == 2 and "администратор" in answer["Error"]
    assert emulator.documents() == []


def test_ofd_report_refused_by_the_device_is_a_russian_error_with_its_code(km, emulator):
    emulator.paper_out()
    body = {"Command": "OfdReport", "NumDevice": 1, "IdCommand": ident("ofd-paper")}
    answer = post(km.admin, body)
    # ATOL: «Нет бумаги»; Shtrih-M: «Нет чековой ленты».
    assert answer["Status"] == 2 and ("бумаг" in answer["Error"].lower() or "ленты" in answer["Error"])
    assert isinstance(answer["ErrorCode"], int) and answer["ErrorCode"] > 0
    emulator.paper_in()
    assert post(km.admin, body) == answer  # a failed command is not run again by its repeat
    assert emulator.documents() == []


def test_ofd_report_sends_67_9_in_mode_2(km, emulator, monkeypatch: pytest.MonkeyPatch):
    # [S A] atol4j: 67 with report type 9 in mode 2 is the fiscal settlement-state report.
    from kktapp.atol.emulator import handlers

    seen: list[bytes] = []
    real = handlers.execute

    def record(device: Any, task: bytes, *args: Any) -> Any:
        seen.append(task[2:])  # after the two-byte access password
        return real(device, task, *args)

    monkeypatch.setattr(handlers, "execute", record)
    assert post(km.admin, {"Command": "OfdReport", "NumDevice": 1})["Status"] == 0
    assert bytes.fromhex("67 09") in seen and bytes.fromhex("67 01") not in seen
    assert seen.index(bytes.fromhex("67 09")) > max(i for i, t in enumerate(seen) if t[:2] == b"\x56\x02")


def _fn(km: ApiClients, device: int) -> str:
    return post(km.cashier, {"Command": "GetDataKKT", "NumDevice": device})["Info"]["FnNumber"]


def test_depositing_and_payment_cash(km, emulator, emulator2):
    body = {"Command": "DepositingCash", "KktNumber": "", "Timeout": 60, "IdCommand": ident(8),
            "CashierName": "Иванов И.И.", "CashierVatin": "430601071197", "NotPrint": False,
            "Amount": Decimal("1000.0")}  # DJ's DepositingCash (Command.php + Amount in roubles)
    assert post(km.cashier, body)["Status"] == 0
    out = post(km.cashier, {"Command": "PaymentCash", "NumDevice": 1, "CashierName": "Иванов И.И.",
                            "CashierVATIN": "430601071197", "Amount": Decimal("250.5")})  # AF's shape
    # 4F forms no FN document (kktapp/atol/model.py, DocType.CASH_IN): no document number to give.
    assert out["Status"] == 0 and out["CheckNumber"] == 0
    assert [(d["type"], d["total"]) for d in cash_records(emulator)] == [
        ("cash_in", 100000), ("cash_out", 25050)]
    assert post(km.cashier, {"Command": "PaymentCash", "NumDevice": 2, "Amount": 0})["Status"] == 2
    assert post(km.cashier, {"Command": "PaymentCash", "NumDevice": 2, "Amount": "много"})["Status"] == 2
    for missing in ({}, {"Amount": None}, {"Amount": ""}):
        answer = post(km.cashier, {"Command": "DepositingCash", "NumDevice": 2, **missing})
        assert answer["Status"] == 2 and "Amount" in answer["Error"] and "не указано" in answer["Error"], answer
    assert emulator2.documents() == []


def test_cash_amount_rounded_to_kopecks(km, emulator2):
    """DJ writes sums with five decimals, AF's Doubles carry binary noise: rounded half-up, and the Warning says so."""
    five = post(km.cashier, {"Command": "DepositingCash", "NumDevice": 2, "Amount": "100.00500"})
    assert five["Status"] == 0 and "Amount 100.00500 → 100.01" in five["Warning"], five
    noise = post(km.cashier, {"Command": "PaymentCash", "NumDevice": 2, "Amount": Decimal("0.30000000000000004")})
    assert noise["Status"] == 0 and "Amount" in noise["Warning"] and "0.30" in noise["Warning"]
    exact = post(km.cashier, {"Command": "DepositingCash", "NumDevice": 2, "Amount": "5.00000"})
    assert exact["Status"] == 0 and exact["Warning"] == ""
    assert [(d["type"], d["total"]) for d in cash_records(emulator2)] == [
        ("cash_in", 10001), ("cash_out", 30), ("cash_in", 500)]


# --------------------------------------------------------------------------- RegisterCheck


def test_register_check_dj_answer_from_the_fiscal_result(km, app, emulator):
    answer = post(km.cashier, dj_check(ident(9)))
    assert answer["Status"] == 0, answer
    doc = receipts_of(emulator)[-1]
    assert answer["NumDevice"] == 1 and answer["Command"] == "RegisterCheck" and answer["IdCommand"] == ident(9)
    assert answer["CheckNumber"] == doc["fd_number"]
    assert answer["SessionNumber"] == doc["shift_number"] and answer["SessionCheckNumber"] == doc["receipt_number"]
    fn = _fn(km, 1)
    when = dt.datetime.fromisoformat(doc["datetime"])
    assert answer["QRCode"] == f"t={when:%Y%m%dT%H%M}&s=250.50&fn={fn}&i={doc['fd_number']}" \
                               f"&fp={doc['fiscal_sign']}&n=1"
    assert answer["URL"].startswith(f"https://check.ofd.ru/rec/{INN_1}/")
    assert answer["URL"].endswith(f"/{fn}/{doc['fd_number']}/{doc['fiscal_sign']}")
    assert answer["Cash"] == Decimal("250.50") and answer["ElectronicPayment"] == 0
    assert doc["items"] == [{"name": "Доставка", "price": 25050, "quantity": "1", "amount": 25050, "tax": "vat22",
                             **{k: v for k, v in doc["items"][0].items()
                                if k not in ("name", "price", "quantity", "amount", "tax")}}]
    assert doc["customer_contact"] == "+79991234567"
    job = app.extensions["kkt"].journal.find_by_key(RECEIPT, "kkms:" + ident(9))
    payload = job.payload["receipt"]
    assert [line["text"] for line in payload["header"]] == ["Магазин «Ромашка»"]
    assert payload["header"][0]["double_width"] and payload["header"][0]["bold"]
    assert [line["text"] for line in payload["footer"]] == ["Спасибо за покупку!"]
    assert payload["cashier_name"] == "Иванов И.И." and payload["cashier_inn"] == "430601071197"


TYPE_CHECKS = {0: "sell", 1: "sell_return", 2: "sell_correction", 3: "sell_return_correction", 10: "buy",
               11: "buy_return", 12: "buy_correction", 13: "buy_return_correction"}
#: The QR code's n (tag 1054): corrections carry their base's sign.
TAG1054 = {0: 1, 1: 2, 2: 1, 3: 2, 10: 3, 11: 4, 12: 3, 13: 4}


def test_every_type_check(km, emulator):
    post(km.cashier, {"Command": "DepositingCash", "NumDevice": 1, "Amount": 10000})  # cash to pay out from
    for type_check, name in TYPE_CHECKS.items():
        body = dj_check(ident(f"t{type_check}"), TypeCheck=type_check)
        if type_check in (2, 3, 12, 13):
            body.update(CorrectionType=1, CorrectionBaseDate="2026-01-15T10:30:00", CorrectionBaseNumber="ФНС-12")
        answer = post(km.cashier, body)
        assert answer["Status"] == 0, (type_check, answer)
        doc = receipts_of(emulator)[-1]
        assert doc["receipt_type"] == name and answer["CheckNumber"] == doc["fd_number"]
        assert answer["QRCode"].endswith(f"&n={TAG1054[type_check]}")
    assert len(receipts_of(emulator)) == len(TYPE_CHECKS)
    missing = post(km.cashier, dj_check(ident("tc"), TypeCheck=2))
    assert missing["Status"] == 2 and "CorrectionBaseDate" in missing["Error"]
    bad = post(km.cashier, dj_check(ident("tb"), TypeCheck=4))
    assert bad["Status"] == 2 and "TypeCheck" in bad["Error"]


TAXES = {-1: "none", 0: "vat0", 5: "vat5", 7: "vat7", 10: "vat10", 22: "vat22", 105: "vat105", 107: "vat107",
         110: "vat110", 122: "vat122", 20: "vat22", 120: "vat122", 18: "vat22", 118: "vat122"}


def test_every_tax_value(km, emulator2):
    """DJ's 2026 values directly; 20/120 (ST, AF) and 18/118 (AF) mean the general rate on the receipt date.

    Under УСН доход (TaxVariant 1): the one system where every rate, 5 % and 7 % too, may appear.
    """
    strings = [{"Register": {"Name": f"Товар НДС {tax}", "Quantity": 1, "Price": 10, "Amount": 10, "Tax": tax}}
               for tax in TAXES]
    body = af_check(ident(10), CheckStrings=strings, NumDevice=2, ElectronicPayment=10 * len(TAXES), TaxVariant="1")
    answer = post(km.cashier, body)
    assert answer["Status"] == 0, answer
    assert [item["tax"] for item in receipts_of(emulator2)[-1]["items"]] == list(TAXES.values())


@pytest.mark.parametrize("tax", [5, 7, 105, 107])
def test_usn_rates_refused_under_osn(tax, km, emulator2):
    """5 % and 7 % are УСН rates (fiscal-rules.md §1): with TaxVariant 0 (ОСН) the receipt never reaches the KKT."""
    strings = [{"Register": {"Name": "Чай", "Quantity": 1, "Price": 10, "Amount": 10, "Tax": 22}},
               {"Register": {"Name": "Кофе", "Quantity": 1, "Price": 10, "Amount": 10, "Tax": tax}}]
    answer = post(km.cashier, af_check(ident(f"osn{tax}"), CheckStrings=strings, NumDevice=2, ElectronicPayment=20))
    assert answer["Status"] == 2 and "CheckStrings.1.Register.Tax" in answer["Error"], answer
    assert "УСН" in answer["Error"]
    assert not receipts_of(emulator2)


def test_old_rates_on_a_correction_of_2025(km, emulator2):
    """A correction of a 2025 sale keeps 20 % and 20/120: the corrected settlement's date decides."""
    strings = [{"Register": {"Name": "Товар", "Quantity": 1, "Price": 10, "Amount": 10, "Tax": tax}}
               for tax in (20, 120, 18)]
    body = af_check(ident(11), CheckStrings=strings, NumDevice=2, TypeCheck=2, ElectronicPayment=30,
                    CorrectionType=0, CorrectionBaseDate="2025-12-20T12:00:00")
    assert post(km.cashier, body)["Status"] == 0
    assert [i["tax"] for i in receipts_of(emulator2)[-1]["items"]] == ["vat20", "vat120", "vat20"]


def test_order_number_of_a_self_correction_is_left_out_with_a_warning(km, emulator2):
    """1179 is the FNS order's number (fiscal-rules.md §2): a correction on one's own initiative
    with CorrectionBaseNumber filled is fiscalised without it, and the Warning says so."""
    strings = [{"Register": {"Name": "Товар", "Quantity": 1, "Price": 10, "Amount": 10, "Tax": 22}}]
    body = af_check(ident(15), CheckStrings=strings, NumDevice=2, TypeCheck=2, ElectronicPayment=10,
                    CorrectionType=0, CorrectionBaseDate="2026-01-20T12:00:00", CorrectionBaseNumber="акт 7")
    answer = post(km.cashier, body)
    assert answer["Status"] == 0, answer
    assert "CorrectionBaseNumber" in answer["Warning"] and "1179" in answer["Warning"]
    attributes = receipts_of(emulator2)[-1]["attributes"]
    assert attributes["1173"] == 0 and attributes["1174"] == {"1178": "2026-01-20"}, attributes


def test_22_refused_on_a_correction_of_2025(km, emulator2):
    """22 % came into force on 01.01.2026: a correction of a 2025 sale is made at 20 % (fiscal-rules.md §1)."""
    strings = [{"Register": {"Name": "Товар", "Quantity": 1, "Price": 10, "Amount": 10, "Tax": 22}}]
    body = af_check(ident(12), CheckStrings=strings, NumDevice=2, TypeCheck=2, ElectronicPayment=10,
                    CorrectionType=0, CorrectionBaseDate="2025-12-20T12:00:00")
    answer = post(km.cashier, body)
    assert answer["Status"] == 2 and "CheckStrings.0.Register.Tax" in answer["Error"], answer
    assert not receipts_of(emulator2)


def test_credit_payment_keeps_20(km, emulator2):
    """A 2025 credit sale paid in 2026 (1214 = 7) is receipted at 20 % (FNS letter АБ-4-20/11248@)."""
    strings = [{"Register": {"Name": "Оплата долга", "Quantity": 1, "Price": 10, "Amount": 10, "Tax": tax,
                             "SignMethodCalculation": method}} for tax, method in ((20, 7), (120, "7"), (20, 4))]
    answer = post(km.cashier, af_check(ident(13), CheckStrings=strings, NumDevice=2, ElectronicPayment=30))
    assert answer["Status"] == 0, answer
    assert [i["tax"] for i in receipts_of(emulator2)[-1]["items"]] == ["vat20", "vat120", "vat22"]


def test_cashier_inn_without_a_name_is_left_out_with_a_warning(km, emulator2):
    """CashierVATIN alone: the settings' cashier signs the receipt and the shift report, and the
    INN (another person's, as far as the service can tell) is not sent with that name; the
    Warning says so. Before, it was dropped silently."""
    answer = post(km.cashier, af_check(ident(16), NumDevice=2, ElectronicPayment=200, CashierName="",
                                       CashierVATIN="430601071197"))
    assert answer["Status"] == 0 and "CashierVATIN" in answer["Warning"], answer
    assert receipts_of(emulator2)[-1]["attributes"].get("1203") != "430601071197"
    closed = post(km.admin, {"Command": "CloseShift", "NumDevice": 2, "CashierVATIN": "430601071197",
                             "IdCommand": ident(17)})
    assert closed["Status"] == 0 and "CashierVATIN" in closed["Warning"], closed


def test_cashier_name_with_control_characters_is_refused(km, emulator2):
    answer = post(km.cashier, af_check(ident(14), NumDevice=2, ElectronicPayment=200, CashierName="Иванов\x1b"))
    assert answer["Status"] == 2 and "CashierName" in answer["Error"], answer
    assert not receipts_of(emulator2)


#: A 2026 return of a 2025 sale is made at 20 % (fiscal-rules.md §1): on returns and their
#: corrections 20 and 120 are kept as given; 18/118 stay old names for the general rate.
RETURN_TAXES = {20: "vat20", 120: "vat120", 22: "vat22", 122: "vat122", 18: "vat22", 118: "vat122"}


@pytest.mark.parametrize("accept_legacy", [True, False])
@pytest.mark.parametrize("type_check", [1, 11, 3, 13])
def test_returns_keep_20_and_120(type_check, accept_legacy, km_config, emulator, request):
    km_config["ACCEPT_LEGACY_VAT"] = accept_legacy
    km = ApiClients(request.getfixturevalue("app"))
    taxes = RETURN_TAXES if accept_legacy else {t: r for t, r in RETURN_TAXES.items() if t not in (18, 118)}
    strings = [{"Register": {"Name": f"Товар НДС {tax}", "Quantity": 1, "Price": 10, "Amount": 10, "Tax": tax}}
               for tax in taxes]
    body = af_check(ident(f"r{type_check}"), CheckStrings=strings, NumDevice=1, TypeCheck=type_check,
                    ElectronicPayment=10 * len(taxes))
    if type_check in (3, 13):  # the correction of a return made in 2026
        body.update(CorrectionType=0, CorrectionBaseDate="2026-01-20T12:00:00")
    answer = post(km.cashier, body)
    assert answer["Status"] == 0, answer
    assert [item["tax"] for item in receipts_of(emulator)[-1]["items"]] == list(taxes.values())


def test_legacy_rates_refused_when_switched_off(km_config, emulator, request):
    km_config["ACCEPT_LEGACY_VAT"] = False
    km = ApiClients(request.getfixturevalue("app"))
    answer = post(km.cashier, af_check(ident(12), tax=20, NumDevice=1))
    assert answer["Status"] == 2 and "CheckStrings.0.Register.Tax" in answer["Error"]
    refund = post(km.cashier, af_check(ident(121), tax=18, NumDevice=1, TypeCheck=1))
    assert refund["Status"] == 2 and "CheckStrings.0.Register.Tax" in refund["Error"]  # 18 is old on returns too
    assert receipts_of(emulator) == []


def test_every_payment_field(km, emulator):
    """Cash with change, card, advance offset (1215), credit (1216), counter-provision (1217)."""
    strings = [{"Register": {"Name": "Товар", "Quantity": 5, "Price": 100, "Amount": 500, "Tax": 22}}]
    body = af_check(ident(13), CheckStrings=strings, NumDevice=1, Cash=Decimal("150.00"), ElectronicPayment=100,
                    AdvancePayment=100, Credit=100, CashProvision=100)
    answer = post(km.cashier, body)
    assert answer["Status"] == 0, answer
    doc = receipts_of(emulator)[-1]
    assert {p["type"]: p["amount"] for p in doc["payments"]} == {
        "cash": 15000, "electronic": 10000, "prepaid": 10000, "credit": 10000, "other": 10000}
    assert doc["change"] == 5000
    assert (answer["Cash"], answer["AdvancePayment"], answer["Credit"], answer["CashProvision"]) == (
        Decimal("150.00"), Decimal("100.00"), Decimal("100.00"), Decimal("100.00"))
    short = post(km.cashier, af_check(ident(14), NumDevice=1, ElectronicPayment=Decimal("199.99")))
    assert short["Status"] == 2 and "меньше суммы чека" in short["Error"]


def dj_position(name: str, price_kopecks: int, thousandths: int, tax: int = 22) -> dict:
    """DJ's Position::toArray: Quantity and Price as strings of 3 and 2 decimals, Amount = price × quantity with 5."""
    return {"Register": {"Name": name, "Quantity": f"{thousandths / 1000:.3f}", "Price": f"{price_kopecks / 100:.2f}",
                         "Amount": f"{price_kopecks * thousandths / 100000:.5f}", "Department": 0, "Tax": tax,
                         "SignMethodCalculation": 4, "SignCalculationObject": 1, "MeasureOfQuantity": 11,
                         "internalPaymentType": 1}}


def test_dj_sums_with_five_decimals_rounded(km, emulator):
    """DJ's Cheque::toArray: Amount and Cash with five decimals ("33.29667"): kopecks half-up, named in the Warning."""
    body = dj_check(ident("dj5"), CheckStrings=[dj_position("Сыр", 41107, 81)], Cash="33.29667",
                    ElectronicPayment="0.00000", AdvancePayment="0.00000", Credit="0.00000", CashProvision="0.00000")
    answer = post(km.cashier, body)
    assert answer["Status"] == 0, answer
    assert "CheckStrings.0.Register.Amount 33.29667 → 33.30" in answer["Warning"]
    assert "Cash 33.29667 → 33.30" in answer["Warning"]
    doc = receipts_of(emulator)[-1]
    assert doc["items"][0]["amount"] == 3330 and doc["items"][0]["quantity"] == "0.081"
    assert doc["payments"] == [{"type": "cash", "amount": 3330}] and answer["Cash"] == Decimal("33.30")


def test_rounded_lines_still_paid_exactly(km, emulator):
    """Two lines of 1.115 ₽ round to 2.24 ₽, DJ's Cash (their exact sum) to 2.23 ₽: the payment takes the kopeck."""
    lines = [dj_position("Гвозди", 100, 1115), dj_position("Шурупы", 100, 1115)]
    answer = post(km.cashier, dj_check(ident("dj6"), CheckStrings=lines, Cash="2.23000"))
    assert answer["Status"] == 0, answer
    assert "Cash = 2.24" in answer["Warning"]
    doc = receipts_of(emulator)[-1]
    assert [i["amount"] for i in doc["items"]] == [112, 112] and doc["payments"] == [{"type": "cash", "amount": 224}]
    card = post(km.cashier, dj_check(ident("dj7"), CheckStrings=lines, Cash=0, ElectronicPayment="2.23000"))
    assert card["Status"] == 0 and receipts_of(emulator)[-1]["payments"] == [{"type": "electronic", "amount": 224}]
    short = post(km.cashier, dj_check(ident("dj8"), CheckStrings=lines, Cash="2.22000"))  # really underpaid
    assert short["Status"] == 2 and "меньше суммы чека" in short["Error"]


def test_af_double_noise_rounded(km, emulator):
    """AF's play-json writes Doubles: 99.99000000000001 is 99.99 ₽."""
    noise = Decimal("99.99000000000001")
    strings = [{"Register": {"Name": "Товар", "Quantity": Decimal("1.0"), "Price": noise, "Amount": noise,
                             "Department": 0, "Tax": 22}}]
    answer = post(km.cashier, af_check(ident("af1"), CheckStrings=strings, NumDevice=1, ElectronicPayment=noise))
    assert answer["Status"] == 0, answer
    for name in ("CheckStrings.0.Register.Price", "CheckStrings.0.Register.Amount", "ElectronicPayment"):
        assert f"{name} 99.99000000000001 → 99.99" in answer["Warning"]
    doc = receipts_of(emulator)[-1]
    assert (doc["items"][0]["price"], doc["items"][0]["amount"], doc["payments"][0]["amount"]) == (9999, 9999, 9999)
    qty = post(km.cashier, af_check(ident("af2"), NumDevice=1, CheckStrings=[{"Register": {
        "Name": "Товар", "Quantity": Decimal("0.30000000000000004"), "Price": 100, "Amount": 30, "Tax": 22}}]))
    assert qty["Status"] == 2 and "Quantity" in qty["Error"]  # the device takes three decimals: not rounded


def test_line_fields_discount_and_taxation(km, app, emulator):
    strings = [{"Register": {"Name": "Гвозди", "Quantity": Decimal("1.5"), "Price": 100, "Amount": 140,
                             "Department": 3, "Tax": 10, "SignMethodCalculation": 1,
                             "SignCalculationObject": 4, "MeasureOfQuantity": 11}}]
    body = af_check(ident(15), CheckStrings=strings, NumDevice=1, TaxVariant="2", ElectronicPayment=140)
    assert post(km.cashier, body)["Status"] == 0
    item = receipts_of(emulator)[-1]["items"][0]
    assert item["amount"] == 14000 and item["quantity"] == "1.5"
    job = app.extensions["kkt"].journal.find_by_key(RECEIPT, "kkms:" + ident(15))
    position = job.payload["receipt"]["positions"][0]
    assert (position["payment_method"], position["payment_object"], position["unit"], position["department"]) == (
        1, 4, 11, 3)
    assert position["discount"] == 1000 and job.payload["receipt"]["taxation"] == 4  # УСН доход − расход
    assert receipts_of(emulator)[-1]["attributes"]["1055"] == 4  # and the device got it as tag 1055
    envd = post(km.cashier, af_check(ident(16), NumDevice=1, TaxVariant=3))
    assert envd["Status"] == 2 and "ЕНВД" in envd["Error"]


def test_place_market_is_tag_1187(km, emulator):
    # ST RegisterCheck.ts: PlaceMarket is "место расчетов, тег ОФД 1187"; it was dropped with a Warning.
    answer = post(km.cashier, dj_check(ident(19), PlaceMarket="kkmserver.ru", NumDevice=1))
    assert answer["Status"] == 0 and "PlaceMarket" not in answer["Warning"], answer
    assert receipts_of(emulator)[-1]["attributes"]["1187"] == "kkmserver.ru"
    too_long = post(km.cashier, dj_check(ident(20), PlaceMarket="я" * 244, NumDevice=1))
    assert too_long["Status"] == 2 and "PlaceMarket" in too_long["Error"]


def test_a_tax_variant_the_register_is_not_registered_for_is_refused_naming_the_field(km, emulator):
    # The driver reads the registration (A4 43) and refuses before the receipt is opened.
    emulator.device.tax_systems = 0x01  # ОСН only
    answer = post(km.cashier, af_check(ident(18), NumDevice=1, TaxVariant="5"))
    assert answer["Status"] == 2 and "TaxVariant" in answer["Error"] and "«патент»" in answer["Error"], answer
    assert receipts_of(emulator) == []


def test_acquiring_fields_accepted_and_ignored(km, emulator):
    body = dj_check(ident(17), PayByProcessing=True, NumDeviceByProcessing=None, ReceiptNumber="TEST-01",
                    RRNCode="", AuthorizationCode="", KeySubLicensing="abc", PrintSlipAfterCheck=True)
    answer = post(km.cashier, body)
    assert answer["Status"] == 0 and "PayByProcessing" in answer["Warning"]
    assert len(receipts_of(emulator)) == 1


@pytest.mark.parametrize("field, value", [
    ("GoodCodeData", {"BarCode": "0104300943734342212413195240818240640291ffd092MDEwNDMwMDk0MzczNDM",
                      "ContainsSerialNumber": True, "AcceptOnBad": False}),
    ("SignCalculationObject", 33),
    ("PackageQuantity", 22),
])
def test_marking_code_fields_refused(field, value, km, emulator):
    body = dj_check(ident(18))
    body["CheckStrings"][1]["Register"][field] = value
    answer = post(km.cashier, body)
    assert answer["Status"] == 2 and "маркировк" in answer["Error"] and field in answer["Error"]
    assert emulator.documents() == []


def test_print_text_barcode_and_copies(km, app, emulator):
    strings = [{"BarCode": {"BarcodeType": "QR", "Barcode": "https://shop.example.ru/order/42"}},
               {"Register": {"Name": "Чай", "Quantity": 1, "Price": 50, "Amount": 50, "Tax": 22}},
               {"PrintImage": {"Image": "Qk0="}}]
    answer = post(km.cashier, dj_check(ident(19), CheckStrings=strings, Cash=50, NumberCopies=1))
    assert answer["Status"] == 0 and "штрих-код" in answer["Warning"] and "PrintImage" in answer["Warning"]
    job = app.extensions["kkt"].journal.find_by_key(RECEIPT, "kkms:" + ident(19))
    assert [line["text"] for line in job.payload["receipt"]["header"]] == ["https://shop.example.ru/order/42"]
    assert app.extensions["kkt"].journal.find_by_key("reprint_last", "kkms:" + ident(19) + ":copy1").state == "done"


def test_non_fiscal_register_check_prints(km, printed, emulator):
    body = {"Command": "RegisterCheck", "NumDevice": 1, "IsFiscalCheck": False,
            "CheckStrings": [{"PrintText": {"Text": "Заказ № 42", "Font": 2}}, {"PrintText": {"Text": "Стол 5"}}]}
    assert post(km.cashier, body)["Status"] == 0
    assert [line.text for line in printed[-1]] == ["Заказ № 42", "Стол 5"]
    assert printed[-1][0].double_height and not printed[-1][0].double_width
    assert emulator.documents() == []


# --------------------------------------------------------------------------- idempotency, Timeout, GetRezult


def test_repeated_id_command_never_prints_twice(km, emulator):
    body = dj_check(ident(20))
    first = post(km.cashier, body)
    again = post(km.cashier, body)
    polled = post(km.cashier, {**body, "Timeout": 5})  # another wait is the same command
    assert first["Status"] == 0 and again == first and polled == first
    assert len(receipts_of(emulator)) == 1
    other = copy.deepcopy(body)
    other["Cash"] = 300
    refused = post(km.cashier, other)
    assert refused["Status"] == 2 and ident(20) in refused["Error"]
    assert len(receipts_of(emulator)) == 1


def test_failed_command_is_not_run_again_by_a_repeat(km, emulator):
    emulator.paper_out()
    body = dj_check(ident(21))
    first = post(km.cashier, body)
    assert first["Status"] == 2 and first["ErrorCode"] and first["Error"]
    emulator.paper_in()
    assert post(km.cashier, body) == first
    assert receipts_of(emulator) == []


def test_timeout_1_then_get_rezult(km, emulator2):
    body = af_check(ident(22), NumDevice=2, Timeout=1)
    first = post(km.cashier, body)
    assert first["Status"] in (1, 4) and "CheckNumber" not in first
    deadline = time.monotonic() + 20
    while True:
        rez = post(km.cashier, {"Command": "GetRezult", "IdCommand": ident(22)})
        assert rez["Command"] == "GetRezult" and rez["Status"] == 0
        if rez["Rezult"]["Status"] not in (1, 4):
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert rez["NumDevice"] == 2 and rez["UnitName"] == "Касса сайта"  # the command's register
    inner = rez["Rezult"]
    doc = receipts_of(emulator2)[-1]
    assert inner["Status"] == 0 and inner["Command"] == "RegisterCheck" and inner["IdCommand"] == ident(22)
    assert inner["CheckNumber"] == doc["fd_number"] and inner["NumDevice"] == 2
    assert post(km.cashier, body) == inner  # the command itself repeated: the stored answer
    assert len(receipts_of(emulator2)) == 1
    unknown = post(km.cashier, {"Command": "GetRezult", "IdCommand": ident("nope")})
    assert unknown["Status"] == 3 and "Rezult" not in unknown and unknown["NumDevice"] == 0
    for missing in ({}, {"IdCommand": ""}, {"IdCommand": None}):
        answer = post(km.cashier, {"Command": "GetRezult", **missing})
        assert answer["Status"] == 2 and "IdCommand" in answer["Error"] and "не указано" in answer["Error"], answer


def test_get_rezult_after_a_restart(km_config, emulator, emulator2, tmp_path):
    """The answer of a command sent with Timeout 1 is there after the service restarts."""
    first_app = create_app(km_config)
    try:
        km = ApiClients(first_app)
        queued = post(km.cashier, af_check(ident(23), NumDevice=1, Timeout=1))
        assert queued["Status"] in (1, 4)
        deadline = time.monotonic() + 20
        while not receipts_of(emulator):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        first_app.extensions["kkt"].stop()
        first_app.extensions["kkt"].journal.close()
    second_app = create_app(km_config)
    try:
        km = ApiClients(second_app)
        rez = post(km.cashier, {"Command": "GetRezult", "IdCommand": ident(23)})
        assert rez["Rezult"]["Status"] == 0 and rez["Rezult"]["CheckNumber"] == receipts_of(emulator)[-1]["fd_number"]
        assert post(km.cashier, af_check(ident(23), NumDevice=1)) == rez["Rezult"]
        assert len(receipts_of(emulator)) == 1
    finally:
        second_app.extensions["kkt"].stop()
        second_app.extensions["kkt"].journal.close()


def test_id_command_generated_when_absent(km, emulator):
    body = dj_check("")
    answer = post(km.cashier, body)
    assert answer["Status"] == 0 and len(answer["IdCommand"]) >= 32
    rez = post(km.cashier, {"Command": "GetRezult", "IdCommand": answer["IdCommand"]})
    assert rez["Rezult"] == answer


# --------------------------------------------------------------------------- the rest of the commands


def test_get_data_check_and_copy(km, printed, emulator):
    post(km.cashier, dj_check(ident(24)))
    doc = receipts_of(emulator)[-1]
    answer = post(km.cashier, {"Command": "GetDataCheck", "NumDevice": 1, "FiscalNumber": 0, "NumberCopies": 1,
                               "IdCommand": ident(25)})
    assert answer["Status"] == 0, answer
    check = answer["RegisterCheck"]
    assert check["FiscalNumber"] == str(doc["fd_number"]) and check["FiscalSign"] == doc["fiscal_sign"]
    assert check["CheckType"] == "Приход" and check["AllSumm"] == Decimal("250.50")
    assert check["Register"] == [{"Name": "Доставка", "Quantity": Decimal("1"), "Price": Decimal("250.50"),
                                  "Amount": Decimal("250.50"), "Tax": 22}]
    assert str(doc["fd_number"]) in answer["Slip"] and answer["QRCode"].endswith("&n=1")
    assert printed[-1][0].text == "КОПИЯ" and any("ФП" in line.text for line in printed[-1])
    by_number = post(km.cashier, {"Command": "GetDataCheck", "NumDevice": 1, "FiscalNumber": doc["fd_number"]})
    assert by_number["RegisterCheck"] == check
    missing = post(km.cashier, {"Command": "GetDataCheck", "NumDevice": 2, "FiscalNumber": 999})
    assert missing["Status"] == 3 and "999" in missing["Error"]


def test_print_document(km, printed, emulator):
    body = {"Command": "PrintDocument", "NumDevice": 1, "IdCommand": ident(26), "CheckStrings": [
        {"PrintText": {"Text": "Добро пожаловать", "Font": 1}},
        {"BarCode": {"BarcodeType": "EAN13", "Barcode": "4601234567893"}}]}
    answer = post(km.cashier, body)
    assert answer["Status"] == 0 and "штрих-код" in answer["Warning"]
    assert [line.text for line in printed[-1]] == ["Добро пожаловать", "4601234567893"]
    assert post(km.cashier, body) == answer and len(printed) == 1  # a repeat prints nothing
    bad = post(km.cashier, {"Command": "PrintDocument", "NumDevice": 1, "CheckStrings": [
        {"Register": {"Name": "x", "Quantity": 1, "Price": 1, "Amount": 1, "Tax": 0}}]})
    assert bad["Status"] == 2 and "RegisterCheck" in bad["Error"]


def test_open_cash_drawer(km, emulator, emulator2):
    answer = post(km.cashier, {"Command": "OpenCashDrawer", "NumDevice": 2, "CashierName": "Иванов"})  # AF's shape
    assert answer["Status"] == 0
    assert emulator2.device.drawer_openings == 1 and emulator.device.drawer_openings == 0


def test_get_line_length_from_conf(km_config, request):
    km_config["DEVICES"][1]["line_length"] = 32
    km = ApiClients(request.getfixturevalue("app"))
    assert post(km.cashier, {"Command": "GetLineLength", "NumDevice": 2})["LineLength"] == 32
    assert post(km.cashier, {"Command": "GetLineLength", "NumDevice": 1})["LineLength"] == 48


@pytest.fixture
def printed(monkeypatch) -> list:
    """The line lists handed to the printer, one list per print job."""
    from kktapp.atol.driver import AtolDriver

    seen: list = []
    real = AtolDriver.print_text

    def spy(self, lines):
        seen.append(list(lines))
        return real(self, lines)

    monkeypatch.setattr(AtolDriver, "print_text", spy)
    return seen



def test_inn_from_registration_data_when_the_driver_reads_it(km, monkeypatch, emulator2):
    """A driver with ``registration()`` (ATOL A4 43) gives the INN; conf ``inn`` is only the fallback."""
    from kktapp.atol.driver import AtolDriver

    @dataclasses.dataclass
    class Registration:  # the ATOL driver's A4 43 answer: inn, rnm, tax_systems (1055 bits), modes
        inn: str
        rnm: str
        tax_systems: int
        modes: int
        registered_at: dt.datetime | None = None

    def registration(self) -> Any:
        if self.url != emulator2.url:
            return {}
        return Registration("7812345678", "0000000001002003", 0x01 | 0x02, 0x20 | 0x01, dt.datetime(2026, 1, 5))

    monkeypatch.setattr(AtolDriver, "registration", registration, raising=False)
    answer = post(km.cashier, {"Command": "GetDataKKT", "InnKkm": "7812345678"})
    assert answer["Status"] == 0 and answer["NumDevice"] == 2
    info = answer["Info"]
    assert (info["InnOrganization"], info["RegNumber"], info["TaxVariant"]) == (
        "7812345678", "0000000001002003", "0,1")
    assert info["InternetMode"] is True and info["EncryptionMode"] is True and info["OfflineMode"] is False
    assert post(km.cashier, {"Command": "GetLineLength", "InnKkm": INN_1})["NumDevice"] == 1  # conf fallback
    assert post(km.cashier, {"Command": "GetLineLength", "InnKkm": INN_2})["Status"] == 3  # registration wins


def test_same_id_command_at_once_from_two_clients(km, emulator):
    import threading

    body = dj_check(ident(30))
    answers: list[dict] = []
    clients = [km.as_user("kassa", "kassa-secret-1", addr=f"192.0.2.{20 + i}") for i in range(4)]
    threads = [threading.Thread(target=lambda c=c: answers.append(post(c, body))) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(answers) == 4 and all(a == answers[0] for a in answers) and answers[0]["Status"] == 0
    assert len(receipts_of(emulator)) == 1


def test_openapi_documents_execute(km):
    spec = km.anon.get("/api/v1/openapi.json").json
    for path in ("/Execute", "/Execute/sync"):
        op = spec["paths"][path]["post"]
        assert "RegisterCheck" in op["requestBody"]["content"]["application/json"]["schema"]["oneOf"][1][
            "properties"]["Command"]["enum"]
        assert list(op["responses"]) == ["200"]


def mu_check(id_command: str) -> dict:
    """MU's KkmCommandCheck after check.t(...).r(...).b(...).setCheckProps(...).fiscalCard()."""
    return {
        "Command": "RegisterCheck", "NumDevice": 0, "IdCommand": id_command, "KeySubLicensing": "", "InnKkm": "",
        "KktNumber": "", "Timeout": 60, "VerFFD": "1.0", "IsFiscalCheck": True, "TypeCheck": 0,
        "CancelOpenedCheck": True, "NotPrint": False, "NumberCopies": 0, "CashierName": "", "ClientAddress": "",
        "TaxVariant": 0, "AdditionalProps": [], "ClientId": "", "KPP": "",
        "CheckProps": [{"Print": True, "PrintInHeader": False, "Teg": 1117, "Prop": "shop@example.ru"}],
        "CheckStrings": [
            {"PrintText": {"Text": ">#0#<ЧЕК"}},
            {"PrintText": {"Text": "Заказ<#0#>№ 42"}},
            {"Register": {"Name": "Товар", "Quantity": 1, "Price": 99, "Amount": 99, "Department": 1, "Tax": 10,
                          "EAN13": "1254789547853"}},
            {"BarCode": {"BarcodeType": "EAN13", "Barcode": "1254789547853"}},
        ],
        "Cash": 0, "CashLessType1": 99, "CashLessType2": 0, "CashLessType3": 0,
    }


def test_muraveiko_check_text_plain_to_execute_sync(km, app, emulator):
    res = km.cashier.post("/Execute/sync", exact_dumps(mu_check(ident(40))).encode(),
                          headers={"Content-Type": "text/plain;charset=UTF-8"}, status=200)
    answer = res.json
    assert answer["Status"] == 0 and answer["Error"] == "", answer  # MU: any Error text means failure
    assert "EAN13" in answer["Warning"] and "CheckProps" in answer["Warning"]
    doc = receipts_of(emulator)[-1]
    assert doc["payments"] == [{"type": "electronic", "amount": 9900}] and doc["items"][0]["tax"] == "vat10"
    receipt = app.extensions["kkt"].journal.find_by_key(RECEIPT, "kkms:" + ident(40)).payload["receipt"]
    assert [line["text"] for line in receipt["header"]] == [
        "ЧЕК".center(48).rstrip(), "Заказ" + " " * (48 - len("Заказ№ 42")) + "№ 42"]
    assert [line["text"] for line in receipt["footer"]] == ["1254789547853", "shop@example.ru"]


def test_muraveiko_list_with_its_default_filters(km):
    body = {"Command": "List", "NumDevice": 0, "IdCommand": "", "KeySubLicensing": "", "InnKkm": "",
            "KktNumber": "", "Timeout": 60, "Active": None, "OnOff": None, "OFD_Error": None,
            "OFD_DateErrorDoc": "2100-01-01T00:00:00", "FN_DateEnd": "2100-01-01T00:00:00",
            "FN_MemOverflowl": None, "FN_IsFiscal": None}
    answer = post(km.cashier, body)
    assert [u["NumDevice"] for u in answer["ListUnit"]] == [1, 2]
    for device in (1, 2):  # List reads snapshots: a status read fills each one's FN expiry date
        post(km.cashier, {"Command": "GetDataKKT", "NumDevice": device})
    assert post(km.cashier, {**body, "FN_DateEnd": "2000-01-01T00:00:00"})["ListUnit"] == []


def test_egais_data_refused(km, emulator):
    body = mu_check(ident(43))
    body["CheckStrings"][2]["Register"]["EGAIS"] = {
        "Barcode": "22N0000154NUCPRZ3R8381461004001003499NKAQ0ZBUVDNV62JQAR69PEV878RO93V", "Ean": "3423290167937",
        "Volume": Decimal("0.75")}
    answer = post(km.cashier, body)
    assert answer["Status"] == 2 and "ЕГАИС" in answer["Error"] and "EGAIS" in answer["Error"]
    empty = mu_check(ident(44))
    empty["CheckStrings"][2]["Register"]["EGAIS"] = {"Barcode": "", "Ean": "", "Volume": 0}  # MU's blank default
    assert post(km.cashier, empty)["Status"] == 0


def test_agent_check_props_refused(km, emulator):
    body = mu_check(ident(41))
    body["CheckProps"] = [{"Print": True, "PrintInHeader": True, "Teg": 1073, "Prop": "+79990000000"}]
    answer = post(km.cashier, body)
    assert answer["Status"] == 2 and "1073" in answer["Error"]
    assert emulator.documents() == []


def test_get_data_check_copies_as_a_string(km, printed):
    post(km.cashier, dj_check(ident(42)))
    answer = post(km.cashier, {"Command": "GetDataCheck", "NumDevice": 1, "FiscalNumber": 0, "NumberCopies": "1"})
    assert answer["Status"] == 0 and printed[-1][0].text == "КОПИЯ"


def test_num_device_zero_by_tax_variant(km, monkeypatch, emulator, emulator2):
    """ST request.ts: TaxVariant also picks the register ("" — any): 1 (УСН доход) is only on register 2."""
    from kktapp.atol.driver import AtolDriver

    def registration(self) -> dict:
        return {"inn": INN_2, "tax_systems": 0x02} if self.url == emulator2.url else {"inn": INN_1, "tax_systems": 0x01}

    monkeypatch.setattr(AtolDriver, "registration", registration, raising=False)
    answer = post(km.cashier, af_check(ident(50), TaxVariant="1"))
    assert answer["Status"] == 0 and answer["NumDevice"] == 2, answer
    assert len(receipts_of(emulator2)) == 1 and receipts_of(emulator) == []
    assert post(km.cashier, af_check(ident(51), TaxVariant=""))["NumDevice"] == 1
    missing = post(km.cashier, af_check(ident(52), TaxVariant=5))
    assert missing["Status"] == 3 and "TaxVariant" in missing["Error"]


def test_list_without_id_command_is_not_recorded(km):
    """List and GetLineLength answer from conf and snapshots: a page polling them fills no registry."""
    plain = post(km.cashier, {"Command": "List"})
    assert post(km.cashier, {"Command": "GetRezult", "IdCommand": plain["IdCommand"]})["Status"] == 3
    kept = post(km.cashier, {"Command": "List", "IdCommand": ident(60)})
    assert post(km.cashier, {"Command": "GetRezult", "IdCommand": ident(60)})["Rezult"] == kept


def test_get_rezult_answers_a_receipt_accepted_before_conf_changed(km, app, emulator):
    """The journalled receipt decides a poll's answer, not today's validation of the old body."""
    first = post(km.cashier, af_check(ident(61), tax=20, NumDevice=1, Timeout=1))
    assert first["Status"] in (1, 4)
    app.config["ACCEPT_LEGACY_VAT"] = False  # the sysadmin switched old rates off meanwhile
    deadline = time.monotonic() + 20
    while (rez := post(km.cashier, {"Command": "GetRezult", "IdCommand": ident(61)})["Rezult"])["Status"] in (1, 4):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert rez["Status"] == 0 and rez["CheckNumber"] == receipts_of(emulator)[-1]["fd_number"]
