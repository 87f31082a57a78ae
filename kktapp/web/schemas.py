"""marshmallow schemas of the JSON API (/api/v1) and of the atol-kkt-service compat protocol.

Requests carry money as roubles (JSON numbers or numeric strings, at most two decimals, like
ATOL's own JSON tasks); the fields turn them into integer kopecks at once. Responses carry
money as integer kopecks (``*_schema`` classes at the end document them for the OpenAPI).

The schemas only check shapes and single values; :func:`build_receipt` then makes the domain
:class:`~kktapp.domain.Receipt` (position sums, item and receipt discounts spread to the kopeck)
and :func:`kktapp.domain.check_receipt` has the last word. Field ``metadata`` (description,
example) feeds the OpenAPI description in :mod:`kktapp.web.openapi`, so the two cannot drift.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Mapping
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from marshmallow import EXCLUDE, ValidationError, fields, validate, validates_schema

from kktapp import domain
from kktapp.domain import (
    MEASUREMENT_UNITS,
    PAYMENT_METHOD_NAMES,
    PAYMENT_OBJECT_NAMES,
    TAXATION_NAMES,
    Correction,
    DomainError,
    Payment,
    PaymentMethod,
    PaymentType,
    Position,
    Receipt,
    SettlementType,
    TextLine,
)
from kktapp.web.fields import (
    BASE_MESSAGES,
    BaseSchema,
    Boolean,
    CustomerContact,
    DeviceText,
    Integer,
    List,
    Money,
    Nested,
    Quantity,
    String,
    Vat,
)

#: Longest text line we accept (the printer wraps; this only stops absurd payloads).
MAX_TEXT = 256
#: Lines in one non-fiscal document or header/footer.
MAX_LINES = 500
#: Positions in one receipt: the FN's 32 KB document limit allows roughly 250 (fiscal-rules.md §3).
MAX_ITEMS = 1000
#: Longest idempotency key.
MAX_KEY = 128
ALIGNMENTS = ("left", "center", "right")
#: Alias accepted for ATOL JSON's payment type name.
PAYMENT_ALIASES = {"electronically": PaymentType.ELECTRONIC}
#: 1C/ATOL spellings of the correction basis.
CORRECTION_TYPES = {"self": False, "order": True}


def _one_of(choices: Iterable[Any], message: str) -> validate.OneOf:
    return validate.OneOf(list(choices), error=message)


def _range(lo: int | None, hi: int | None) -> validate.Range:
    if lo is not None and hi is not None:
        text = f"ожидается число от {lo} до {hi}"
    elif lo is not None:
        text = f"ожидается число не меньше {lo}"
    else:
        text = f"ожидается число не больше {hi}"
    return validate.Range(min=lo, max=hi, error=text)


#: Money amounts that must be above zero (the field gives kopecks, so the bound is one kopeck).
POSITIVE = validate.Range(min=1, error="сумма должна быть больше нуля")


def _length(lo: int | None, hi: int | None) -> validate.Length:
    if lo and hi:
        text = f"длина от {lo} до {hi}"
    elif hi:
        text = f"длина не больше {hi}"
    else:
        text = f"нужно не меньше {lo}"
    return validate.Length(min=lo, max=hi, error=text)


class NamedCode(fields.Field):
    """An FFD code given by its ATOL JSON name or by its number (tags 1212, 1214, 2108)."""

    default_error_messages = {
        **BASE_MESSAGES,
        "invalid": "неизвестное значение; допустимо: {choices}",
    }

    def __init__(self, names: Mapping[str, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.names = dict(names)
        self.codes = {int(v) for v in self.names.values()}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and value in self.names:
            return int(self.names[value])
        if isinstance(value, int) and not isinstance(value, bool) and value in self.codes:
            return value
        if isinstance(value, str) and value.strip().isdigit() and int(value) in self.codes:
            return int(value)
        raise self.make_error("invalid", choices=", ".join(self.names))

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> int | None:
        return None if value is None else int(value)


# --------------------------------------------------------------------------- text lines


class TextLineSchema(BaseSchema):
    """One printed line with attributes."""

    text = DeviceText(required=True, validate=_length(None, MAX_TEXT), metadata={"description": "текст строки"})
    bold = Boolean(load_default=False, metadata={"description": "жирный"})
    italic = Boolean(load_default=False, metadata={"description": "курсив"})
    inverse = Boolean(load_default=False, metadata={"description": "белым по чёрному"})
    underline = Boolean(load_default=False, metadata={"description": "подчёркнутый"})
    double_width = Boolean(load_default=False, metadata={"description": "двойная ширина"})
    double_height = Boolean(load_default=False, metadata={"description": "двойная высота"})
    align = String(load_default="left", validate=_one_of(ALIGNMENTS, "ожидается left, center или right"),
                   metadata={"description": "выравнивание"})


#: Built once (see kktapp/web/api.py): TextLineField loads every object line with it.
_TEXT_LINE = TextLineSchema()


class TextLineField(fields.Field):
    """A line given as a plain string or as a :class:`TextLineSchema` object → TextLine."""

    default_error_messages = {
        **BASE_MESSAGES,
        "invalid": "ожидается строка или объект с полем text (и bold, italic, align…)",
        "too_long": f"длина строки не больше {MAX_TEXT}",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> TextLine:
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                raise self.make_error("too_long")
            return TextLine(value)
        if isinstance(value, Mapping):
            return TextLine(**_TEXT_LINE.load(value))
        raise self.make_error("invalid")

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return value


def _lines(**kwargs: Any) -> List:
    return List(TextLineField(), validate=_length(None, MAX_LINES), **kwargs)


def line_params(lines: Iterable[TextLine]) -> list[dict]:
    """TextLines as the service's print_text parameters (plain dicts, JSON-safe)."""
    return [{f: getattr(line, f) for f in TextLine.__dataclass_fields__} for line in lines]


