"""The atol-kkt-service protocol: the seed's messages replayed verbatim, every command, errors.

Two emulated devices, HTTP Basic on (fixtures ``api_app``/``clients`` in conftest.py).
"""

from __future__ import annotations

import base64
import json
import pathlib
import re
import threading
from decimal import Decimal

import pytest
import webtest
from fakes import cash_records

from kktapp.web import compat

DATA = pathlib.Path(__file__).parent / "data" / "atol_kkt_service"
URL = "/api/compat/atol-kkt-service"
#: The seed's order of examples in its readme.
SEED_ORDER = [
    "cash_register_inf", "print_text_cheque", "print_string_list", "open_session", "print_tstring_list",
    "xreport", "zreport", "reset_summary", "tech_reset", "cash_income", "cash_outcome", "income",
    "print_last_cheque_copy", "segment_part_1_of_88", "segment_part_88_of_88",
]
REQUEST_FILES = sorted(p.stem for p in DATA.glob("*.json") if not p.stem.startswith("response_"))


def seed(name: str) -> bytes:
    """A seed example exactly as the readme has it."""
    return (DATA / f"{name}.json").read_bytes()


def message(comand: str, data: object = "", device: int = 1) -> bytes:
    # compat.dumps writes Decimal as a JSON number, as a client's 100.50 would be.
    return compat.dumps({"atol_device_data": {"atol_device_number": device, "atol_operator_password": "30"},
                         "comand": comand, "data": data}).encode()


def post(client: webtest.TestApp, body: bytes, status: int | str = 200) -> dict:
    """POST a message; the answer always has exactly the original's three keys."""
    res = client.post(URL, body, content_type="application/json", status=status)
    data = json.loads(res.body.decode("utf-8"), parse_float=Decimal)
    assert set(data) == {"response", "error", "error_code"}
    if res.status_int == 200:
        assert data["error"] == "" and data["error_code"] == 0, data
    else:
        assert data["response"] == "" and data["error_code"] < 0 and data["error"], data
    return data


@pytest.fixture
def resets_allowed(api_config):
    api_config["ALLOW_DEVICE_RESET"] = True
    return api_config


# --------------------------------------------------------------------------- the contract


def test_every_seed_request_is_in_the_replay_order():
    assert sorted(SEED_ORDER) == REQUEST_FILES


def test_seed_examples_replayed_verbatim_all_succeed(resets_allowed, clients, emulator):
    """The readme's messages in the readme's order, byte for byte, by an admin: all succeed."""
    answers = {name: post(clients.admin, seed(name)) for name in SEED_ORDER}
    assert answers["print_text_cheque"]["response"] == "готово"
    assert answers["segment_part_1_of_88"]["response"] == "принят сегмент 1 из 88"
    docs = emulator.documents()
    kinds = [d["type"] for d in docs]
    assert kinds.count("open_shift") >= 1 and "close_shift" in kinds
    # 49/4F form no FN document (kktapp/atol/model.py, DocType.CASH_IN): the device's own list.
    cash_in = [d for d in cash_records(emulator) if d["type"] == "cash_in"]
    cash_out = [d for d in cash_records(emulator) if d["type"] == "cash_out"]
    assert [d["total"] for d in cash_in] == [10000] and [d["total"] for d in cash_out] == [10000]
    receipts = [d for d in docs if d["type"] == "receipt"]
    assert len(receipts) == 1
    assert receipts[0]["total"] == 201200


@pytest.mark.parametrize("name", [n for n in SEED_ORDER if n not in ("reset_summary", "tech_reset")])
def test_each_seed_example_succeeds_on_a_fresh_device(name, clients):
    """Each message on its own, by a cashier where the role allows it (reports need an admin)."""
    client = clients.admin if name in ("xreport", "zreport") else clients.cashier
    if name in ("zreport", "cash_outcome", "print_last_cheque_copy"):
        # A Z report needs an open shift, a payout needs cash, a copy needs a document.
        post(clients.cashier, seed("cash_income"))
    post(client, seed(name))


@pytest.mark.parametrize("name", ["reset_summary", "tech_reset"])
def test_seed_reset_examples_succeed_for_admin_when_enabled(name, resets_allowed, clients):
    assert post(clients.admin, seed(name))["response"] == "готово"


