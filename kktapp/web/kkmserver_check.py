"""KKM Server's ``RegisterCheck`` and ``PrintDocument`` bodies → the service's receipt and text lines.

Field names and meanings are KKM Server's, as its public clients send them (sources in
/work/shared/docs/kkmserver-api.md §7): salesduck/kkmserver-types ``RegisterCheck.ts`` and
``checkStrings/*.ts``, DJAlone1992/kkmServerClasses ``Cheque.php`` / ``Position.php``,
alexanderfefelov/kkmserver-api ``RegisterCheckRequest.scala``. Fiscal rules are not restated
here: money, quantities and VAT go through :mod:`kktapp.web.fields` (hence
:mod:`kktapp.domain`), positions through :func:`kktapp.web.schemas.build_positions`, and the
receipt through :func:`kktapp.domain.check_receipt`, exactly as for the other contracts.

Decisions where the clients leave room:

* ``Tax`` is KKM Server's percentage-style number (−1, 0, 5, 7, 10, 22, 105, 107, 110, 122; old
  20, 120, 18, 118) and goes to :func:`kktapp.domain.parse_vat` as it is, with the receipt type,
  so 20/120/18 mean the general rate on the receipt date (the corrected settlement's date for
  corrections), exactly as the 1C endpoint maps them, and ACCEPT_LEGACY_VAT = False refuses them
  the same way; on returns (TypeCheck 1, 3, 11, 13) 20 and 120 are kept as given in either
  setting: a 2026 return of a 2025 sale is made at 20 % (kkmserver-api.md §7, fiscal-rules.md §1).
* Money (Price, Amount, the payments; DepositingCash's Amount) is rounded half-up to kopecks and
  the Warning names each rounded field: DJ writes Amount and the payments with five decimals, AF's
  Doubles carry binary noise (:func:`kkm_kopecks`). kkt's other contracts refuse such sums. When
  the payments as sent equal the lines as sent, the largest payment absorbs what rounding each
  line on its own adds (:func:`settle_rounding`). Quantities are not rounded: the device takes
  three decimals and DJ sends three.
* ``Amount`` is the line's final sum: below price × quantity the difference is the line's
  discount; above it (a markup) is refused, because the FN would see a sum that is not
  price × quantity.
* ``PrintText`` lines before the first ``Register`` are printed above the receipt, the others
  below it. ``BarCode`` is printed as a text line (the protocol layer has no barcode command
  yet) and the answer's Warning says so; ``PrintImage`` is skipped with a Warning.
* Marking codes (``GoodCodeData``, ``PackageQuantity``, calculation objects 31 and 33) are
  refused until marking is supported; so are agent and import data (1222–1226, 1229–1231, and
  ``CheckProps`` with agent tags), which change what the receipt means and cannot be dropped
  silently. ``EAN13`` (Muraveiko's client sends the goods' barcode there; the nomenclature code
  1162 is optional outside marking) is accepted and reported as not transmitted.
* Old clients (Muraveiko/kkmserver, 2017) pay with ``CashLessType1..3``, the cashless types
  configured in the register, by default card, credit and certificate: they count as
  ElectronicPayment, Credit and CashProvision.
* Text marks of KKM Server's PrintText (Muraveiko's docs): ``>#N#<text`` centres the text,
  ``left<#N#>right`` spreads the two parts to the edges of a line N characters narrower than the
  tape, ``left<#N#>>right`` puts both at the right edge N characters from it.
* Card acquiring and sub-licensing fields are accepted and ignored (no terminal is driven);
  ``ClientInfo``/``ClientINN`` (1227/1228), ``UserAttribute``, ``AdditionalAttribute``,
  ``SenderEmail``, ``AddressSettle`` are checked and reported in the Warning as not transmitted
  (the drivers write 1008, 1021, 1203, 1055 and 1187). ``PlaceMarket`` is tag 1187, the place of
  settlement (an internet sale: the site). ``AdditionalProps`` with ``Print`` (alexanderfefelov's
  client) are printed above or below the receipt.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from marshmallow import EXCLUDE, ValidationError, fields, validate, validates_schema

from kktapp import domain
from kktapp.domain import (
    MARKED_OBJECTS,
    MEASUREMENT_UNITS,
    PAYMENT_OBJECT_NAMES,
    Correction,
    DomainError,
    Payment,
    PaymentMethod,
    PaymentType,
    Receipt,
    SettlementType,
    TaxationSystem,
    TextLine,
)
from kktapp.errors import ValidationFailed
from kktapp.web import fields as kfields
from kktapp.web.common import validation_error
from kktapp.web.schemas import MAX_ITEMS, MAX_LINES, MAX_TEXT, build_positions

#: TypeCheck (tag 1054 plus correction) → receipt type [C: ST RegisterCheck.ts, DJ ChequeType.php, AF].
TYPE_CHECK = {
    0: SettlementType.SELL, 1: SettlementType.SELL_RETURN,
    2: SettlementType.SELL_CORRECTION, 3: SettlementType.SELL_RETURN_CORRECTION,
    10: SettlementType.BUY, 11: SettlementType.BUY_RETURN,
    12: SettlementType.BUY_CORRECTION, 13: SettlementType.BUY_RETURN_CORRECTION,
}
#: TaxVariant (tag 1055 as KKM Server numbers it) [C: ST TaxVariant.ts, AF SYSTEM_OF_TAXATION_*].
TAX_VARIANT = {
    0: TaxationSystem.OSN, 1: TaxationSystem.USN_INCOME, 2: TaxationSystem.USN_INCOME_OUTCOME,
    4: TaxationSystem.ESN, 5: TaxationSystem.PATENT,
}
#: ЕНВД was abolished on 01.01.2021; a receipt cannot carry it any more.
ENVD = 3
#: Receipt-level payment fields → payment type (tags 1031, 1081, 1215, 1216, 1217) [C: ST, DJ].
PAYMENT_FIELDS = {
    "Cash": PaymentType.CASH, "ElectronicPayment": PaymentType.ELECTRONIC,
    "AdvancePayment": PaymentType.PREPAID, "Credit": PaymentType.CREDIT, "CashProvision": PaymentType.OTHER,
}
#: Muraveiko's (2017) cashless types 1..3: "по умолчанию — оплата картой, кредитом, сертификатом" [S: MU].
LEGACY_PAYMENT_FIELDS = {
    "CashLessType1": PaymentType.ELECTRONIC, "CashLessType2": PaymentType.CREDIT,
    "CashLessType3": PaymentType.OTHER,
}
#: CheckProps tags of payment agents and money transfer operators (MU KkmCheckProperty): not writable.
AGENT_TAGS = frozenset({1005, 1016, 1026, 1044, 1045, 1073, 1074, 1075, 1082, 1083, 1119})
#: Fields of card acquiring and sub-licensing: accepted, nothing to do with them here.
IGNORED_FIELDS = (
    "PayByProcessing", "NumDeviceByProcessing", "ReceiptNumber", "PrintSlipAfterCheck", "PrintSlipForCashier",
    "RRNCode", "AuthorizationCode", "KeySubLicensing",
)
#: Checked but not written to the device (the drivers write 1008, 1021, 1203, 1055 and 1187).
NOT_TRANSMITTED = ("ClientInfo", "ClientINN", "SenderEmail", "AddressSettle", "UserAttribute",
                   "AdditionalAttribute", "CheckProps")
MARKING_TEXT = "коды маркировки пока не поддерживаются сервисом kkt; пробейте этот товар без кода или на другой кассе"
EGAIS_TEXT = "продажа алкоголя с передачей в ЕГАИС сервисом kkt не поддерживается"
UNSUPPORTED_TEXT = "не поддерживается сервисом kkt (реквизит не может быть передан в ККТ)"
BARCODE_WARNING = "штрих-коды печатаются текстом: печать штрих-кода сервисом kkt пока не поддерживается"
IMAGE_WARNING = "картинки (PrintImage) не печатаются сервисом kkt и пропущены"
ACQUIRING_WARNING = "оплата картой через терминал (PayByProcessing) сервисом kkt не выполняется"
#: 1179 is the FNS order's number, sent only with a correction by order (fiscal-rules.md §2);
#: clients that fill CorrectionBaseNumber for a correction on their own initiative (an FFD 1.05
#: habit: "номер документа основания") keep working, told that it was left out.
ORDER_NUMBER_WARNING = ("CorrectionBaseNumber не передан в ККТ: номер предписания (тег 1179) указывается только "
                        "для коррекции по предписанию (CorrectionType 1)")
CASHIER_INN_WARNING = ("CashierVATIN не передан в ККТ: ИНН кассира (тег 1203) передаётся только вместе с его "
                       "именем в CashierName; документ оформлен на кассира из настроек сервиса")
ROUNDED_WARNING = "суммы с долями копейки округлены до копеек: {fields}"
#: Rounded fields named in full in the Warning; the rest are counted.
ROUNDED_SHOWN = 5
PAYMENT_SETTLED_WARNING = ("оплата {name} = {amount}: оплаты равны сумме строк до долей копейки, а округлённые "
                           "строки дают {total}")


class Schema(kfields.BaseSchema):
    """KKM Server schemas ignore fields they do not know, as the original does with its clients' extras."""

    class Meta:
        unknown = EXCLUDE