# --------------------------------------------------------------------------- API requests


class PrintSchema(BaseSchema):
    """POST /api/v1/devices/<n>/print: a non-fiscal document."""

    lines = List(TextLineField(), required=True, validate=_length(1, MAX_LINES),
                 metadata={"description": "строки: просто текст или объект с атрибутами печати"})


class CashSchema(BaseSchema):
    """POST /api/v1/devices/<n>/cash-in and /cash-out."""

    amount = Money(required=True, validate=POSITIVE,
                   metadata={"description": "сумма в рублях (число или строка, до двух знаков после точки)"})


class SettleSchema(BaseSchema):
    """POST /api/v1/jobs/<id>/settle: the operator's verdict on a job whose outcome is unknown.

    The numbers' ranges are checked by the service (FiscalService.settle_by_hand), which the
    operator page calls too.
    """

    fiscalised = Boolean(required=True, metadata={
        "description": "true — документ найден в ФН или в кабинете ОФД (нужен fiscal_document_number); "
                       "false — документа нет: задание завершится ошибкой 1017, ключ освободится"})
    fiscal_document_number = Integer(allow_none=True, load_default=None,
                                     metadata={"description": "номер ФД найденного документа (для fiscalised=true)"})
    fiscal_sign = String(allow_none=True, load_default="", validate=_length(0, 10),
                         metadata={"description": "фискальный признак (ФП), если известен"})


class ItemSchema(BaseSchema):
    """A receipt position."""

    code = String(validate=_length(1, 13), metadata={"description": "код товара из каталога 1С (обмен через файлы): "
                                                                     "наименование, цену, НДС и единицу берём оттуда"})
    name = DeviceText(validate=_length(1, domain.MAX_NAME),
                      metadata={"description": "наименование (1030); без code обязательно"})
    price = Money(metadata={"description": "цена за единицу, рубли (1079); без code обязательно"})
    quantity = Quantity(load_default=Decimal(1), metadata={"description": "количество, до 3 знаков (1023)"})
    amount = Money(metadata={"description": "сумма позиции до скидки, рубли; проверяется: цена × количество ± 1 коп."})
    tax = Vat(method_key="payment_method",
              metadata={"description": "ставка НДС (без code обязательно): vat22, vat10, vat0, none, vat122, "
                                       "vat110, vat5, vat7, vat105, vat107 или 22, 10, \"без НДС\"…; в чеках "
                                       "возврата и в позициях с payment_method creditPayment — также vat20 и "
                                       "vat120 (возврат продажи до 2026 г., оплата кредита 2025 г.); 5 % и 7 % — "
                                       "только при УСН"})
    payment_method = NamedCode(PAYMENT_METHOD_NAMES, load_default=int(PaymentMethod.FULL_PAYMENT),
                               metadata={"description": "способ расчёта (1214): имя или код",
                                         "enum": list(PAYMENT_METHOD_NAMES)})
    payment_object = NamedCode(PAYMENT_OBJECT_NAMES, load_default=1,
                               metadata={"description": "предмет расчёта (1212): имя или код; 31 и 33 (товар с "
                                                        "кодом маркировки) пока не поддерживаются",
                                         "enum": list(PAYMENT_OBJECT_NAMES)})
    unit = NamedCode(MEASUREMENT_UNITS, load_default=0,
                     metadata={"description": "мера количества (2108): имя или код", "enum": list(MEASUREMENT_UNITS)})
    department = Integer(load_default=0, validate=_range(0, 99), metadata={"description": "секция (отдел)"})
    discount = Money(load_default=0, metadata={"description": "скидка на позицию, рубли"})

    @validates_schema
    def _code_or_name(self, data: dict, **kwargs: Any) -> None:
        # A catalogue code stands for name, price and tax; without one they are all required.
        missing = [f for f in ("name", "price", "tax") if not data.get("code") and data.get(f) is None]
        if missing:
            raise ValidationError({f: ["обязательное поле не указано (или укажите code товара)"] for f in missing})