def test_cash_register_inf_fields_exactly_as_the_seed(clients, emulator):
    post(clients.cashier, seed("cash_income"))
    answer = post(clients.cashier, seed("cash_register_inf"))["response"]
    expected = json.loads(seed("response_cash_register_inf"))["response"]
    assert list(answer) == list(expected)
    for key, value in expected.items():
        assert type(answer[key]) is type(value) or isinstance(value, int) and isinstance(answer[key], Decimal), key
    assert re.fullmatch(r"\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d", answer["KKMDateTime"])
    assert answer["KKMSum"] == 100
    assert answer["isSessionOpened"] is True and answer["isSessionExceedLimit24"] is False
    assert answer["SessionNumber"] == emulator.state.shift_number
    # The full 14-digit serial (register 22), as in the seed's example, not 3F's last 8 digits.
    assert answer["SerialNumber"] == emulator.state.serial == "00106201273705"
    assert answer["CashRegisterNum"] == 1
    assert answer["isFiskal"] is True


def test_cash_register_inf_money_with_kopecks_is_a_json_number(clients):
    post(clients.cashier, message("CASH_INCOME", Decimal("12.34")))
    res = clients.cashier.post(URL, seed("cash_register_inf"), content_type="application/json")
    assert '"KKMSum": 12.34' in res.body.decode("utf-8")


def test_cash_register_inf_reports_expired_shift(clients, emulator):
    post(clients.cashier, seed("open_session"))
    emulator.advance_clock(25)
    answer = post(clients.cashier, seed("cash_register_inf"))["response"]
    assert answer["isSessionExceedLimit24"] is True


# --------------------------------------------------------------------------- commands


def test_income_nds18_is_todays_general_rate(clients, emulator):
    post(clients.cashier, seed("income"))
    receipt = [d for d in emulator.documents() if d["type"] == "receipt"][-1]
    taxes = [item["tax"] for item in receipt["items"]]
    assert len(taxes) == 6
    assert taxes[1] == taxes[2] != taxes[0]
    assert [i["amount"] for i in receipt["items"]] == [36700, 38900, 29300, 25000, 6000, 65300]
    assert receipt["payments"] == [{"type": "cash", "amount": 201200}]


def test_income_tr_id_is_an_idempotency_key(clients, emulator):
    first = post(clients.cashier, seed("income"))
    again = post(clients.cashier, seed("income"))
    assert first == again
    assert len([d for d in emulator.documents() if d["type"] == "receipt"]) == 1


def test_income_same_tr_id_other_goods_is_a_conflict(clients, emulator):
    post(clients.cashier, seed("income"))
    body = json.loads(seed("income"), parse_float=Decimal)
    body["data"]["goods"][0]["price"] = 368
    body["data"]["check_sm"] = body["data"]["cash_sm"] = Decimal("2013.00")
    res = post(clients.cashier, compat.dumps(body).encode(), status=409)
    assert res["error_code"] == -1009
    assert len([d for d in emulator.documents() if d["type"] == "receipt"]) == 1


def test_income_zero_tr_id_is_not_deduplicated(clients, emulator):
    body = json.loads(seed("income"), parse_float=Decimal)
    body["data"]["tr_id"] = 0
    text = compat.dumps(body).encode()
    post(clients.cashier, text)
    post(clients.cashier, text)
    assert len([d for d in emulator.documents() if d["type"] == "receipt"]) == 2


def _income(goods, **extra) -> dict:
    data = {"header_text": [], "goods": goods, "footer_text": [], "check_sm": 0, "check_discount_sm": 0,
            "type_close": "tcCash", "cash_sm": 0, "tr_id": 0}
    data.update(extra)
    return data


def test_income_discounts_spread_to_the_kopeck(clients, emulator):
    goods = [
        {"name": "Чай", "price": Decimal("33.33"), "kol": 3, "nds": "nds10", "barcode": "", "dep": 1, "discount": 1},
        {"name": "Сахар", "price": Decimal("10.01"), "kol": Decimal("0.5"), "nds": "nds20", "barcode": "", "dep": 0,
         "discount": 0},
    ]
    # 99.99 - 1 + 5.01 (10.01 × 0.5 rounded half up) = 104.00; receipt discount 0.07 → 103.93.
    data = _income(goods, check_sm=Decimal("104.00"), check_discount_sm=Decimal("0.07"), cash_sm=200)
    post(clients.cashier, message("INCOME", data))
    receipt = emulator.documents()[-1]
    assert receipt["total"] == 10393
    assert sum(i["amount"] for i in receipt["items"]) == 10393
    assert receipt["change"] == 20000 - 10393


