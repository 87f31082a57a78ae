"""Bad input never gets a 500 (issue 11): each contract answers 4xx in its own error shape.

Probes from the issue's fuzz report: JSON nested 1,000 deep, quantities like 1e25, money like
1e999999999, lone surrogates (in names and in the echoed DocNumber), numbers of thousands of
digits; unknown paths and malformed path parameters under the API prefixes and /kkt/; the
catch-all handler of each contract writes one log line, not a traceback.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import webtest

from kktapp.errors import ResultCode

FORM = "application/x-www-form-urlencoded;charset=utf-8"
COMPAT = "/api/compat/atol-kkt-service"


# --------------------------------------------------------------------------- the three error shapes


def onec_error(res: webtest.TestResponse) -> dict:
    """The 1C answer: every key, a non-zero result_code, a Russian description."""
    data = json.loads(res.body.decode("utf-8"))
    assert {"check_number", "result_code", "result_description", "doc_number"} <= set(data), data
    assert data["result_code"] != 0 and data["check_number"] == 0 and data["result_description"]
    return data


def api_error(res: webtest.TestResponse) -> dict:
    data = json.loads(res.body.decode("utf-8"))
    assert set(data) == {"error"} and data["error"]["code"] and data["error"]["message"], data
    return data["error"]


def compat_error(res: webtest.TestResponse) -> dict:
    data = json.loads(res.body.decode("utf-8"))
    assert set(data) == {"response", "error", "error_code"} and data["error_code"] < 0 and data["error"], data
    return data


def onec_doc(**over: Any) -> dict:
    pos = {"Name": "Чай", "Price": 10, "Quantity": 1, "Tax": 22, "PositionSumm": 10}
    pos.update(over.pop("pos", {}))
    doc = {"DocNumber": "Х-1", "DocDate": "06.10.2017", "DocSumm": 10, "Goods": {"Position_1": pos}}
    doc.update(over)
    return doc


def raw_with(doc: dict, token: str, literal: str) -> bytes:
    """JSON text of ``doc`` with the string ``token`` replaced by a raw JSON literal."""
    return json.dumps(doc, ensure_ascii=False).replace(json.dumps(token), literal).encode("utf-8")


DEEP = ("[" * 1000 + "]" * 1000).encode()
DEEP_IN_NAME = '{"DocNumber": "1", "Goods": ' + "{\"a\": " * 900 + "1" + "}" * 900 + "}"

#: (name, raw body) that must be refused by 1C with 4xx.
ONEC_PROBES = [
    ("deep-array", DEEP),
    ("deep-object", DEEP_IN_NAME.encode()),
    ("quantity-1e25", raw_with(onec_doc(pos={"Quantity": "Q"}), "Q", "1e25")),
    ("quantity-1e25-string", json.dumps(onec_doc(pos={"Quantity": "1e25"})).encode()),
    ("price-1e999999999", raw_with(onec_doc(pos={"Price": "P"}), "P", "1e999999999")),
    ("sum-minus-exponent", raw_with(onec_doc(DocSumm="S"), "S", "1e-999999999")),
    ("name-lone-surrogate", raw_with(onec_doc(pos={"Name": "N"}), "N", '"\\ud800"')),
    ("docnumber-lone-surrogate", raw_with(onec_doc(DocNumber="D"), "D", '"\\udfff\\ud800"')),
    ("price-5000-digits", raw_with(onec_doc(pos={"Price": "P"}), "P", "9" * 5000)),
    ("price-4000-digits", raw_with(onec_doc(pos={"Price": "P"}), "P", "9" * 4000)),
    ("price-5000-decimals", raw_with(onec_doc(pos={"Price": "P"}), "P", "0." + "1" * 5000)),
    ("name-nul", json.dumps(onec_doc(pos={"Name": "Чай\x00"})).encode()),
    ("name-esc", json.dumps(onec_doc(pos={"Name": "\x1b[2JЧай"})).encode()),
    ("name-rlo", json.dumps(onec_doc(pos={"Name": "Чай\u202eйаЧ"})).encode()),
    ("name-too-long-in-device-bytes", json.dumps(onec_doc(pos={"Name": "…" * 50})).encode()),
    ("no-positions-limit", json.dumps(onec_doc(Goods={f"Position_{i}": {"Name": "Ч", "Price": 1, "Quantity": 1,
                                                                        "Tax": 22, "PositionSumm": 1}
                                                      for i in range(1, 252)}, DocSumm=251)).encode()),
]


@pytest.mark.parametrize("name, body", ONEC_PROBES, ids=[p[0] for p in ONEC_PROBES])
def test_1c_bad_bodies_get_4xx_in_the_1c_shape(testapp: webtest.TestApp, emulator: Any, name: str,
                                               body: bytes) -> None:
    res = testapp.post("/kkt", params=body, content_type=FORM, status="*")
    assert 400 <= res.status_int < 500, (res.status_int, res.body[:300])
    data = onec_error(res)
    assert data["result_code"] == ResultCode.VALIDATION
    assert data["field"]
    assert not [d for d in emulator.documents() if d["type"] == "receipt"]


def test_refusals_name_the_field(testapp: webtest.TestApp) -> None:
    res = testapp.post("/kkt", params=dict(ONEC_PROBES)["name-lone-surrogate"], content_type=FORM, status=422)
    assert onec_error(res)["field"] == "Goods.Position_1.Name"
    res = testapp.post("/kkt", params=dict(ONEC_PROBES)["docnumber-lone-surrogate"], content_type=FORM, status=422)
    data = onec_error(res)
    assert data["field"] == "DocNumber" and data["doc_number"] is None
    res = testapp.post("/kkt", params=dict(ONEC_PROBES)["no-positions-limit"], content_type=FORM, status=422)
    assert onec_error(res)["field"] == "Goods" and "250" in onec_error(res)["result_description"]
    res = testapp.post("/kkt", params=dict(ONEC_PROBES)["name-rlo"], content_type=FORM, status=422)
    assert "U+202E" in onec_error(res)["result_description"]


def test_tabs_and_line_breaks_in_names_become_spaces(testapp: webtest.TestApp, emulator: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    body = json.dumps(onec_doc(pos={"Name": "Чай\tчёрный\r\nкрупный"}), ensure_ascii=False).encode()
    with caplog.at_level(logging.INFO, logger="kktapp.web.fields"):
        res = testapp.post("/kkt", params=body, content_type=FORM)
    assert res.json["result_code"] == 0
    assert "переводы строк заменены пробелами" in caplog.text
    doc = [d for d in emulator.documents() if d["type"] == "receipt"][-1]
    assert "Чай чёрный крупный" in json.dumps(doc, ensure_ascii=False)


API_PROBES = [
    ("deep", DEEP),
    ("quantity-1e25", b'{"items": [{"name": "x", "price": 1, "quantity": 1e25, "tax": "vat22"}],'
                      b' "payments": [{"type": "cash", "amount": 1}]}'),
    ("amount-exp", b'{"items": [{"name": "x", "price": 1e999999999, "tax": "vat22"}],'
                   b' "payments": [{"type": "cash", "amount": 1}]}'),
    ("surrogate", b'{"items": [{"name": "\\ud800", "price": 1, "tax": "vat22"}],'
                  b' "payments": [{"type": "cash", "amount": 1}]}'),
    ("digits", b'{"device": ' + b"1" * 5000 + b"}"),
    ("nul", b'{"items": [{"name": "a\\u0000", "price": 1, "tax": "vat22"}], "payments": [{"type": "cash", '
            b'"amount": 1}]}'),
]


@pytest.mark.parametrize("name, body", API_PROBES, ids=[p[0] for p in API_PROBES])
def test_api_bad_bodies_get_4xx_in_the_api_shape(testapp: webtest.TestApp, name: str, body: bytes) -> None:
    res = testapp.post("/api/v1/receipts", params=body, content_type="application/json", status="*")
    assert 400 <= res.status_int < 500, (res.status_int, res.body[:300])
    assert api_error(res)["code"] == ResultCode.VALIDATION


COMPAT_PROBES = [
    ("deep", DEEP),
    ("tr_id-exp", b'{"comand": "INCOME", "data": {"goods": [{"name": "x", "price": 1, "nds": 22}], "check_sm": 1,'
                  b' "tr_id": 1e999999999}}'),
    ("kol-exp", b'{"comand": "INCOME", "data": {"goods": [{"name": "x", "price": 1, "kol": 1e25, "nds": 22}],'
                b' "check_sm": 1}}'),
    ("surrogate", b'{"comand": "\\ud800", "data": ""}'),
    ("digits", b'{"comand": "CASH_INCOME", "data": ' + b"7" * 5000 + b"}"),
    ("print-esc", b'{"comand": "PRINT_STRING_LIST", "data": {"text": "a\\u001b@"}}'),
    ("print-empty", b'{"comand": "PRINT_STRING_LIST", "data": {"text": "  \\r\\n "}}'),
]


@pytest.mark.parametrize("name, body", COMPAT_PROBES, ids=[p[0] for p in COMPAT_PROBES])
def test_compat_bad_bodies_get_4xx_in_the_compat_shape(testapp: webtest.TestApp, emulator: Any, name: str,
                                                       body: bytes) -> None:
    res = testapp.post(COMPAT, params=body, content_type="application/json", status="*")
    assert 400 <= res.status_int < 500, (res.status_int, res.body[:300])
    compat_error(res)
    assert not [d for d in emulator.documents() if d["type"] in ("receipt", "cash_in")]


def test_api_refuses_an_empty_print_job(testapp: webtest.TestApp) -> None:
    res = testapp.post_json("/api/v1/devices/1/print", {"lines": [{"text": " "}, {"text": ""}]}, status=422)
    assert api_error(res)["field"] == "lines"


# --------------------------------------------------------------------------- paths


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/nothing-here"), ("POST", "/api/v1/devices/abc/cash-in"), ("GET", "/api/v1/devices/1x/status"),
    ("GET", "/api/v2/receipts"), ("GET", "/api/"), ("DELETE", "/api/v1/receipts"), ("GET", "/api/v1/receipts/"),
])
def test_unknown_api_paths_answer_json(testapp: webtest.TestApp, method: str, path: str) -> None:
    res = testapp.request(path, method=method, status="*")
    assert res.status_int in (404, 405) and res.content_type == "application/json"
    assert api_error(res)["code"] == ResultCode.NOT_FOUND


@pytest.mark.parametrize("path", ["/api/compat/", "/api/compat/nothing", "/api/compat"])
def test_unknown_compat_paths_answer_in_the_compat_shape(testapp: webtest.TestApp, path: str) -> None:
    res = testapp.post(path, params=b"{}", content_type="application/json", status="*")
    assert res.status_int in (404, 405)
    compat_error(res)


def test_kkt_with_a_trailing_slash_is_the_1c_address(testapp: webtest.TestApp) -> None:
    # The original Apache alias served /kkt/ as /kkt: a 1C constant may hold "kkt/".
    res = testapp.request("/kkt/", method="POST", body=b"{}", status="*")
    assert res.status_int == 422 and "DocNumber" in onec_error(res)["result_description"]
    res = testapp.request("/kkt/", method="PUT", body=b"{}", status="*")
    assert res.status_int == 405 and res.content_type == "application/json"
    assert "POST" in onec_error(res)["result_description"]
    assert testapp.get("/kkt/", status=200).content_type == "text/html"


# --------------------------------------------------------------------------- catch-all


@pytest.mark.parametrize("contract", ["1c", "api", "compat"])
def test_unexpected_errors_answer_in_the_contract_shape_with_one_log_line(
    testapp: webtest.TestApp, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, contract: str
) -> None:
    from kktapp.web import api, common, compat, kkt1c

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(common, "check_tree", boom)
    with caplog.at_level(logging.INFO):
        if contract == "1c":
            res = testapp.post("/kkt", params=b'{"DocNumber": "1"}', content_type=FORM, status=500)
            assert onec_error(res)["result_code"] == ResultCode.INTERNAL
        elif contract == "api":
            res = testapp.post("/api/v1/receipts", params=b"{}", content_type="application/json", status=500)
            assert api_error(res)["code"] == ResultCode.INTERNAL
        else:
            res = testapp.post(COMPAT, params=b"{}", content_type="application/json", status=500)
            compat_error(res)
    assert "boom" not in res.text
    errors_logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors_logged) == 1 and errors_logged[0].exc_info is None
    assert "\n" not in errors_logged[0].getMessage()
    assert {kkt1c.log.name, api.log.name, compat.log.name} >= {errors_logged[0].name}