class PaymentSchema(BaseSchema):
    """One payment of a receipt."""

    type = String(required=True,
                  validate=_one_of([t.value for t in PaymentType] + list(PAYMENT_ALIASES),
                                   "ожидается cash, electronic, prepaid, credit или other"),
                  metadata={"description": "cash — наличные, electronic — безналичные, prepaid — зачёт аванса, "
                                           "credit — в кредит, other — встречное предоставление"})
    amount = Money(required=True, validate=POSITIVE, metadata={"description": "сумма, рубли"})


class CashierSchema(BaseSchema):
    """Cashier tags 1021 and 1203."""

    name = DeviceText(required=True, validate=_length(1, domain.MAX_CASHIER_NAME),
                      metadata={"description": "ФИО кассира (1021)"})
    inn = String(load_default="", validate=validate.Regexp(r"^(\d{12})?$", error="ИНН кассира — 12 цифр"),
                 metadata={"description": "ИНН кассира, 12 цифр (1203)"})


class CorrectionSchema(BaseSchema):
    """Correction basis: tags 1173, 1178, 1179."""

    type = String(required=True, validate=_one_of(CORRECTION_TYPES, "ожидается self или order"),
                  metadata={"description": "self — самостоятельно, order — по предписанию ФНС (1173)"})
    date = fields.Date(required=True, format="%Y-%m-%d",
                       error_messages={"invalid": "ожидается дата в формате ГГГГ-ММ-ДД",
                                       "required": "обязательное поле не указано"},
                       metadata={"description": "дата исправляемого расчёта (1178)"})
    order_number = String(load_default="", validate=_length(None, 64),
                          metadata={"description": "номер предписания ФНС (1179), для type=order"})

    @validates_schema
    def _order_needs_number(self, data: dict, **kwargs: Any) -> None:
        if data.get("type") == "order" and not data.get("order_number"):
            raise ValidationError("для коррекции по предписанию нужен номер предписания", "order_number")
        if data.get("type") == "self" and data.get("order_number"):
            # 1179 is the FNS order's number: a correction on one's own initiative has none
            # (fiscal-rules.md §2), and silently dropping a number the caller sent hides a mix-up.
            raise ValidationError("номер предписания (1179) указывается только для коррекции по предписанию "
                                  "(type = order)", "order_number")


