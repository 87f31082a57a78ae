"""Unit tests for the shared web helpers: raw JSON bodies, fiscal fields, error translation."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from marshmallow import ValidationError
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from kktapp.domain import DomainError, VatRate
from kktapp.errors import ResultCode, ValidationFailed
from kktapp.web import fields
from kktapp.web.common import read_json, shown_value, validation_error


def make_request(body: bytes, content_type: str) -> Request:
    return Request(EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ())


# --------------------------------------------------------------------------- read_json


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded;charset=utf-8", "application/json", "text/plain", "application/octet-stream"],
)
def test_read_json_any_content_type(content_type):
    body = '{\n\t"DocNumber": "ТР00-1",\n\t"Price": 325.12\n}'.encode()
    data = read_json(make_request(body, content_type))
    assert data == {"DocNumber": "ТР00-1", "Price": Decimal("325.12")}
    assert isinstance(data["Price"], Decimal)


def test_read_json_form_content_type_body_not_consumed_by_form_parser():
    req = make_request(b'{"a": 1}', "application/x-www-form-urlencoded")
    assert read_json(req) == {"a": 1}
    # A second read is served from the cache, and the form parser did not run.
    assert read_json(req) == {"a": 1}


def test_read_json_strips_bom():
    assert read_json(make_request(b"\xef\xbb\xbf" + '{"Имя": "Чай"}'.encode(), "application/json")) == {"Имя": "Чай"}


@pytest.mark.parametrize(
    "body, fragment",
    [
        (b"", "пустое"),
        (b"   \n", "пустое"),
        (b"DocNumber=1&DocSumm=2", "не JSON"),
        ('{"a": "Чай"}'.encode("cp1251"), "UTF-8"),
        (b'{"a": 1,}', "строке 1"),
        (b'{"a": NaN}', "не JSON"),
    ],
)
def test_read_json_rejects_bad_bodies(body, fragment):
    with pytest.raises(ValidationFailed) as info:
        read_json(make_request(body, "application/json"))
    assert info.value.field == "body"
    assert info.value.code == ResultCode.VALIDATION
    assert fragment in info.value.message


# --------------------------------------------------------------------------- fields


class Item(fields.BaseSchema):
    Price = fields.Money(required=True)
    Refund = fields.Money(allow_negative=True)
    Quantity = fields.Quantity()
    Tax = fields.Vat()
    Contact = fields.CustomerContact()


class Doc(fields.BaseSchema):
    Name = fields.String(required=True)
    Items = fields.List(fields.Nested(Item), required=True)


@pytest.mark.parametrize(
    "value, kopecks",
    [(Decimal("325.12"), 32512), (1950, 195000), ("10,5", 1050), (0, 0), (Decimal("99999999.99"), 9_999_999_999)],
)
def test_money_to_kopecks(value, kopecks):
    assert Item().load({"Price": value})["Price"] == kopecks


@pytest.mark.parametrize("value", [325.12, True, Decimal("1.005"), -1, "abc", Decimal("100000000.00"), None])
def test_money_rejects(value):
    with pytest.raises(ValidationError):
        Item().load({"Price": value})


def test_money_negative_only_when_allowed():
    assert Item().load({"Price": 0, "Refund": Decimal("-1.50")})["Refund"] == -150


def test_quantity():
    assert Item().load({"Price": 1, "Quantity": Decimal("1.125")})["Quantity"] == Decimal("1.125")
    for bad in (0, -1, Decimal("1.0005"), 1.5, "x"):
        with pytest.raises(ValidationError):
            Item().load({"Price": 1, "Quantity": bad})


def test_vat_uses_context_date_and_legacy_switch():
    with fields.FiscalContext({"on_date": dt.date(2026, 3, 1), "accept_legacy": True}):
        assert Item().load({"Price": 1, "Tax": 18})["Tax"] is VatRate.VAT22
        assert Item().load({"Price": 1, "Tax": "НДС18"})["Tax"] is VatRate.VAT22
    with fields.FiscalContext({"on_date": dt.date(2025, 3, 1)}):
        assert Item().load({"Price": 1, "Tax": 20})["Tax"] is VatRate.VAT20
    with fields.FiscalContext({"on_date": dt.date(2026, 3, 1), "accept_legacy": False}):
        with pytest.raises(ValidationError):
            Item().load({"Price": 1, "Tax": 18})
        assert Item().load({"Price": 1, "Tax": 10})["Tax"] is VatRate.VAT10


def test_vat_field_arguments_win():
    class Pinned(fields.BaseSchema):
        Tax = fields.Vat(on_date=dt.date(2026, 1, 1), accept_legacy=False)

    with fields.FiscalContext({"accept_legacy": True}):
        with pytest.raises(ValidationError):
            Pinned().load({"Tax": "nds18"})


def test_customer_contact():
    assert Item().load({"Price": 1, "Contact": " +79991234567 "})["Contact"] == "+79991234567"
    assert Item().load({"Price": 1, "Contact": "a@b.ru"})["Contact"] == "a@b.ru"
    with pytest.raises(ValidationError):
        Item().load({"Price": 1, "Contact": "позвонить"})


# --------------------------------------------------------------------------- validation_error


def first_error(schema, data) -> ValidationFailed:
    with pytest.raises(ValidationError) as info:
        schema.load(data)
    return validation_error(info.value)


def test_validation_error_names_nested_path_and_value():
    err = first_error(Doc(), {"Name": "x", "Items": [{"Price": 1}, {"Price": Decimal("1.005")}]})
    assert err.field == "Items.1.Price"
    assert "1.005" in err.message and "Decimal" not in err.message
    assert err.to_dict()["value"] == "1.005"
    assert err.http_status == 422


def test_validation_error_messages_are_russian():
    err = first_error(Doc(), {"Items": []})
    assert err.field == "Name"
    assert "обязательное поле" in err.message
    err = first_error(Doc(), {"Name": "x", "Items": [], "Extra": 5})
    assert err.field == "Extra" and "неизвестное поле" in err.message
    assert err.value == 5
    err = first_error(Doc(), {"Name": 5, "Items": []})
    assert "ожидается строка" in err.message


def test_validation_error_from_domain_error():
    err = validation_error(DomainError("positions[1].name", "слишком длинное", "x" * 200), rename=str.upper)
    assert err.field == "POSITIONS[1].NAME"
    assert len(str(err.value)) < 100


def test_shown_value():
    assert repr(shown_value(Decimal("1.50"))) == "1.50"
    assert shown_value(5) == 5
    assert shown_value("Чай") == "Чай"
    assert "Чай" in shown_value({"a": "Чай"})