def _one_of(values: Mapping[int, Any] | list[int], what: str) -> validate.OneOf:
    choices = list(values)
    return validate.OneOf(choices, error=f"неизвестное значение {what}; допустимо: " + ", ".join(map(str, choices)))


class KkmInteger(kfields.Integer):
    """An integer that may come as a JSON string ("0"), as some clients write enums."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
            value = int(value)
        return super()._deserialize(value, attr, data, **kwargs)


class OptionalText(kfields.String):
    """A string where null means empty."""

    def __init__(self, length: int = MAX_TEXT, **kwargs: Any) -> None:
        kwargs.setdefault("load_default", "")
        kwargs.setdefault("allow_none", True)
        super().__init__(validate=validate.Length(max=length, error=f"длина не больше {length}"), **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return super()._deserialize(value, attr, data, **kwargs).strip()


def _empty(value: Any) -> bool:
    return value in (None, "", 0, [], {}) or (isinstance(value, Mapping) and not any(value.values()))


class RegisterSchema(Schema):
    """``CheckStrings[].Register``: one fiscal line."""

    Name = kfields.String(required=True, validate=validate.Length(
        min=1, max=domain.MAX_NAME, error=f"наименование должно быть от 1 до {domain.MAX_NAME} символов"))
    Quantity = kfields.Quantity(required=True)
    Price = kfields.Money(required=True)
    Amount = kfields.Money(required=True)
    Department = KkmInteger(load_default=0, allow_none=True, validate=validate.Range(
        min=0, max=99, error="отдел (секция) — число от 0 до 99"))
    Tax = kfields.Vat(required=True, method_key="SignMethodCalculation")
    SignMethodCalculation = KkmInteger(load_default=int(PaymentMethod.FULL_PAYMENT), allow_none=True,
                                       validate=_one_of([int(m) for m in PaymentMethod], "признака способа расчёта"))
    SignCalculationObject = KkmInteger(load_default=1, allow_none=True,
                                       validate=_one_of(sorted(set(PAYMENT_OBJECT_NAMES.values())),
                                                        "признака предмета расчёта"))
    MeasureOfQuantity = KkmInteger(load_default=0, allow_none=True,
                                   validate=_one_of(sorted(set(MEASUREMENT_UNITS.values())), "меры количества"))
    GoodCodeData = fields.Raw(load_default=None, allow_none=True)
    EAN13 = fields.Raw(load_default=None, allow_none=True)
    PackageQuantity = fields.Raw(load_default=None, allow_none=True)
    AgentSign = fields.Raw(load_default=None, allow_none=True)
    AgentData = fields.Raw(load_default=None, allow_none=True)
    PurveyorData = fields.Raw(load_default=None, allow_none=True)
    CountryOfOrigin = fields.Raw(load_default=None, allow_none=True)
    CustomsDeclaration = fields.Raw(load_default=None, allow_none=True)
    ExciseAmount = fields.Raw(load_default=None, allow_none=True)
    #: Muraveiko's alcohol data for EGAIS (Barcode, Ean, Volume): kkt does not talk to EGAIS.
    EGAIS = fields.Raw(load_default=None, allow_none=True)

    @validates_schema
    def _refused(self, data: dict, **kwargs: Any) -> None:
        for name in ("GoodCodeData", "PackageQuantity"):
            if not _empty(data.get(name)):
                raise ValidationError(MARKING_TEXT, name)
        if data.get("SignCalculationObject") in MARKED_OBJECTS:
            raise ValidationError(f"товар с кодом маркировки: {MARKING_TEXT}", "SignCalculationObject")
        if data.get("AgentSign") not in (None, ""):  # 0 is a sign too: bank payment agent
            raise ValidationError(UNSUPPORTED_TEXT, "AgentSign")
        for name in ("AgentData", "PurveyorData", "CountryOfOrigin", "CustomsDeclaration", "ExciseAmount"):
            if not _empty(data.get(name)):
                raise ValidationError(UNSUPPORTED_TEXT, name)
        if not _empty(data.get("EGAIS")):
            raise ValidationError(EGAIS_TEXT, "EGAIS")


class PrintTextSchema(Schema):
    """``CheckStrings[].PrintText``: Font 0 device setting, 1 largest … 4 smallest; Intensity 0..15 [S: ST]."""

    Text = kfields.String(required=True, allow_none=False,
                          validate=validate.Length(max=MAX_TEXT, error=f"длина строки не больше {MAX_TEXT}"))
    Font = KkmInteger(load_default=0, allow_none=True, validate=validate.Range(
        min=0, max=4, error="шрифт — число от 0 до 4"))
    Intensity = KkmInteger(load_default=0, allow_none=True, validate=validate.Range(
        min=0, max=15, error="яркость — число от 0 до 15"))


class BarCodeSchema(Schema):
    """``CheckStrings[].BarCode`` [S: ST BarcodeType.ts, DJ BarCodeType.php]."""

    BarcodeType = kfields.String(required=True, validate=validate.OneOf(
        ["EAN13", "CODE39", "CODE128", "PDF417", "QR"], error="тип штрих-кода: EAN13, CODE39, CODE128, PDF417 или QR"))
    Barcode = kfields.String(required=True, validate=validate.Length(
        min=1, max=MAX_TEXT, error=f"значение штрих-кода: от 1 до {MAX_TEXT} символов"))


class CheckStringSchema(Schema):
    """One element of ``CheckStrings``: exactly one of Register, PrintText, BarCode, PrintImage."""

    Register = kfields.Nested(RegisterSchema, allow_none=True)
    PrintText = kfields.Nested(PrintTextSchema, allow_none=True)
    BarCode = kfields.Nested(BarCodeSchema, allow_none=True)
    PrintImage = fields.Raw(allow_none=True)

    @validates_schema
    def _exactly_one(self, data: dict, **kwargs: Any) -> None:
        given = [k for k in ("Register", "PrintText", "BarCode", "PrintImage") if data.get(k) is not None]
        if len(given) != 1:
            raise ValidationError("в элементе должно быть ровно одно из Register, PrintText, BarCode, PrintImage")


class AdditionalPropSchema(Schema):
    """alexanderfefelov/kkmserver-api ``AdditionalProps``: printed name and value."""

    Print = kfields.Boolean(load_default=False)
    PrintInHeader = kfields.Boolean(load_default=True)
    NameProp = OptionalText(64)
    Prop = OptionalText(MAX_TEXT)


class CheckPropSchema(Schema):
    """Muraveiko's ``CheckProps``: a tag and its value, optionally printed."""

    Print = kfields.Boolean(load_default=False, allow_none=True)
    PrintInHeader = kfields.Boolean(load_default=True, allow_none=True)
    Teg = KkmInteger(load_default=0, allow_none=True)
    Prop = OptionalText(MAX_TEXT)

    @validates_schema
    def _agent(self, data: dict, **kwargs: Any) -> None:
        if data.get("Teg") in AGENT_TAGS:
            raise ValidationError(f"тег {data['Teg']} (данные агента) {UNSUPPORTED_TEXT}", "Teg")