class ReceiptSchema(BaseSchema):
    """POST /api/v1/receipts."""

    id = String(validate=_length(1, MAX_KEY),
                metadata={"description": "ключ идемпотентности (или заголовок Idempotency-Key): повтор с тем же "
                                         "ключом не пробьёт второй чек"})
    type = String(load_default=SettlementType.SELL.value,
                  validate=_one_of([t.value for t in SettlementType], "неизвестный тип чека"),
                  metadata={"description": "тип чека", "enum": [t.value for t in SettlementType]})
    device = Integer(load_default=1, validate=_range(1, None), metadata={"description": "номер кассы"})
    taxation = String(validate=_one_of(TAXATION_NAMES, "неизвестная система налогообложения"),
                      metadata={"description": "СНО (1055); по умолчанию из настроек", "enum": list(TAXATION_NAMES)})
    header = _lines(load_default=list, metadata={"description": "строки перед чеком"})
    footer = _lines(load_default=list, metadata={"description": "строки после чека"})
    items = List(Nested(ItemSchema), required=True, validate=_length(1, MAX_ITEMS), metadata={"description": "позиции"})
    discount = Money(load_default=0, metadata={"description": "скидка на чек, рубли: распределяется по позициям "
                                                             "до копейки"})
    payments = List(Nested(PaymentSchema), required=True, validate=_length(1, 5), metadata={"description": "оплаты"})
    cashier = Nested(CashierSchema, metadata={"description": "кассир; по умолчанию из настроек"})
    customer_contact = CustomerContact(metadata={"description": "телефон +7… или e-mail покупателя (1008)"})
    electronic_only = Boolean(load_default=False, metadata={"description": "не печатать (нужен customer_contact)"})
    settlement_place = DeviceText(validate=_length(1, domain.MAX_SETTLEMENT_PLACE),
                                  metadata={"description": "место расчётов (1187), для продажи на сайте — адрес "
                                                           "сайта; по умолчанию — из регистрации ККТ",
                                            "example": "https://shop.example.ru"})
    internet = Boolean(load_default=False,
                       metadata={"description": "расчёт в интернете (1125 = 1): нужны customer_contact и "
                                                "settlement_place"})
    correction = Nested(CorrectionSchema, metadata={"description": "основание коррекции (для *_correction)"})

    @validates_schema
    def _correction_matches_type(self, data: dict, **kwargs: Any) -> None:
        is_correction = SettlementType(data.get("type", "sell")).is_correction
        if is_correction and not data.get("correction"):
            raise ValidationError("для чека коррекции нужен объект correction {type, date}", "correction")
        if data.get("correction") and not is_correction:
            raise ValidationError("correction допустим только для чеков коррекции (*_correction)", "correction")


def receipt_type(data: object) -> SettlementType | None:
    """The receipt type the raw body names (None when it names none: the schema says why).

    Read from the raw body before loading, because the Vat fields need it while loading (on
    returns 20 and 20/120 are kept as given, :func:`kktapp.domain.parse_vat`).
    """
    if not isinstance(data, Mapping):
        return None
    value = data.get("type", SettlementType.SELL.value)
    try:
        return SettlementType(value) if isinstance(value, str) else None
    except ValueError:
        return None


def receipt_date(data: object, today: dt.date | None = None) -> dt.date:
    """The date whose VAT rates apply: the corrected settlement's date for corrections, else today.

    Read from the raw body before loading, because the Vat fields need it while loading.
    """
    today = today or dt.date.today()
    if isinstance(data, Mapping) and isinstance(data.get("correction"), Mapping):
        try:
            return dt.date.fromisoformat(str(data["correction"].get("date")))
        except ValueError:
            return today
    return today


# --------------------------------------------------------------------------- receipt building


def _unit_price(amount: int, quantity: Decimal) -> int:
    return int((Decimal(amount) / quantity).to_integral_value(rounding=ROUND_HALF_UP))


def build_positions(items: list[dict], receipt_discount: int = 0, *, prefix: str = "items") -> list[Position]:
    """Positions with item discounts applied and the receipt discount spread to the kopeck.

    ``items`` are loaded dicts (price/amount/discount in kopecks). An explicit ``amount`` may
    differ from price × quantity by one kopeck (the caller's own rounding, which Shtrih and the
    FFD tolerate); more is an error. Price after discounts is the amount over the quantity.
    """
    bases: list[int] = []
    for i, item in enumerate(items):
        base = domain.position_amount(item["price"], item["quantity"])
        given = item.get("amount")
        if given is not None:
            if abs(given - base) > 1:
                raise DomainError(f"{prefix}.{i}.amount",
                                  f"сумма позиции не равна цене × количество ({domain.format_rub(base)})",
                                  domain.format_rub(given))
            base = given
        discount = item.get("discount", 0)
        if discount > base:
            raise DomainError(f"{prefix}.{i}.discount", "скидка больше суммы позиции", domain.format_rub(discount))
        bases.append(base - discount)
    if receipt_discount > sum(bases):
        raise DomainError("discount", "скидка больше суммы чека", domain.format_rub(receipt_discount))
    amounts = domain.spread_discount(bases, receipt_discount)
    positions = []
    for item, amount in zip(items, amounts, strict=True):
        full = domain.position_amount(item["price"], item["quantity"])
        price = item["price"] if amount == full else _unit_price(amount, item["quantity"])
        positions.append(Position(
            name=item["name"].strip() or item["name"],
            price=price,
            quantity=item["quantity"],
            amount=amount,
            vat=item["tax"],
            payment_method=PaymentMethod(item.get("payment_method", PaymentMethod.FULL_PAYMENT)),
            payment_object=item.get("payment_object", 1),
            unit=item.get("unit", 0),
            department=item.get("department", 0),
            discount=max(0, full - amount),
        ))
    return positions


