"""marshmallow fields and a schema base shared by every contract, with Russian messages.

Fiscal parsing is delegated to :mod:`kktapp.domain` (one definition of each rule): ``Money``
gives integer kopecks, ``Quantity`` a Decimal, ``Vat`` a :class:`~kktapp.domain.VatRate` for the
receipt date, ``CustomerContact`` a checked tag-1008 value.

VAT depends on the receipt date and on the ACCEPT_LEGACY_VAT setting. marshmallow 4 dropped the
schema ``context`` argument; it offers :mod:`marshmallow.experimental.context` (a contextvar)
instead. Both ways work here:

    with FiscalContext({"on_date": today, "accept_legacy": False}):
        schema.load(data)

or per field: ``Vat(on_date=..., accept_legacy=...)``. Field arguments win over the context;
without either, the date is today and legacy names are accepted (the conf.py default).
"""

from __future__ import annotations

import datetime as dt
import logging
import typing
from decimal import Decimal
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, missing
from marshmallow.decorators import POST_LOAD, PRE_LOAD, VALIDATES, VALIDATES_SCHEMA
from marshmallow.experimental.context import Context

from kktapp import domain
from kktapp.domain import DomainError, SettlementType, VatRate

log = logging.getLogger(__name__)

# Messages for what every field can report; marshmallow's own are English.
BASE_MESSAGES = {
    "required": "обязательное поле не указано",
    "null": "значение не указано (null): поле обязательно",
    "validator_failed": "недопустимое значение",
}


class FiscalContextData(typing.TypedDict, total=False):
    """What the fiscal fields read from the load context."""

    #: Receipt date: the VAT rate in force that day applies (fiscal-rules.md §1).
    on_date: dt.date
    #: conf ACCEPT_LEGACY_VAT: old names 18/20 mean today's general rate, or are refused.
    accept_legacy: bool
    #: Receipt type: on returns 20 and 20/120 are the returned settlement's rate, kept as given
    #: (:func:`kktapp.domain.parse_vat`). Absent: a sale.
    settlement: SettlementType | None
    #: conf ONEC_LINE_DISCOUNTS: a 1C line sum below price × quantity is a discount on that line.
    line_discounts: bool
    #: conf ONEC_INTERNET: 1C receipts are internet settlements (1125), so 1008 is required.
    internet: bool
    #: Most positions a receipt may have on the device (DeviceLimits.max_positions): a schema
    #: refuses more before it loads them one by one.
    max_positions: int
    #: Legacy VAT names already logged during this load (one line per name and receipt).
    legacy_logged: set[str]


#: Context manager carrying :class:`FiscalContextData` through ``schema.load``.
FiscalContext = Context[FiscalContextData]


def fiscal_context() -> FiscalContextData:
    """The load context of the current ``schema.load`` (empty outside one)."""
    return _context()


def _context() -> FiscalContextData:
    ctx = FiscalContext.get({})
    return ctx if isinstance(ctx, dict) else {}


class BaseSchema(Schema):
    """Schema base: unknown fields are an error (a typo must not silently drop data), in Russian."""

    error_messages = {
        "type": "ожидается объект JSON",
        "unknown": "неизвестное поле",
    }

    class Meta:
        unknown = RAISE


