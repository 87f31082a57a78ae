"""fields.QuickLoad gives exactly what schema.load gives: the same data, or the same errors.

The 1C receipt path loads every document through it (kktapp/web/kkt1c.py); a refusal must name
the same field with the same words as marshmallow's own load did before.
"""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from marshmallow import Schema, ValidationError, post_load, validates_schema

from kktapp.web import fields
from kktapp.web.kkt1c import PositionSchema, ReceiptSchema

CONTEXT = {"on_date": dt.date(2026, 3, 1), "accept_legacy": True, "line_discounts": True, "max_positions": 100}

POSITION = {"Name": "Товар", "Price": Decimal("325.12"), "Quantity": 6, "Tax": 22, "PositionSumm": 1950}
RECEIPT = {
    "DocNumber": "ТР00-003655",
    "DocDate": "01.03.2026",
    "DocSumm": 2145,
    "Goods": {"Position_1": POSITION, "Position_2": {**POSITION, "Price": 195, "Quantity": 1, "PositionSumm": 195}},
}


def outcome(load: Any, data: object) -> tuple[str, object]:
    """("ok", data) or ("error", messages) of one load inside the fiscal context."""
    with fields.FiscalContext(copy.deepcopy(CONTEXT)):
        try:
            return "ok", load(copy.deepcopy(data))
        except ValidationError as exc:
            return "error", exc.messages


def position_cases() -> list[object]:
    cases: list[object] = [POSITION, None, [], "text", {}]
    for key in POSITION:
        cases.append({k: v for k, v in POSITION.items() if k != key})  # missing
        for bad in (None, "", "x", True, [], {}, Decimal("1.005"), -1, "\t"):
            cases.append({**POSITION, key: bad})
    cases.append({**POSITION, "Extra": 1})  # unknown
    cases.append({**POSITION, "PositionSumm": 2500})  # sum check (validates_schema)
    cases.append({**POSITION, "Name": "a\tb"})  # cleaned, valid
    cases.append({**POSITION, "Tax": "НДС18"})  # legacy name, valid
    return cases


@pytest.mark.parametrize("data", position_cases())
def test_position_same_as_schema_load(data: object) -> None:
    schema = PositionSchema()
    assert outcome(fields.QuickLoad(schema), data) == outcome(schema.load, data)


def receipt_cases() -> list[object]:
    cases: list[object] = [RECEIPT, None, {}, {**RECEIPT, "Unknown": 1}, {**RECEIPT, "DocSumm": 1}]
    for key in RECEIPT:
        cases.append({k: v for k, v in RECEIPT.items() if k != key})
        cases.append({**RECEIPT, key: None})
    cases.append({**RECEIPT, "Goods": {"Position_1": {**POSITION, "Price": "x"}}})
    cases.append({**RECEIPT, "Goods": {"Item": POSITION}})
    cases.append({**RECEIPT, "ElectronicOnly": True})
    cases.append({**RECEIPT, "ElectronicOnly": True, "CustomerContact": "+79991234567", "Device": 2})
    cases.append({**RECEIPT, "PaymentType": "CASH"})
    return cases


@pytest.mark.parametrize("data", receipt_cases())
def test_receipt_same_as_schema_load(data: object) -> None:
    schema = ReceiptSchema()
    assert outcome(fields.QuickLoad(schema), data) == outcome(schema.load, data)


def test_schema_with_other_hooks_is_loaded_by_marshmallow() -> None:
    """A post_load (or any hook QuickLoad does not run) means schema.load, every time."""

    class Doubled(Schema):
        n = fields.Integer(required=True)

        @post_load
        def double(self, data: dict, **kwargs: Any) -> dict:
            return {"n": data["n"] * 2}

        @validates_schema
        def positive(self, data: dict, **kwargs: Any) -> None:
            if data["n"] < 0:
                raise ValidationError("negative", "n")

    load = fields.QuickLoad(Doubled())
    assert load({"n": 2}) == {"n": 4}
    with pytest.raises(ValidationError) as exc:
        load({"n": -1})
    assert exc.value.messages == {"n": ["negative"]}


def test_valid_documents_skip_schema_load(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of QuickLoad: a valid 1C receipt never goes through Schema.load."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Schema.load called for a valid document")

    receipt, position = ReceiptSchema(), PositionSchema()
    expected = outcome(receipt.load, RECEIPT)
    monkeypatch.setattr(Schema, "load", refuse)
    assert outcome(fields.QuickLoad(position), POSITION)[0] == "ok"
    assert outcome(fields.QuickLoad(receipt), RECEIPT) == expected