def build_receipt(data: dict, config: Mapping[str, Any]) -> Receipt:
    """Domain receipt from a loaded :class:`ReceiptSchema` dict; raises DomainError."""
    positions = build_positions(data["items"], data.get("discount", 0))
    payments = tuple(
        Payment(PAYMENT_ALIASES.get(p["type"]) or PaymentType(p["type"]), p["amount"]) for p in data["payments"]
    )
    cashier = data.get("cashier") or {}
    taxation = data.get("taxation") or config.get("TAXATION")
    correction = None
    if data.get("correction"):
        c = data["correction"]
        correction = Correction(by_order=CORRECTION_TYPES[c["type"]], date=c["date"], order_number=c["order_number"])
    receipt = Receipt(
        type=SettlementType(data["type"]),
        positions=tuple(positions),
        payments=payments,
        taxation=TAXATION_NAMES[taxation] if taxation else None,
        customer_contact=data.get("customer_contact", ""),
        electronic_only=data.get("electronic_only", False),
        cashier_name=cashier.get("name") or config.get("CASHIER_NAME") or "",
        cashier_inn=cashier.get("inn") or config.get("CASHIER_INN") or "",
        header=tuple(data.get("header", ())),
        footer=tuple(data.get("footer", ())),
        correction=correction,
        test_mode=bool(config.get("TEST_MODE", False)),
        settlement_place=data.get("settlement_place", "").strip(),
        internet=data.get("internet", False),
    )
    domain.check_receipt(receipt)
    return receipt


def receipt_fingerprint(receipt: Receipt) -> str:
    """Idempotency fingerprint of a receipt: the same document however its numbers were spelled.

    Kopecks are already canonical; quantities are normalised (2, 2.0 and "2.000" are one
    quantity), so a retry that only reformats numbers is not taken for another document.
    """
    from kktapp.service import fingerprint

    positions = tuple(dataclasses.replace(p, quantity=p.quantity.normalize()) for p in receipt.positions)
    return fingerprint(dataclasses.replace(receipt, positions=positions))


#: Domain attributes of a position that this API spells differently.
_ITEM_NAMES = {".vat": ".tax"}


def api_field_name(field: str) -> str:
    """Domain field names (``positions[2].vat``, 1-based) → this API's paths (``items.1.tax``)."""
    for domain_name, api_name in (("positions[", "items."), ("payments[", "payments."), ("header[", "header."),
                                  ("footer[", "footer.")):
        if field.startswith(domain_name) and "]" in field:
            index, _, rest = field[len(domain_name):].partition("]")
            if index.isdigit():
                if domain_name == "positions[":
                    rest = _ITEM_NAMES.get(rest, rest)
                return f"{api_name}{int(index) - 1}{rest}"
    return field


# --------------------------------------------------------------------------- compat (atol-kkt-service)


class CompatSchema(BaseSchema):
    """The old service ignored fields it did not know; so do we, to accept its clients unchanged."""

    class Meta:
        unknown = EXCLUDE


class FontSchema(CompatSchema):
    """``font`` of a PRINT_TSTRING_LIST / INCOME text line."""

    b = Boolean(load_default=False)
    i = Boolean(load_default=False)
    n = Boolean(load_default=False)
    u = Boolean(load_default=False)
    w = Integer(load_default=0, validate=_range(0, 8))
    a = Integer(load_default=0, validate=_range(0, 2))
    dh = Boolean(load_default=False)
    dw = Boolean(load_default=False)