class TaxVariantField(fields.Field):
    """``TaxVariant``: 0..5 as a number or a string; "" or null means "as registered"."""

    default_error_messages = {"invalid": "система налогообложения: 0 ОСН, 1 УСН доход, 2 УСН доход − расход, "
                                         "4 ЕСХН, 5 патент (или пусто)",
                              "envd": "ЕНВД (3) отменён с 01.01.2021; укажите действующую систему налогообложения"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> TaxationSystem | None:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = str(value).strip()
        if isinstance(value, bool) or not re.fullmatch(r"\d", text):
            raise self.make_error("invalid")
        if int(text) == ENVD:
            raise self.make_error("envd")
        if int(text) not in TAX_VARIANT:
            raise self.make_error("invalid")
        return TAX_VARIANT[int(text)]


class CorrectionDate(fields.Field):
    """``CorrectionBaseDate``: ``2017-06-21T15:30:45`` or ``2017-06-21`` (tag 1178)."""

    default_error_messages = {"invalid": "ожидается дата ГГГГ-ММ-ДД или ГГГГ-ММ-ДДTчч:мм:сс"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> dt.date:
        try:
            return dt.datetime.fromisoformat(str(value).strip()).date()
        except ValueError:
            raise self.make_error("invalid") from None


class Cashier(Schema):
    """Cashier fields of every KKM Server command; DJAlone1992's client spells the INN ``CashierVatin``."""

    CashierName = OptionalText(domain.MAX_CASHIER_NAME)
    CashierVATIN = OptionalText(12)
    CashierVatin = OptionalText(12)

    @validates_schema
    def _inn(self, data: dict, **kwargs: Any) -> None:
        if data.get("CashierName"):
            try:
                domain.check_cashier_name(data["CashierName"], "CashierName")
            except DomainError as exc:
                raise ValidationError(exc.message, "CashierName") from None
        for name in ("CashierVATIN", "CashierVatin"):
            inn = data.get(name) or ""
            if inn and not (inn.isdigit() and len(inn) == 12):
                raise ValidationError("ИНН кассира — 12 цифр", name)


class RegisterCheckSchema(Cashier):
    """``RegisterCheck`` [S: ST RegisterCheck.ts; fields C with DJ Cheque.php and AF]."""

    IsFiscalCheck = kfields.Boolean(load_default=True, allow_none=True)
    TypeCheck = KkmInteger(load_default=None, allow_none=True, validate=_one_of(TYPE_CHECK, "TypeCheck"))
    NotPrint = kfields.Boolean(load_default=False, allow_none=True)
    NumberCopies = KkmInteger(load_default=0, allow_none=True, validate=validate.Range(
        min=0, max=10, error="копий — от 0 до 10"))
    ClientAddress = OptionalText(64)
    ClientInfo = OptionalText(256)
    ClientINN = OptionalText(12)
    SenderEmail = OptionalText(64)
    AddressSettle = OptionalText(256)
    #: Tag 1187, "место расчетов … если не задано — из регистрационных данных ККТ" [S: ST].
    PlaceMarket = OptionalText(domain.MAX_SETTLEMENT_PLACE)
    TaxVariant = TaxVariantField(load_default=None, allow_none=True)
    CorrectionType = KkmInteger(load_default=0, allow_none=True, validate=_one_of([0, 1], "CorrectionType"))
    CorrectionBaseDate = CorrectionDate(load_default=None, allow_none=True)
    CorrectionBaseNumber = OptionalText(64)
    UserAttribute = fields.Raw(load_default=None, allow_none=True)
    AdditionalAttribute = fields.Raw(load_default=None, allow_none=True)
    AdditionalProps = kfields.List(kfields.Nested(AdditionalPropSchema), load_default=list, allow_none=True)
    CheckProps = kfields.List(kfields.Nested(CheckPropSchema), load_default=list, allow_none=True)
    CheckStrings = kfields.List(kfields.Nested(CheckStringSchema), required=True,
                                validate=validate.Length(min=1, max=MAX_ITEMS + MAX_LINES,
                                                         error="в чеке нет строк или их слишком много"))
    Cash = kfields.Money(load_default=0, allow_none=True)
    ElectronicPayment = kfields.Money(load_default=0, allow_none=True)
    AdvancePayment = kfields.Money(load_default=0, allow_none=True)
    Credit = kfields.Money(load_default=0, allow_none=True)
    CashProvision = kfields.Money(load_default=0, allow_none=True)
    CashLessType1 = kfields.Money(load_default=0, allow_none=True)
    CashLessType2 = kfields.Money(load_default=0, allow_none=True)
    CashLessType3 = kfields.Money(load_default=0, allow_none=True)
    PayByProcessing = fields.Raw(load_default=None, allow_none=True)

    @validates_schema
    def _fiscal(self, data: dict, **kwargs: Any) -> None:
        if data.get("ClientINN") and not (data["ClientINN"].isdigit() and len(data["ClientINN"]) in (10, 12)):
            raise ValidationError("ИНН покупателя — 10 или 12 цифр", "ClientINN")
        if data.get("ClientAddress"):
            try:
                domain.check_customer_contact(data["ClientAddress"], "ClientAddress")
            except DomainError as exc:
                raise ValidationError(exc.message, "ClientAddress") from None
        if data.get("IsFiscalCheck") is False:
            return
        if data.get("TypeCheck") is None:
            raise ValidationError("тип чека не указан (0 приход, 1 возврат прихода, 10 расход, …)", "TypeCheck")
        if TYPE_CHECK[data["TypeCheck"]].is_correction and data.get("CorrectionBaseDate") is None:
            raise ValidationError("для чека коррекции нужна дата исправляемого расчёта (тег 1178)",
                                  "CorrectionBaseDate")
        if data.get("CorrectionType") == 1 and not data.get("CorrectionBaseNumber") \
                and TYPE_CHECK[data["TypeCheck"]].is_correction:
            raise ValidationError("для коррекции по предписанию нужен номер предписания (тег 1179)",
                                  "CorrectionBaseNumber")


class PrintDocumentSchema(Schema):
    """``PrintDocument``: a non-fiscal document of PrintText and BarCode strings."""

    CheckStrings = kfields.List(kfields.Nested(CheckStringSchema), required=True,
                                validate=validate.Length(min=1, max=MAX_LINES, error="нет строк или их слишком много"))


@dataclass
class ParsedCheck:
    """What a RegisterCheck body became: a receipt, or lines of a non-fiscal print, and the warnings."""

    receipt: Receipt | None
    lines: list[TextLine]
    warnings: list[str] = field(default_factory=list)
    copies: int = 0


def receipt_type(body: Mapping[str, Any]) -> SettlementType | None:
    """The receipt type the raw body's TypeCheck names (None when absent or not one).

    Read from the raw body first, because the Tax fields need it while they load.
    """
    type_check = body.get("TypeCheck")
    try:
        return TYPE_CHECK.get(int(type_check)) if type_check not in (None, "") else None
    except (TypeError, ValueError):
        return None


def receipt_date(body: Mapping[str, Any], today: dt.date) -> dt.date:
    """The date whose VAT rates apply: the corrected settlement's date for corrections, else today.

    Read from the raw body first, because the Tax fields need it while they load.
    """
    settlement = receipt_type(body)
    if settlement is not None and settlement.is_correction and body.get("CorrectionBaseDate"):
        try:
            return dt.datetime.fromisoformat(str(body["CorrectionBaseDate"]).strip()).date()
        except ValueError:
            return today
    return today


@dataclass(frozen=True)
class Rounded:
    """A money field sent with fractions of a kopeck: where, as sent (exactly), and as kopecks."""

    path: str
    exact: Decimal
    kopecks: int


def kkm_kopecks(value: Any, path: str) -> tuple[int, Rounded | None]:
    """A KKM Server money value → kopecks rounded half-up, and what was rounded (None: nothing).

    The clients send sub-kopeck sums: DJ writes Amount and the payments with five decimals
    (``Helper::toFloat($amount, 5)`` of price × thousandths of a unit: "33.29667"), AF writes Doubles
    (99.99000000000001). Raises DomainError for what is not a sum at all.
    """
    kopecks = domain.to_kopecks(value, path, round_half_up=True)
    if type(value) is int:
        return kopecks, None
    exact = domain.parse_roubles(value, path)
    return kopecks, (Rounded(path, exact, kopecks) if exact * 100 != kopecks else None)


def round_money(schema: Schema, data: Any, path: str = "") -> tuple[Any, list[Rounded]]:
    """A copy of the raw body with every Money field of ``schema`` rounded half-up to kopecks.

    Only this contract rounds (:func:`kkm_kopecks` says why); the money fields are the schema's own
    (nested ones included), so a field added to a schema is rounded too. A value that is not a
    sum is left for the field to refuse in its own words.
    """
    if not isinstance(data, Mapping):
        return data, []
    out = dict(data)
    rounded: list[Rounded] = []
    for name, fld in schema.fields.items():
        value = out.get(name)
        if value is None:
            continue
        where = f"{path}{name}"
        if isinstance(fld, kfields.Money):
            try:
                kopecks, change = kkm_kopecks(value, where)
            except DomainError:
                continue
            if change is not None:
                out[name] = Decimal(kopecks).scaleb(-2)
                rounded.append(change)
        elif isinstance(fld, fields.Nested) and isinstance(fld.schema, Schema):
            out[name], inner = round_money(fld.schema, value, f"{where}.")
            rounded.extend(inner)
        elif isinstance(fld, fields.List) and isinstance(fld.inner, fields.Nested) and isinstance(value, list):
            items = []
            for i, item in enumerate(value):
                item, inner = round_money(fld.inner.schema, item, f"{where}.{i}.")  # type: ignore[arg-type]
                items.append(item)
                rounded.extend(inner)
            out[name] = items
    return out, rounded


def rounded_warning(rounded: list[Rounded]) -> str:
    """The Warning naming the rounded fields ("" when none was)."""
    if not rounded:
        return ""
    shown = [f"{r.path} {r.exact} → {domain.format_rub(r.kopecks)}" for r in rounded[:ROUNDED_SHOWN]]
    if len(rounded) > ROUNDED_SHOWN:
        shown.append(f"и ещё {len(rounded) - ROUNDED_SHOWN}")
    return ROUNDED_WARNING.format(fields="; ".join(shown))


def _load(schema: Schema, body: Mapping[str, Any], config: Mapping[str, Any], today: dt.date,
          rounded: list[Rounded] | None = None) -> dict:
    """Load a body with the fiscal context; money rounded to kopecks first, each rounding added to ``rounded``."""
    ctx = {"on_date": receipt_date(body, today), "accept_legacy": bool(config.get("ACCEPT_LEGACY_VAT", True)),
           "settlement": receipt_type(body)}
    body, changes = round_money(schema, body)
    if rounded is not None:
        rounded.extend(changes)
    try:
        with kfields.FiscalContext(ctx):  # type: ignore[arg-type]
            return schema.load(body)  # type: ignore[return-value]
    except ValidationError as exc:
        raise validation_error(exc) from None


_CENTRED = re.compile(r"^>#(\d+)#<(.*)$", re.S)
_SPREAD = re.compile(r"^(.*?)<#(\d+)#>(>?)(.*)$", re.S)


def kkm_text(text: str, width: int) -> str:
    """KKM Server's alignment marks laid out for a tape ``width`` characters wide (see the module doc)."""
    match = _CENTRED.match(text)
    if match:
        return match.group(2).strip().center(max(0, width - int(match.group(1)))).rstrip()
    match = _SPREAD.match(text)
    if match:
        left, narrower, both_right, right = match.group(1), int(match.group(2)), match.group(3), match.group(4)
        if both_right:
            return left.rjust(max(0, width - narrower)) + right.rjust(narrower)
        room = max(len(left) + len(right) + 1, width - narrower)
        return left + " " * (room - len(left) - len(right)) + right
    return text


def text_line(item: Mapping[str, Any], warnings: list[str], width: int = 48) -> TextLine | None:
    """A PrintText or BarCode element as a printed line (None for a skipped PrintImage)."""
    if item.get("PrintText") is not None:
        pt = item["PrintText"]
        font = pt.get("Font") or 0
        # Font 1 is the largest, 4 the smallest; ATOL's text command has double width and height only.
        double_width = font == 1
        return TextLine(kkm_text(pt["Text"], width // 2 if double_width else width),
                        bold=(pt.get("Intensity") or 0) >= 10, double_width=double_width,
                        double_height=font in (1, 2))
    if item.get("BarCode") is not None:
        if BARCODE_WARNING not in warnings:
            warnings.append(BARCODE_WARNING)
        return TextLine(item["BarCode"]["Barcode"], align="center")
    if IMAGE_WARNING not in warnings:
        warnings.append(IMAGE_WARNING)
    return None


def _cashier(data: Mapping[str, Any], config: Mapping[str, Any], warnings: list[str]) -> tuple[str, str]:
    """The cashier (1021, 1203): the client's, else the settings'. An INN without a name is
    not paired with the settings' name (another person's); the client is told it was left out."""
    name = data.get("CashierName") or ""
    inn = data.get("CashierVATIN") or data.get("CashierVatin") or ""
    if not name:
        if inn:
            warnings.append(CASHIER_INN_WARNING)
        return str(config.get("CASHIER_NAME") or ""), str(config.get("CASHIER_INN") or "")
    return name, inn


def cashier_params(body: Mapping[str, Any], config: Mapping[str, Any], today: dt.date,
                   warnings: list[str]) -> dict[str, str]:
    """CashierName / CashierVATIN of a shift or cash command, checked (defaults from conf)."""
    data = _load(Cashier(), body, config, today)
    name, inn = _cashier(data, config, warnings)
    return {k: v for k, v in (("cashier_name", name), ("cashier_inn", inn)) if v}


def _rename(string_index: list[int], field_name: str) -> str:
    """Domain and build_positions field names → the client's CheckStrings paths."""
    match = re.fullmatch(r"(?:register\.(\d+)|positions\[(\d+)\])\.?(\w*)", field_name)
    if match:
        i = int(match.group(1)) if match.group(1) is not None else int(match.group(2)) - 1
        attr = {"amount": "Amount", "discount": "Amount", "price": "Price", "name": "Name",
                "quantity": "Quantity", "vat": "Tax", "payment_object": "SignCalculationObject",
                "department": "Department"}.get(match.group(3), match.group(3))
        where = f"CheckStrings.{string_index[i]}.Register" if 0 <= i < len(string_index) else "CheckStrings"
        return f"{where}.{attr}" if attr else where
    return {"payments": "Cash", "customer_contact": "ClientAddress", "cashier_inn": "CashierVATIN",
            "cashier_name": "CashierName", "positions": "CheckStrings", "total": "CheckStrings",
            "correction": "CorrectionBaseDate", "correction.order_number": "CorrectionBaseNumber",
            "settlement_place": "PlaceMarket"}.get(field_name, field_name)


def settle_rounding(data: dict, string_index: list[int], rounded: list[Rounded]) -> str:
    """Make the payments cover the rounded lines when the client's exact sums agreed.

    Each line is rounded on its own (its sum must stay price × quantity to the kopeck), so two
    lines of 1.115 ₽ make 2.24 ₽ while DJ's Cash, their exact sum 2.23 ₽, rounds to 2.23 ₽: the
    receipt would be refused as underpaid (or, by card, overpaid). When the payments as sent equal
    the lines as sent, the largest payment takes the difference (half a kopeck per rounded field
    at most). Returns the Warning, "" when nothing changed.
    """
    if not rounded:
        return ""
    exact = {r.path: r.exact for r in rounded}
    lines = [(f"CheckStrings.{i}.Register.Amount", data["CheckStrings"][i]["Register"]["Amount"])
             for i in string_index]
    paid = [(name, data[name]) for name in (*PAYMENT_FIELDS, *LEGACY_PAYMENT_FIELDS) if data.get(name)]
    if not paid:
        return ""

    def sent(path: str, kopecks: int) -> Decimal:
        return exact.get(path, Decimal(kopecks).scaleb(-2))

    total = sum(kopecks for _, kopecks in lines)
    difference = total - sum(kopecks for _, kopecks in paid)
    if not difference or sum(sent(p, k) for p, k in paid) != sum(sent(p, k) for p, k in lines):
        return ""
    name, amount = max(paid, key=lambda pair: pair[1])
    if amount + difference <= 0:
        return ""
    data[name] = amount + difference
    return PAYMENT_SETTLED_WARNING.format(name=name, amount=domain.format_rub(data[name]),
                                          total=domain.format_rub(total))


def payments(data: Mapping[str, Any]) -> tuple[Payment, ...]:
    """The receipt's payments by type (kopecks), the legacy cashless types added to theirs."""
    paid: dict[PaymentType, int] = {}
    for table in (PAYMENT_FIELDS, LEGACY_PAYMENT_FIELDS):
        for name, kind in table.items():
            if data.get(name):
                paid[kind] = paid.get(kind, 0) + data[name]
    return tuple(Payment(kind, amount) for kind, amount in paid.items())


def parse_register_check(body: Mapping[str, Any], config: Mapping[str, Any], today: dt.date,
                         width: int = 48) -> ParsedCheck:
    """Validate a RegisterCheck body and build the receipt (or the non-fiscal lines); raises ValidationFailed."""
    rounded: list[Rounded] = []
    data = _load(RegisterCheckSchema(), body, config, today, rounded)
    warnings: list[str] = [w for w in [rounded_warning(rounded)] if w]
    header: list[TextLine] = []
    footer: list[TextLine] = []
    items: list[dict] = []
    string_index: list[int] = []
    for i, item in enumerate(data["CheckStrings"]):
        if item.get("Register") is not None:
            reg = item["Register"]
            full = domain.position_amount(reg["Price"], reg["Quantity"])
            entry = {"name": reg["Name"], "price": reg["Price"], "quantity": reg["Quantity"], "tax": reg["Tax"],
                     "payment_method": reg.get("SignMethodCalculation") or int(PaymentMethod.FULL_PAYMENT),
                     "payment_object": reg.get("SignCalculationObject") or 1,
                     "unit": reg.get("MeasureOfQuantity") or 0, "department": reg.get("Department") or 0}
            # Amount is the final sum; a smaller one is the line's discount (one kopeck is rounding).
            if reg["Amount"] < full - 1:
                entry["discount"] = full - reg["Amount"]
            else:
                entry["amount"] = reg["Amount"]
            items.append(entry)
            string_index.append(i)
            continue
        line = text_line(item, warnings, width)
        if line is not None:
            (footer if items else header).append(line)
    for prop in [*(data.get("AdditionalProps") or []), *(data.get("CheckProps") or [])]:
        if prop.get("Print") and prop.get("Prop"):
            name = prop.get("NameProp") or ""
            line = TextLine(f"{name}: {prop['Prop']}" if name else prop["Prop"])
            (header if prop.get("PrintInHeader", True) is not False else footer).append(line)
    if data.get("PayByProcessing") is True:
        warnings.append(ACQUIRING_WARNING)
    not_sent = [name for name in NOT_TRANSMITTED if not _empty(data.get(name))]
    if any(not _empty(item["Register"].get("EAN13")) for item in data["CheckStrings"] if item.get("Register")):
        not_sent.append("EAN13")
    if not_sent:
        warnings.append("не передаются в ККТ сервисом kkt: " + ", ".join(not_sent))
    if data.get("IsFiscalCheck") is False:
        if items:
            raise ValidationFailed("CheckStrings", "в нефискальном документе (IsFiscalCheck = false) не может быть "
                                                   "строк Register")
        lines = header + footer
        if not lines:
            raise ValidationFailed("CheckStrings", "нет строк для печати")
        return ParsedCheck(None, lines, warnings, data.get("NumberCopies") or 0)
    if not items:
        raise ValidationFailed("CheckStrings", "в чеке нет ни одной строки Register")
    settled = settle_rounding(data, string_index, rounded)
    if settled:
        warnings.append(settled)
    try:
        positions = build_positions(items, 0, prefix="register")
        settlement = TYPE_CHECK[data["TypeCheck"]]
        correction = None
        if settlement.is_correction:
            by_order = data.get("CorrectionType") == 1
            if not by_order and data.get("CorrectionBaseNumber"):
                warnings.append(ORDER_NUMBER_WARNING)
            correction = Correction(by_order=by_order, date=data["CorrectionBaseDate"],
                                    order_number=(data.get("CorrectionBaseNumber") or "") if by_order else "")
        taxation = data.get("TaxVariant")
        if taxation is None and config.get("TAXATION"):
            taxation = domain.TAXATION_NAMES[config["TAXATION"]]
        name, inn = _cashier(data, config, warnings)
        receipt = Receipt(
            type=settlement,
            positions=tuple(positions),
            payments=payments(data),
            taxation=taxation,
            customer_contact=data.get("ClientAddress") or "",
            electronic_only=bool(data.get("NotPrint")),
            cashier_name=name,
            cashier_inn=inn,
            header=tuple(header),
            footer=tuple(footer),
            correction=correction,
            test_mode=bool(config.get("TEST_MODE", False)),
            settlement_place=data.get("PlaceMarket") or "",
        )
        domain.check_receipt(receipt)
    except DomainError as exc:
        raise validation_error(exc, lambda f: _rename(string_index, f)) from None
    return ParsedCheck(receipt, [], warnings, data.get("NumberCopies") or 0)


def parse_print_document(body: Mapping[str, Any], config: Mapping[str, Any], today: dt.date,
                         width: int = 48) -> ParsedCheck:
    """Validate a PrintDocument body: PrintText and BarCode strings only."""
    data = _load(PrintDocumentSchema(), body, config, today)
    warnings: list[str] = []
    lines: list[TextLine] = []
    for i, item in enumerate(data["CheckStrings"]):
        if item.get("Register") is not None:
            raise ValidationFailed(f"CheckStrings.{i}.Register", "фискальные строки печатаются командой RegisterCheck")
        line = text_line(item, warnings, width)
        if line is not None:
            lines.append(line)
    if not lines:
        raise ValidationFailed("CheckStrings", "нет строк для печати")
    return ParsedCheck(None, lines, warnings)


def kkm_tax(rate: domain.VatRate) -> int:
    """The KKM Server ``Tax`` number of a rate: −1 for no VAT, else the digits of its canonical name."""
    return -1 if rate is domain.VatRate.NONE else int(rate.value.removeprefix("vat"))


def roubles(kopecks: int) -> Decimal:
    """Kopecks as an exact rouble number for KKM Server's answers (written as a JSON number)."""
    return Decimal(int(kopecks)).scaleb(-2)