def test_income_payment_slot_maps_to_electronic_by_default(clients, emulator):
    goods = [{"name": "Хлеб", "price": 45, "kol": 2, "nds": "nds10"}]
    post(clients.cashier, message("INCOME", _income(goods, check_sm=90, type_close="tc1")))
    assert emulator.documents()[-1]["payments"] == [{"type": "electronic", "amount": 9000}]


def test_income_payment_slots_follow_conf(clients, emulator):
    clients.app.config["COMPAT_PAYMENT_TYPES"] = {"tc3": "credit"}
    goods = [{"name": "Хлеб", "price": 45, "kol": 1, "nds": "nds10"}]
    post(clients.cashier, message("INCOME", _income(goods, check_sm=45, type_close="tc3")))
    assert emulator.documents()[-1]["payments"] == [{"type": "credit", "amount": 4500}]


def test_income_header_and_footer_lines_with_fonts(clients, emulator):
    post(clients.cashier, seed("income"))
    assert emulator.documents()[-1]["type"] == "receipt"
    body = json.loads(seed("income"))
    lines = [compat.font_line(t["text"], t["font"]) for t in body["data"]["header_text"]]
    assert [line.align for line in lines] == ["center", "right"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"check_sm": 2000}, "data.check_sm"),
        ({"cash_sm": 1000}, "data.cash_sm"),
        ({"type_close": "tc7"}, "data.type_close"),
        ({"goods": []}, "data.goods"),
    ],
)
def test_income_bad_data_refused_before_the_device(change, field, clients, emulator):
    body = json.loads(seed("income"), parse_float=Decimal)
    body["data"].update(change)
    before = len(emulator.documents())
    res = post(clients.cashier, compat.dumps(body).encode(), status=422)
    assert field in res["error"]
    assert res["error_code"] == -1001
    assert len(emulator.documents()) == before


def test_income_bad_vat_names_the_position(clients):
    body = json.loads(seed("income"), parse_float=Decimal)
    body["data"]["goods"][2]["nds"] = "nds99"
    res = post(clients.cashier, compat.dumps(body).encode(), status=422)
    assert "data.goods.2.nds" in res["error"]


def test_income_legacy_rate_refused_when_conf_says_so(clients):
    clients.app.config["ACCEPT_LEGACY_VAT"] = False
    res = post(clients.cashier, seed("income"), status=422)
    assert "data.goods.1.nds" in res["error"]


@pytest.fixture
def printed(monkeypatch) -> list:
    """The line lists the compat layer hands to the printer, one list per print."""
    seen: list = []
    real = compat._print

    def spy(device, lines):
        seen.append(lines)
        return real(device, lines)

    monkeypatch.setattr(compat, "_print", spy)
    return seen


def test_print_string_list_splits_crlf(clients, printed):
    post(clients.cashier, seed("print_string_list"))
    text = json.loads(seed("print_string_list"))["data"]["text"]
    assert len(printed[0]) == text.count("\r\n") + 1
    assert printed[0][0].text.strip() == 'Магазин "Детский Мир"'
    assert not any("\r" in line.text for line in printed[0])


def test_print_tstring_list_fonts_only_with_use_print_string(clients, printed):
    post(clients.cashier, seed("print_tstring_list"))
    assert {line.align for line in printed[0]} == {"left"}
    body = json.loads(seed("print_tstring_list"))
    body["data"]["use_print_string"] = True
    body["data"]["text"].append({"text": "Широко", "font": {"b": True, "w": 2, "dh": True, "u": True, "a": 1}})
    post(clients.cashier, json.dumps(body, ensure_ascii=False).encode())
    lines = printed[1]
    assert [line.align for line in lines[:3]] == ["center", "left", "right"]
    assert lines[3].italic and lines[4].inverse
    wide = lines[5]
    assert wide.bold and wide.double_width and wide.double_height and wide.underline and wide.align == "center"


def test_cash_amount_with_kopecks(clients, emulator):
    post(clients.cashier, message("CASH_INCOME", Decimal("150.75")))
    post(clients.cashier, message("CASH_OUTCOME", "50.25"))
    assert [(d["type"], d["total"]) for d in cash_records(emulator)] == [
        ("cash_in", 15075), ("cash_out", 5025)]


@pytest.mark.parametrize("amount", [0, -5, "abc", Decimal("1.005"), {"sum": 1}])
def test_cash_bad_amount(amount, clients, emulator):
    res = post(clients.cashier, message("CASH_INCOME", amount), status=422)
    assert "data" in res["error"]
    assert not emulator.documents()


def test_cash_outcome_more_than_drawer_is_a_device_error(clients):
    post(clients.cashier, seed("cash_income"))
    res = post(clients.cashier, message("CASH_OUTCOME", 500), status=502)
    assert -255 <= res["error_code"] <= -1