class TStringSchema(CompatSchema):
    """One formatted line: ``{"text": ..., "font": {...}}``."""

    text = DeviceText(required=True, validate=_length(None, MAX_TEXT))
    font = Nested(FontSchema, load_default=dict)


class StringListSchema(CompatSchema):
    """PRINT_STRING_LIST data: lines separated by CR LF, all in the default font."""

    text = String(required=True, validate=_length(None, MAX_TEXT * MAX_LINES))
    setmode_one = Boolean(load_default=False)
    use_print_string = Boolean(load_default=False)


class TStringListSchema(CompatSchema):
    """PRINT_TSTRING_LIST data: formatted lines; fonts apply only with use_print_string."""

    text = List(Nested(TStringSchema), required=True, validate=_length(None, MAX_LINES))
    setmode_one = Boolean(load_default=False)
    use_print_string = Boolean(load_default=False)


class GoodSchema(CompatSchema):
    """One INCOME position."""

    name = DeviceText(load_default="", validate=_length(None, domain.MAX_NAME))
    price = Money()
    kol = Quantity(load_default=Decimal(1))
    nds = Vat()
    barcode = String(load_default="")
    dep = Integer(load_default=0, validate=_range(0, 99))
    discount = Money(load_default=0)

    @validates_schema
    def _barcode_or_name(self, data: dict, **kwargs: Any) -> None:
        # An empty name means "the goods with this barcode" from the catalogue (the 1C exchange).
        if data.get("barcode"):
            return
        missing = [f for f in ("name", "price", "nds") if not data.get(f) and data.get(f) != 0]
        if missing:
            raise ValidationError({f: ["обязательное поле не указано (или укажите barcode товара)"] for f in missing})


class TrId(fields.Field):
    """tr_id: a number or a string; 0 or empty means "no transaction id"."""

    default_error_messages = {"invalid": "ожидается номер транзакции (число или строка)"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if value is None or isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int | Decimal):
            if isinstance(value, Decimal) and value != value.to_integral_value():
                raise self.make_error("invalid")
            return "" if value == 0 else str(int(value))
        if isinstance(value, str):
            text = value.strip()
            if len(text) > MAX_KEY:
                raise ValidationError(f"длина не больше {MAX_KEY}")
            return "" if text in ("", "0") else text
        raise self.make_error("invalid")


class IncomeSchema(CompatSchema):
    """INCOME data: a sale."""

    header_text = List(Nested(TStringSchema), load_default=list, validate=_length(None, MAX_LINES))
    goods = List(Nested(GoodSchema), required=True, validate=_length(1, MAX_ITEMS))
    footer_text = List(Nested(TStringSchema), load_default=list, validate=_length(None, MAX_LINES))
    check_sm = Money(required=True)
    check_discount_sm = Money(load_default=0)
    type_close = String(load_default="tcCash",
                        validate=_one_of(["tcCash", *(f"tc{i}" for i in range(1, 7))], "ожидается tcCash или tc1..tc6"))
    cash_sm = Money(load_default=0)
    tr_id = TrId(load_default="")


class SegmentSchema(CompatSchema):
    """SEGMENT data: one base64 piece of a long command."""

    segment_guid = String(required=True, validate=_length(1, 100))
    segment_num = Integer(required=True, validate=_range(1, None))
    segment_count = Integer(required=True, validate=_range(1, 100_000))
    text = String(required=True, validate=_length(None, 1_000_000))

    @validates_schema
    def _num_within_count(self, data: dict, **kwargs: Any) -> None:
        if data["segment_num"] > data["segment_count"]:
            raise ValidationError("номер сегмента больше их количества", "segment_num")


class DeviceDataSchema(CompatSchema):
    """``atol_device_data``: device number and the operator password (see compat.py on it)."""

    atol_device_number = Integer(load_default=1, validate=_range(0, None))
    atol_operator_password = fields.Raw(load_default="")


class EnvelopeSchema(CompatSchema):
    """Every atol-kkt-service message."""

    atol_device_data = Nested(DeviceDataSchema, load_default=dict)
    comand = String(required=True)
    data = fields.Raw(load_default="", allow_none=True)


