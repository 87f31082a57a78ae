"""Property tests (issue 11): generated bad bodies against all three contracts.

Each body is a valid document with one field replaced by a value that field cannot take, or
free-form JSON, or bytes that are not JSON at all. Whatever comes, the answer is a 4xx in the
contract's own error shape, the device receives no command that changes or prints anything,
and no fiscal document is formed.
"""

from __future__ import annotations

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import webtest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hardening import api_error, compat_error, onec_error
from test_poison import DOCUMENT_COMMANDS, count_commands

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from fuzz import Generator, Raw, dumps  # bench/fuzz.py writes JSON with raw literals the same way

FORM = "application/x-www-form-urlencoded;charset=utf-8"
COMPAT = "/api/compat/atol-kkt-service"
SETTINGS = settings(max_examples=400, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --------------------------------------------------------------------------- bad values by kind

controls = st.characters(codec="utf-8", categories=["Cc", "Cf", "Co"]).filter(lambda c: c not in "\t\n\r\x0b\x0c\x85")
surrogates = st.integers(0xD800, 0xDFFF).map(lambda n: Raw(json.dumps(chr(n))))
not_scalars = st.one_of(st.none(), st.booleans(), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
huge_numbers = st.one_of(
    st.integers(25, 999999999).map(lambda e: Raw(f"1e{e}")),
    st.integers(4301, 6000).map(lambda n: Raw("9" * n)),
    st.integers(30, 5000).map(lambda n: Raw("0." + "1" * n)),
    st.just(Raw("1e-999999999")),
)
bad_money = st.one_of(
    not_scalars, huge_numbers, st.text(alphabet="abcxyz!", min_size=1, max_size=5),
    st.integers(-10**6, -1), st.decimals(min_value=Decimal("0.001"), max_value=Decimal(100), places=3).filter(
        lambda d: d != d.quantize(Decimal("0.01"))),
)
bad_quantity = st.one_of(
    not_scalars, huge_numbers, st.just(0), st.integers(-100, -1),
    st.integers(10_000_000, 10**15), st.just(Raw("10000000")),
    st.decimals(min_value=Decimal("0.0001"), max_value=Decimal(10), places=4).filter(
        lambda d: d != d.quantize(Decimal("0.001"))),
)
bad_text = st.one_of(
    not_scalars, surrogates, st.just(""), st.just("   "),
    st.tuples(st.text(max_size=5), controls, st.text(max_size=5)).map("".join),
    st.integers(129, 400).map(lambda n: "я" * n), st.integers(43, 200).map(lambda n: "…" * n),
)
#: A printed line: any length up to the schema's 256 characters is fine, so only longer ones.
bad_line = st.one_of(
    not_scalars, surrogates, st.integers(257, 400).map(lambda n: "я" * n),
    st.tuples(st.text(max_size=5), controls, st.text(max_size=5)).map("".join),
)
bad_vat = st.one_of(not_scalars, huge_numbers, st.sampled_from(["vat99", "НДС-13", "1.5", "", "vat"]),
                    st.integers(23, 99))
any_json = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8), huge_numbers, surrogates),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=6), children,
                                                                                max_size=3)),
    max_leaves=10,
)
garbage_bytes = st.one_of(
    st.binary(max_size=60).filter(lambda b: not b.strip().startswith((b"{", b"["))),
    st.integers(30, 2000).map(lambda n: b"[" * n + b"]" * n),
    st.integers(30, 2000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
    st.just(b'{"DocNumber": "1", "Goods": {'),
)


def mutated(valid: dict, fields: dict[tuple, st.SearchStrategy]) -> st.SearchStrategy:
    """``valid`` with one field (a key path) replaced by a bad value of its kind."""
    return st.one_of(*(st.tuples(st.just(path), strategy) for path, strategy in fields.items())).map(
        lambda path_value: Generator.put(valid, *path_value))


# --------------------------------------------------------------------------- the three contracts

ONEC_VALID = {"DocNumber": "П-1", "DocDate": "06.10.2017", "DocSumm": 10,
              "Goods": {"Position_1": {"Name": "Чай", "Price": 10, "Quantity": 1, "Tax": 22, "PositionSumm": 10}}}
POS = ("Goods", "Position_1")
ONEC_BAD = st.one_of(
    mutated(ONEC_VALID, {
        ("DocNumber",): st.one_of(bad_text.filter(lambda v: not (isinstance(v, str) and v.strip()
                                                                  and v.isprintable() and len(v) <= 128))),
        ("DocDate",): st.one_of(not_scalars, st.sampled_from(["2017-10-06", "32.01.2017", "", "06.10"])),
        ("DocSumm",): st.one_of(bad_money, st.integers(11, 10**6)),
        ("Goods",): st.one_of(not_scalars.filter(lambda v: v != {}), st.just({}), st.just({"Position_x": {}})),
        (*POS, "Name"): bad_text,
        (*POS, "Price"): bad_money,
        (*POS, "Quantity"): bad_quantity,
        (*POS, "Tax"): bad_vat,
        (*POS, "PositionSumm"): st.one_of(bad_money, st.integers(12, 10**6)),
        ("Device",): st.one_of(st.integers(2, 10**6), st.just(0), huge_numbers, st.text(max_size=3)),
        ("Extra",): any_json,
    }).map(dumps),
    any_json.map(dumps),
    garbage_bytes,
)

API_VALID = {"items": [{"name": "Чай", "price": "10.00", "quantity": "1", "tax": "vat22"}],
             "payments": [{"type": "cash", "amount": "10.00"}]}
API_BAD = st.one_of(
    mutated(API_VALID, {
        ("items",): st.one_of(not_scalars.filter(lambda v: v is not None), st.just([])),
        ("items", 0, "name"): bad_text,
        ("items", 0, "price"): bad_money,
        ("items", 0, "quantity"): bad_quantity,
        ("items", 0, "tax"): bad_vat,
        ("items", 0, "department"): st.one_of(st.integers(100, 10**9), st.integers(-10, -1), huge_numbers),
        ("payments", 0, "amount"): st.one_of(bad_money, st.just(0), st.integers(1, 9)),
        ("payments", 0, "type"): st.one_of(not_scalars, st.sampled_from(["card", "", "CASH!"])),
        ("header",): st.lists(st.fixed_dictionaries({"text": bad_line}), min_size=1, max_size=2),
        ("device",): st.one_of(st.integers(2, 10**6), st.just(0), huge_numbers),
        ("unknown_field",): any_json,
    }).map(dumps),
    any_json.filter(lambda v: not isinstance(v, dict) or "items" not in v).map(dumps),
    garbage_bytes,
)

INCOME_VALID = {"atol_device_data": {"atol_device_number": 1}, "comand": "INCOME",
                "data": {"goods": [{"name": "Чай", "price": "10", "kol": "1", "nds": 22}], "check_sm": "10",
                         "type_close": "tc1"}}
PRINT_VALID = {"atol_device_data": {"atol_device_number": 1}, "comand": "PRINT_TSTRING_LIST",
               "data": {"text": [{"text": "строка"}]}}
CASH_VALID = {"atol_device_data": {"atol_device_number": 1}, "comand": "CASH_INCOME", "data": "10"}
COMPAT_BAD = st.one_of(
    mutated(INCOME_VALID, {
        ("data", "goods", 0, "name"): bad_text,
        ("data", "goods", 0, "price"): bad_money,
        ("data", "goods", 0, "kol"): bad_quantity,
        ("data", "goods", 0, "nds"): bad_vat,
        ("data", "goods", 0, "dep"): st.one_of(st.integers(100, 10**9), huge_numbers),
        ("data", "check_sm"): st.one_of(bad_money, st.integers(11, 10**6)),
        ("data", "tr_id"): st.one_of(st.integers(41, 999999999).map(lambda e: Raw(f"1e{e}")), st.just(Raw("1.5")),
                                     not_scalars.filter(lambda v: v is not None)),
        ("data", "goods"): st.one_of(not_scalars, st.just([])),
        ("comand",): st.one_of(not_scalars, surrogates, st.sampled_from(["", "INCOMEX", "SEGMENTS"])),
        ("atol_device_data", "atol_device_number"): st.one_of(st.integers(2, 10**6), huge_numbers),
    }).map(dumps),
    mutated(PRINT_VALID, {("data", "text", 0, "text"): bad_line,
                          ("data", "text"): st.one_of(st.just([]), not_scalars)}).map(dumps),
    mutated(CASH_VALID, {("data",): st.one_of(bad_money, st.just(0))}).map(dumps),
    any_json.filter(lambda v: not isinstance(v, dict) or "comand" not in v).map(dumps),
    garbage_bytes,
)


def no_device_effect(seen: list[str], emulator: Any) -> None:
    assert not DOCUMENT_COMMANDS.intersection(seen), sorted(set(seen))
    assert not [d for d in emulator.documents() if d["type"] in ("receipt", "cash_in", "cash_out")]


@pytest.fixture
def seen(emulator: Any) -> list[str]:
    return count_commands(emulator)


@SETTINGS
@given(body=ONEC_BAD)
def test_1c_bad_bodies(testapp: webtest.TestApp, emulator: Any, seen: list[str], body: bytes) -> None:
    res = testapp.post("/kkt", params=body, content_type=FORM, status="*")
    assert 400 <= res.status_int < 500, (res.status_int, body[:200], res.body[:300])
    onec_error(res)
    no_device_effect(seen, emulator)


@SETTINGS
@given(body=API_BAD)
def test_api_bad_bodies(testapp: webtest.TestApp, emulator: Any, seen: list[str], body: bytes) -> None:
    res = testapp.post("/api/v1/receipts", params=body, content_type="application/json", status="*")
    assert 400 <= res.status_int < 500, (res.status_int, body[:200], res.body[:300])
    api_error(res)
    no_device_effect(seen, emulator)


@SETTINGS
@given(body=COMPAT_BAD)
def test_compat_bad_bodies(testapp: webtest.TestApp, emulator: Any, seen: list[str], body: bytes) -> None:
    res = testapp.post(COMPAT, params=body, content_type="application/json", status="*")
    assert 400 <= res.status_int < 500, (res.status_int, body[:200], res.body[:300])
    compat_error(res)
    no_device_effect(seen, emulator)