def test_print_last_cheque_copy_after_receipt(clients, emulator):
    post(clients.cashier, seed("income"))
    assert post(clients.cashier, seed("print_last_cheque_copy"))["response"] == "готово"


def test_two_devices_at_the_same_time(clients, emulator, emulator2):
    """Sales on devices 1 and 2 in parallel threads; each lands on its own device."""
    results: dict[int, dict] = {}

    def sell(device: int) -> None:
        body = json.loads(seed("income"), parse_float=Decimal)
        body["atol_device_data"]["atol_device_number"] = device
        body["data"]["tr_id"] = 5000 + device
        client = webtest.TestApp(clients.app, extra_environ={"REMOTE_ADDR": "192.0.2.10"})
        client.authorization = clients.cashier.authorization
        res = client.post(URL, compat.dumps(body).encode(),
                          content_type="application/json")
        results[device] = res.json

    threads = [threading.Thread(target=sell, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results[1]["error_code"] == 0 and results[2]["error_code"] == 0
    for emu in (emulator, emulator2):
        assert [d["total"] for d in emu.documents() if d["type"] == "receipt"] == [201200]
    inf2 = post(clients.cashier, message("CASH_REGISTER_INF", device=2))["response"]
    assert inf2["SerialNumber"] == "00106201279999" and inf2["CashRegisterNum"] == 2


# --------------------------------------------------------------------------- SEGMENT


def _segments(body: bytes, size: int, guid: str = "{F0A21076-1A6B-42BA-B8FE-6C0D5C122F42}") -> list[bytes]:
    text = base64.b64encode(body).decode()
    parts = [text[i:i + size] for i in range(0, len(text), size)]
    return [message("SEGMENT", {"segment_guid": guid, "segment_num": n, "segment_count": len(parts), "text": part})
            for n, part in enumerate(parts, 1)]


def test_segment_income_out_of_order_runs_once_complete(clients, emulator):
    parts = _segments(seed("income"), 20)
    assert len(parts) > 10
    order = list(range(len(parts)))[::-1]
    order[0], order[3] = order[3], order[0]
    answers = [post(clients.cashier, parts[i]) for i in order]
    assert all(a["response"].startswith("принят сегмент") for a in answers[:-1])
    assert answers[-1]["response"] == "готово"
    receipts = [d for d in emulator.documents() if d["type"] == "receipt"]
    assert [r["total"] for r in receipts] == [201200]


def test_segment_parts_survive_in_the_shared_store(clients, api_app, emulator):
    """Parts go to SQLite, so another process (another store object on the same file) sees them."""
    parts = _segments(seed("cash_register_inf"), 16, guid="g-1")
    for p in parts[:-1]:
        post(clients.cashier, p)
    with api_app.app_context():
        path = compat.segments_path(api_app.config["JOURNAL_PATH"])
    other = compat.SegmentStore(path)
    assert other.pending() == len(parts) - 1
    last = post(clients.cashier, parts[-1])
    assert last["response"]["CashRegisterNum"] == 1
    assert other.pending() == 0


def test_segment_store_expires_incomplete_sets(tmp_path, monkeypatch):
    store = compat.SegmentStore(str(tmp_path / "seg.sqlite3"))
    clock = [1000.0]
    monkeypatch.setattr(compat.time, "time", lambda: clock[0])
    assert store.add("a", 1, 2, "eyJ", ttl=60) is None
    clock[0] += 61
    assert store.add("b", 1, 2, "xx", ttl=60) is None
    assert store.pending() == 1
    # The lost part 1 of "a" expired: part 2 alone does not complete it.
    assert store.add("a", 2, 2, "9In0=", ttl=60) is None


def test_segment_store_duplicate_part_is_idempotent(tmp_path):
    store = compat.SegmentStore(str(tmp_path / "seg.sqlite3"))
    assert store.add("a", 1, 2, "AB", ttl=600) is None
    assert store.add("a", 1, 2, "AB", ttl=600) is None
    assert store.add("a", 2, 2, "CD", ttl=600) == "ABCD"
    assert store.pending() == 0


def test_segment_count_mismatch_refused(clients):
    post(clients.cashier, message("SEGMENT", {"segment_guid": "x", "segment_num": 1, "segment_count": 3,
                                               "text": "eyJh"}))
    res = post(clients.cashier, message("SEGMENT", {"segment_guid": "x", "segment_num": 2, "segment_count": 4,
                                                     "text": "eyJh"}), status=422)
    assert "segment_count" in res["error"]


@pytest.mark.parametrize(
    "data, fragment",
    [
        ({"segment_guid": "y", "segment_num": 3, "segment_count": 2, "text": "eyJh"}, "segment_num"),
        ({"segment_guid": "y", "segment_num": 1, "segment_count": 1, "text": "!!!"}, "base64"),
        ({"segment_guid": "y", "segment_num": 1, "segment_count": 1,
          "text": base64.b64encode(b"not json").decode()}, "не JSON"),
        ({"segment_guid": "y", "segment_num": 1, "segment_count": 1,
          "text": base64.b64encode(message("SEGMENT", {})).decode()}, "SEGMENT"),
    ],
)
def test_segment_bad_parts(data, fragment, clients):
    res = post(clients.cashier, message("SEGMENT", data), status=422)
    assert fragment in res["error"]


def test_segment_cp1251_command(clients):
    body = message("PRINT_STRING_LIST", {"text": "Привет\r\nмир"}).decode().encode("cp1251")
    parts = _segments(body, 40, guid="cp")
    answers = [post(clients.cashier, p) for p in parts]
    assert answers[-1]["response"] == "готово"


def test_segmented_command_checks_its_own_role(clients):
    parts = _segments(seed("zreport"), 16, guid="z")
    for p in parts[:-1]:
        post(clients.cashier, p)
    res = post(clients.cashier, parts[-1], status=403)
    assert res["error_code"] == -1011


# --------------------------------------------------------------------------- errors and access


def test_unknown_command(clients):
    res = post(clients.cashier, message("MAKE_COFFEE"), status=400)
    assert (res["response"], res["error_code"]) == ("", -1)
    assert res["error"].startswith("Неизвестная команда; допустимые команды: CASH_REGISTER_INF, ")
    assert all(name in res["error"] for name in ("INCOME", "ZREPORT", "SEGMENT", "PRINT_LAST_CHEQUE_COPY"))


def test_unknown_device(clients):
    res = post(clients.cashier, message("CASH_REGISTER_INF", device=7), status=404)
    assert res == {"response": "", "error": "Устройство с номером 7 не найдено", "error_code": -1}


@pytest.mark.parametrize("body", [b"", b"not json", b"[1, 2]", b'{"data": ""}'])
def test_malformed_messages(body, clients):
    res = post(clients.cashier, body, status=422)
    assert res["error_code"] == -1001


def test_no_credentials_refused_with_challenge(clients):
    res = clients.anon.post(URL, seed("cash_register_inf"), content_type="application/json", status=401)
    assert res.headers["WWW-Authenticate"].startswith('Basic realm="kkt"')
    assert res.json["response"] == "" and res.json["error_code"] == -1010
    assert "логин" in res.json["error"]


def test_wrong_password_refused(clients):
    client = clients.as_user("kassa", "wrong-password")
    res = client.post(URL, seed("cash_register_inf"), content_type="application/json", status=401)
    assert res.json["error"] == "неверный логин или пароль"


@pytest.mark.parametrize("name", ["xreport", "zreport"])
def test_reports_need_admin(name, clients, emulator):
    res = post(clients.cashier, seed(name), status=403)
    assert res["error_code"] == -1011
    assert "администратор" in res["error"]
    assert not emulator.documents()


@pytest.mark.parametrize("name", ["reset_summary", "tech_reset"])
def test_resets_refused_unless_enabled(name, clients):
    res = post(clients.admin, seed(name), status=403)
    assert res["error_code"] == -1013
    assert "ALLOW_DEVICE_RESET" in res["error"]


@pytest.mark.parametrize("name", ["reset_summary", "tech_reset"])
def test_resets_need_admin_even_when_enabled(name, resets_allowed, clients):
    res = post(clients.cashier, seed(name), status=403)
    assert res["error_code"] == -1011


def test_operator_password_is_ignored(clients):
    body = json.loads(seed("cash_register_inf"))
    body["atol_device_data"]["atol_operator_password"] = "совсем не тот"
    post(clients.cashier, json.dumps(body, ensure_ascii=False).encode())


def test_device_error_is_negative_device_code(clients, emulator):
    emulator.paper_out()
    res = post(clients.cashier, seed("print_text_cheque"), status=502)
    assert -255 <= res["error_code"] <= -1
    assert res["error"]


def test_auth_off_everyone_is_admin(clients):
    clients.app.config["AUTH_REQUIRED"] = False
    post(clients.anon, seed("xreport"))