def font_line(text: str, font: Mapping[str, Any] | None) -> TextLine:
    """An atol-kkt-service formatted line as a TextLine (w > 0 is a wider font: double width)."""
    font = font or {}
    return TextLine(
        text=text,
        bold=bool(font.get("b")),
        italic=bool(font.get("i")),
        inverse=bool(font.get("n")),
        underline=bool(font.get("u")),
        double_width=bool(font.get("dw")) or int(font.get("w") or 0) > 0,
        double_height=bool(font.get("dh")),
        align=ALIGNMENTS[int(font.get("a") or 0)],
    )


# --------------------------------------------------------------------------- API responses (documentation)


class ErrorSchema(BaseSchema):
    """Error object of every API refusal."""

    code = Integer(required=True, metadata={"description": "код: 1..255 — ошибка ККТ, 1001+ — ошибка сервиса"})
    message = String(required=True, metadata={"description": "описание по-русски"})
    field = String(metadata={"description": "поле запроса с ошибкой"})
    value = fields.Raw(metadata={"description": "значение, вызвавшее ошибку"})
    step = String(metadata={"description": "шаг операции на ККТ, где случилась ошибка"})
    ext_code = Integer(metadata={"description": "расширенный код ошибки ККТ"})


class ErrorResponseSchema(BaseSchema):
    """``{"error": {...}}``."""

    error = Nested(ErrorSchema, required=True)


class JobSchema(BaseSchema):
    """State of a queued operation or receipt."""

    id = String(required=True, metadata={"description": "идентификатор задания: GET /api/v1/jobs/{id}"})
    device = Integer(required=True, metadata={"description": "номер кассы"})
    kind = String(required=True, metadata={"description": "receipt или операция: open_shift, cash_in, …"})
    key = String(allow_none=True, metadata={"description": "ключ идемпотентности"})
    state = String(required=True, metadata={"description": "queued, sending, done, failed, unknown",
                                            "enum": ["queued", "sending", "done", "failed", "unknown"]})
    result = fields.Raw(allow_none=True, metadata={"description": "результат (для чека: ФД, ФП, номер смены, "
                                                                 "total в копейках…)"})
    error = Nested(ErrorSchema, allow_none=True, metadata={"description": "ошибка, если state=failed"})
    reason = String(allow_none=True, metadata={"description": "почему задание в этом состоянии"})
    created_at = String(required=True, metadata={"description": "когда принято (ISO 8601)"})
    updated_at = String(required=True, metadata={"description": "последнее изменение (ISO 8601)"})


class DeviceSummarySchema(BaseSchema):
    """One device in GET /api/v1/devices."""

    number = Integer(required=True)
    name = String(required=True)
    snapshot = fields.Raw(required=True, metadata={"description": "последнее известное состояние (без обращения "
                                                                  "к ККТ)"})


class DeviceListSchema(BaseSchema):
    """GET /api/v1/devices."""

    devices = List(Nested(DeviceSummarySchema), required=True)


class DeviceSnapshotSchema(BaseSchema):
    """GET /api/v1/devices/<n>/snapshot."""

    device = Integer(required=True)
    snapshot = fields.Raw(required=True, metadata={"description": "последнее известное состояние"})


class ShiftInfoSchema(BaseSchema):
    """Shift part of a device status."""

    state = String(required=True, metadata={"enum": ["closed", "open", "expired"]})
    open = Boolean(required=True)
    expired = Boolean(required=True, metadata={"description": "смена длится больше 24 часов"})
    number = Integer(required=True)
    opened_at = String(allow_none=True)
    expires_at = String(allow_none=True)
    receipts = Integer()


class FnInfoSchema(BaseSchema):
    """FN and OFD part of a device status."""

    number = String(required=True)
    valid_until = String(allow_none=True, metadata={"description": "срок действия ФН"})
    last_fd_number = Integer()
    unsent_count = Integer(required=True, metadata={"description": "документов не отправлено в ОФД"})
    first_unsent_number = Integer()
    first_unsent_at = String(allow_none=True, metadata={"description": "дата первого неотправленного документа"})
    warnings = Integer()


class TotalsSchema(BaseSchema):
    """Money counters, integer kopecks."""

    cash_in_drawer = Integer(required=True, metadata={"description": "наличных в кассе, копейки"})
    shift_earnings = Integer(required=True, metadata={"description": "выручка смены, копейки"})
    total_earnings = Integer(required=True, metadata={"description": "необнуляемая сумма, копейки"})