class QuickLoad:
    """``schema.load`` for the usual request — a complete, valid object — with less machinery.

    A valid 1C receipt is 11 loads (the document and each position); most of a load's cost is
    marshmallow's bookkeeping around the fields (error store, getters, hook dispatch), not the
    fields. Here each field's own ``deserialize`` runs in declaration order, then the schema's
    ``validates_schema`` methods, exactly as marshmallow calls them. Anything else — not a dict,
    an unknown or missing key, a failing field or check — goes to ``schema.load`` itself, so every
    refusal is marshmallow's own, field names and messages word for word. A schema with other
    hooks (pre/post-load, per-field validators) or options (many, partial, data_key) always does.
    A refused object runs its fields twice (a field that logs, logs twice); valid ones once.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self._fields, self._names, self._checks = self._plan(schema)

    @staticmethod
    def _plan(schema: Schema) -> tuple[tuple[tuple[str, fields.Field], ...] | None, frozenset[str], tuple[str, ...]]:
        hooks = getattr(type(schema), "_hooks", None)
        if not isinstance(hooks, dict) or any(hooks.get(tag) for tag in (PRE_LOAD, POST_LOAD, VALIDATES)):
            return None, frozenset(), ()
        checks = []
        for attr, many, kwargs in hooks.get(VALIDATES_SCHEMA, ()):
            if many or kwargs.get("pass_original"):
                return None, frozenset(), ()
            checks.append(attr)
        if schema.many or schema.partial or schema.unknown != RAISE:
            return None, frozenset(), ()
        pairs = tuple(schema.load_fields.items())
        if any(f.data_key is not None or f.attribute is not None or "." in name for name, f in pairs):
            return None, frozenset(), ()
        return pairs, frozenset(name for name, _ in pairs), tuple(checks)

    def __call__(self, data: Any) -> dict[str, Any]:
        """What ``schema.load(data)`` returns; raises its ValidationError."""
        if self._fields is None or type(data) is not dict or not self._names.issuperset(data):
            return self.schema.load(data)
        result: dict[str, Any] = {}
        try:
            for name, field in self._fields:
                value = field.deserialize(data.get(name, missing), name, data)
                if value is not missing:
                    result[name] = value
            for attr in self._checks:
                getattr(self.schema, attr)(result, partial=None, many=False, unknown=RAISE)
        except ValidationError:
            return self.schema.load(data)
        return result


class ValidatorsIfAny:
    """Mixin: skip validation when a field has no validators.

    marshmallow builds an ``And`` of the validators on every value (``_validate_all`` is a
    property); with none there is nothing it could refuse. Most fields of a receipt have none.
    """

    validators: list

    def _validate(self, value: Any) -> None:
        if self.validators:
            super()._validate(value)  # type: ignore[misc]


class String(ValidatorsIfAny, fields.String):
    """String with Russian messages."""

    default_error_messages = {**BASE_MESSAGES, "invalid": "ожидается строка", "invalid_utf8": "недопустимая строка"}


class DeviceText(String):
    """Text that a device prints or stores (item names, printed lines).

    Tabs and line breaks become spaces (pasted text; one log line says so); any other control
    or format character (NUL, ESC sequences, RLO) is refused: it would reach the printer as a
    command or turn a fiscal document's text around.
    """

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        cleaned = domain.spaces_for_breaks(text)
        if cleaned != text:
            log.info("поле %s: табуляция и переводы строк заменены пробелами", attr or "?")
        try:
            domain.check_device_text(cleaned, attr or "text")
        except DomainError as exc:
            raise ValidationError(exc.message) from None
        return cleaned


class Integer(ValidatorsIfAny, fields.Integer):
    """Strict integer (no "5" strings, no 5.5) with Russian messages."""

    default_error_messages = {**BASE_MESSAGES, "invalid": "ожидается целое число", "too_large": "слишком большое число"}

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("strict", True)
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        return super()._deserialize(value, attr, data, **kwargs)


class Boolean(ValidatorsIfAny, fields.Boolean):
    """JSON true/false (and the usual 1/0, "true"/"false" spellings) with Russian messages."""

    default_error_messages = {**BASE_MESSAGES, "invalid": "ожидается true или false"}


class Date(ValidatorsIfAny, fields.Date):
    """Date in a given format; the default is the 1C ``dd.mm.yyyy``."""

    default_error_messages = {
        **BASE_MESSAGES,
        "invalid": "ожидается дата в формате ДД.ММ.ГГГГ",
        "format": "дата не может быть записана: {input!r}",
    }

    def __init__(self, format: str = "%d.%m.%Y", **kwargs: Any) -> None:
        super().__init__(format=format, **kwargs)


class Nested(fields.Nested):
    """Nested object with a Russian type message."""

    default_error_messages = {**BASE_MESSAGES, "type": "ожидается объект JSON"}


class List(fields.List):
    """JSON array with Russian messages."""

    default_error_messages = {**BASE_MESSAGES, "invalid": "ожидается массив JSON"}


class Dict(fields.Dict):
    """JSON object with Russian messages."""

    default_error_messages = {**BASE_MESSAGES, "invalid": "ожидается объект JSON"}


class Money(ValidatorsIfAny, fields.Field):
    """Roubles in, integer kopecks out (Decimal/int/numeric string; never float or bool).

    ``allow_negative`` for the rare amounts that may be below zero; the limit is the largest
    sum the FN formats carry (99 999 999.99 ₽).
    """

    default_error_messages = {
        **BASE_MESSAGES,
        "negative": "сумма не может быть отрицательной",
        "too_large": "сумма больше 99 999 999,99 ₽",
    }

    def __init__(self, *, allow_negative: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.allow_negative = allow_negative

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        try:
            kopecks = domain.to_kopecks(value, field=attr or "sum")
        except DomainError as exc:
            raise ValidationError(exc.message) from None
        if kopecks < 0 and not self.allow_negative:
            raise self.make_error("negative")
        if abs(kopecks) > domain.MAX_MONEY:
            raise self.make_error("too_large")
        return kopecks

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Decimal | None:
        # Back to roubles as an exact Decimal: JSON writers that know Decimal print "325.12".
        return None if value is None else Decimal(int(value)).scaleb(-2)


class Quantity(ValidatorsIfAny, fields.Field):
    """Quantity: Decimal, greater than zero, at most three decimals (the ATOL command's limit)."""

    default_error_messages = BASE_MESSAGES

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Decimal:
        try:
            return domain.to_quantity(value, field=attr or "quantity")
        except DomainError as exc:
            raise ValidationError(exc.message) from None

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> Decimal | None:
        return value


class Vat(ValidatorsIfAny, fields.Field):
    """A VAT name or number → :class:`~kktapp.domain.VatRate` allowed on the receipt date.

    Legacy general rates (18, 20, "НДС18", "nds18") become the general rate on that date unless
    legacy names are switched off (see the module docstring for where the date comes from); on a
    return (context ``settlement``) 20 and 20/120 are kept as given, and so they are on a credit
    payment: ``method_key`` names the sibling field with the position's 1214, read from the raw
    object because fields load one by one.
    """

    default_error_messages = BASE_MESSAGES

    def __init__(self, *, on_date: dt.date | None = None, accept_legacy: bool | None = None,
                 method_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.on_date = on_date
        self.accept_legacy = accept_legacy
        self.method_key = method_key

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> VatRate:
        ctx = _context()
        on = self.on_date or ctx.get("on_date") or dt.date.today()
        accept = self.accept_legacy if self.accept_legacy is not None else ctx.get("accept_legacy", True)
        settlement = ctx.get("settlement")
        method = None
        if self.method_key and isinstance(data, dict):
            method = domain.payment_method_of(data.get(self.method_key))
        try:
            rate = domain.parse_vat(value, on, accept_legacy=bool(accept), field=attr or "tax", settlement=settlement,
                                    payment_method=method)
        except DomainError as exc:
            raise ValidationError(exc.message) from None
        logged = ctx.setdefault("legacy_logged", set()) if ctx else set()
        if domain.is_legacy_vat(value, settlement, method) and str(value) not in logged:
            # The rate on the receipt is not the number the caller sent: the log says so, once a
            # receipt per name (a 1C document with Tax 18 has it on every line).
            logged.add(str(value))
            log.info("устаревшая ставка НДС %r (поле %s) принята как общая ставка на %s: %s"
                     " (ACCEPT_LEGACY_VAT = False — отклонять)", value, attr or "tax", on.strftime("%d.%m.%Y"),
                     rate.value)
        return rate

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else VatRate(value).value


class CustomerContact(String):
    """Buyer's phone (+79991234567) or e-mail, tag 1008."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return domain.check_customer_contact(text, field=attr or "customer_contact")
        except DomainError as exc:
            raise ValidationError(exc.message) from None