class DeviceStatusSchema(BaseSchema):
    """GET /api/v1/devices/<n>/status: a fresh read from the device."""

    device = Integer(required=True)
    name = String(required=True)
    datetime = String(required=True, metadata={"description": "дата и время ККТ"})
    serial = String(required=True)
    model = String()
    firmware = String()
    registration_number = String(allow_none=True)
    mode = Integer(required=True)
    submode = Integer()
    fiscal = Boolean(required=True)
    paper_present = Boolean(required=True)
    paper_near_end = Boolean(metadata={"description": "бумага заканчивается (печатать ещё можно)"})
    cover_open = Boolean()
    shift = Nested(ShiftInfoSchema, required=True)
    fn = Nested(FnInfoSchema, required=True)
    totals = Nested(TotalsSchema, required=True)


class GoodsBarcodeSchema(BaseSchema):
    """An extra barcode (a ``#`` line of the goods file): another barcode or a package."""

    barcode = String(required=True)
    name = String(required=True, metadata={"description": "наименование упаковки, если 1С его дала"})
    price = Integer(required=True, metadata={"description": "цена упаковки, копейки; 0 — цена товара × coefficient"})
    coefficient = String(required=True, metadata={"description": "сколько единиц товара в упаковке"})


class GoodsItemSchema(BaseSchema):
    """A goods item or group of the store's catalogue."""

    code = String(required=True, metadata={"description": "код товара в 1С: его передают в items[].code"})
    name = String(required=True, metadata={"description": "полное наименование"})
    receipt_name = String(required=True, metadata={"description": "наименование для чека (краткое)"})
    barcode = String(required=True, metadata={"description": "основной штрихкод"})
    barcodes = List(Nested(GoodsBarcodeSchema), required=True)
    price = Integer(required=True, metadata={"description": "цена, копейки; 0 — в 1С цена не задана: товар "
                                                            "продаётся только с ценой из запроса"})
    weighted = Boolean(required=True, metadata={"description": "весовой товар (единица — килограмм)"})
    group = Boolean(required=True, metadata={"description": "группа, а не товар"})
    parent = String(allow_none=True, metadata={"description": "код группы"})
    article = String(required=True, metadata={"description": "артикул"})
    vat = String(allow_none=True, metadata={"description": "ставка НДС магазина для товаров каталога"})


class GoodsListSchema(BaseSchema):
    """GET /api/v1/goods."""

    store = String(required=True)
    total = Integer(required=True, metadata={"description": "сколько всего найдено"})
    limit = Integer(required=True)
    offset = Integer(required=True)
    goods = List(Nested(GoodsItemSchema), required=True)


class ReceiptRowSchema(BaseSchema):
    """One receipt in GET /api/v1/receipts (kktapp.web.receipts.receipt_row)."""

    id = String(required=True, metadata={"description": "идентификатор задания"})
    key = String(allow_none=True, metadata={"description": "ключ вызывающего: DocNumber 1С, Idempotency-Key, tr_id"})
    source = String(required=True, metadata={"description": "откуда чек: 1c, api, compat"})
    device = Integer(required=True, metadata={"description": "номер кассы"})
    amount = Integer(allow_none=True, metadata={"description": "сумма чека, копейки"})
    accepted_at = String(required=True, metadata={"description": "когда принят (ISO 8601)"})
    updated_at = String(required=True, metadata={"description": "последнее изменение (ISO 8601)"})
    state = String(required=True, metadata={"description": "queued, sending, done, failed, unknown",
                                            "enum": ["queued", "sending", "done", "failed", "unknown"]})
    reason = String(required=True, metadata={"description": "почему чек в этом состоянии или текст ошибки"})
    error_code = Integer(allow_none=True, metadata={"description": "код ошибки (1016 — отменён оператором)"})
    fiscal_document_number = Integer(allow_none=True, metadata={"description": "номер ФД, если пробит"})
    fiscal_sign = String(allow_none=True, metadata={"description": "фискальный признак, если пробит"})
    cancellable = Boolean(required=True, metadata={"description": "можно отменить (чек ещё в очереди)"})


class ReceiptListSchema(BaseSchema):
    """GET /api/v1/receipts: one page of receipts, newest first."""

    receipts = List(Nested(ReceiptRowSchema), required=True)
    total = Integer(required=True, metadata={"description": "сколько чеков подходит под фильтр всего"})
    limit = Integer(required=True)
    offset = Integer(required=True)
