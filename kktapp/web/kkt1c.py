"""The 1C:Enterprise contract: ``POST /kkt`` fiscalises a payment document, ``GET /kkt`` shows status.

The request is exactly what the original mod_wsgi service received from 1C (README, seed 004):
raw UTF-8 JSON, tab-indented, sent with ``Content-Type: application/x-www-form-urlencoded``::

    {"DocNumber": "ТР00-003655", "DocDate": "06.10.2017", "DocSumm": 1950,
     "Goods": {"Position_1": {"Name": "…", "Price": 325, "Quantity": 6, "Tax": 22,
                              "PositionSumm": 1950}, …}}

Our optional additions: ``PaymentType`` (cash, electronic, prepaid, credit, other; default
conf DEFAULT_PAYMENT), ``CustomerContact`` (tag 1008), ``ElectronicOnly`` (do not print; needs
CustomerContact) and ``Device`` (number, default 1). The site's payments are internet
settlements (fiscal-rules.md §5): with conf ONEC_INTERNET every receipt carries 1125 and the
place of settlement ONEC_SETTLEMENT_PLACE (1187, the site's address), and CustomerContact
becomes required.

The answer is always JSON, even for a body that is not JSON or a wrong URL::

    {"check_number": 12, "result_code": 0, "result_description": "Чек пробит",
     "fiscal_document_number": 34, "fiscal_sign": "…", "shift_number": 5,
     "receipt_datetime": "2026-03-01T10:00:00", "doc_number": "ТР00-003655", "test_mode": false}

``result_code`` is 0 only when the receipt is fiscalised (or, in TEST_MODE, would have been);
otherwise the device's code (1..255) or a service code from :class:`kktapp.errors.ResultCode`.
``check_number`` is 0 unless a receipt was fiscalised, because the 1C code stores it as the
document's receipt number and treats 0 as "not printed yet". The HTTP status tells the class:
200 done, 401/403/429 access, 404/405 wrong URL or method, 409 DocNumber reused for another
document, 422 bad input, 502 device error, 503 outcome unknown (the link broke mid-receipt; the
service settles it from the device), 202 queued (no link, held behind an unsettled document or
the wait ran out: the receipt stays in the queue and prints by itself).

A repeat of the same document (DocNumber and DocDate) with the same body gets the stored answer
and never a second receipt. 1C numbers documents within a period (a year, say), so the journal
key is both: the same number on another date is another document.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import re
import time
import unicodedata
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, current_app, g, render_template, request, url_for
from marshmallow import ValidationError, validate, validates_schema
from marshmallow import fields as ma_fields
from werkzeug.exceptions import HTTPException

import kktapp
from kktapp import domain, errors
from kktapp.device import DeviceLimits
from kktapp.domain import (
    DomainError,
    PaymentType,
    Position,
    Receipt,
    SettlementType,
    TaxationSystem,
    format_rub,
)
from kktapp.errors import KKTError, ResultCode, ValidationFailed
from kktapp.exchange import exchange_of
from kktapp.journal import DONE, FAILED, RECEIPT, UNKNOWN, Job
from kktapp.owner import Reasons
from kktapp.service import cancelled_by_operator, fingerprint
from kktapp.web import fields, present, statuspage
from kktapp.web.auth import authenticate, client_address, require
from kktapp.web.common import device_limits, http_headers, log_unexpected, read_json, validation_error

log = logging.getLogger(__name__)

bp = Blueprint("kkt1c", __name__, template_folder="../templates")

SOURCE = "1c"
DONE_TEXT = "Чек пробит"
TEST_MODE_TEXT = "Тестовый режим: чек прошёл бы успешно, ничего не фискализировано"
ELECTRONIC_TEXT = "Чек пробит (электронный, без печати)"
METHOD_TEXT = "метод {method} не поддерживается: чек — POST, страница состояния — GET"
NOT_FOUND_TEXT = "адрес {path} не найден: чек отправляйте POST-запросом на /kkt"

#: Seconds to wait for a receipt when the device is already known to be unreachable.
LINK_DOWN_WAIT = 5.0
_POSITION_KEY = re.compile(r"Position_([1-9][0-9]*)")
_MAX_DOC_NUMBER = 128

# Every service-level code maps to the HTTP status of the exception that carries it, so the
# status comes from errors.py and is never restated here.
_STATUS_BY_CODE = {
    cls.code: cls.http_status
    for cls in (
        errors.ValidationFailed,
        errors.Conflict,
        errors.NotFound,
        errors.Disabled,
        errors.LinkError,
        errors.FrameError,
        errors.DeviceBusy,
        errors.OutcomeUnknown,
        errors.Timeout,
        errors.Queued,
        errors.Cancelled,
        errors.GaveUp,
        errors.QueueFull,
    )
}


# --------------------------------------------------------------------------- schema


def _not_blank(value: str) -> None:
    if not value.strip():
        raise ValidationError("не может быть пустым")


def _printable_only(value: str) -> None:
    # DocNumber is the idempotency key and goes into every log line about the receipt. Spaces
    # of any kind are text (1C may put a no-break space into a number's prefix).
    for ch in value:
        if not ch.isprintable() and unicodedata.category(ch) != "Zs":
            raise ValidationError(f"содержит управляющий символ U+{ord(ch):04X} (перевод строки, табуляцию и т. п.)")


class DocNumberField(fields.String):
    """1C's document number: text, or a number when the document type is numbered by digits
    only (1C then writes ``"DocNumber": 3655``, no quotes)."""

    default_error_messages = {**fields.String.default_error_messages,
                              "invalid": "ожидается номер документа: строка или целое число"}

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        return super()._deserialize(value, attr, data, **kwargs)


class PositionSchema(fields.BaseSchema):
    """One ``Position_N`` of ``Goods``."""

    Name = fields.DeviceText(
        required=True,
        validate=[
            _not_blank,
            validate.Length(
                min=1, max=domain.MAX_NAME, error=f"наименование должно быть от 1 до {domain.MAX_NAME} символов"
            ),
        ],
    )
    Price = fields.Money(required=True)
    Quantity = fields.Quantity(required=True)
    Tax = fields.Vat(required=True)
    PositionSumm = fields.Money(required=True)

    @validates_schema
    def _sum_matches(self, data: dict, **kwargs: Any) -> None:
        # The FN recomputes price × quantity; more than a kopeck off is a 1C-side error
        # (fiscal-rules.md §3), better reported now than as a device code mid-receipt.
        expected = domain.position_amount(data["Price"], data["Quantity"])
        line_discounts = fields.fiscal_context().get("line_discounts", True)
        if line_discounts and data["PositionSumm"] < expected:
            # 1C's Цена is the price before the line discount and Сумма the sum after it (the
            # seed's own example: 325.12 × 6, Сумма 1950); the driver sends the difference as
            # the position's discount.
            return
        if data["PositionSumm"] - expected > 1:
            raise ValidationError(
                f"сумма позиции больше цены × количество = {format_rub(expected)} ₽", "PositionSumm"
            )
        if expected - data["PositionSumm"] > 1:
            raise ValidationError(
                f"сумма позиции меньше цены × количество = {format_rub(expected)} ₽; скидки на позицию"
                " отключены в настройках сервиса (ONEC_LINE_DISCOUNTS = False)",
                "PositionSumm",
            )


#: Built once: a schema's fields are deep-copied per instance, and loading keeps no state in
#: the instance (the load context is a contextvar, fields.FiscalContext), so threads share it.
_LOAD_POSITION = fields.QuickLoad(PositionSchema())


class GoodsField(fields.ValidatorsIfAny, ma_fields.Field):
    """``{"Position_1": {...}, …, "Position_N": {...}}`` → positions in numeric order of N."""

    default_error_messages = {
        **fields.BASE_MESSAGES,
        "invalid": "ожидается объект JSON с позициями Position_1, Position_2, …",
        "empty": "в чеке нет ни одной позиции",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[tuple[str, dict]]:
        if not isinstance(value, dict):
            raise self.make_error("invalid")
        if not value:
            raise self.make_error("empty")
        limit = fields.fiscal_context().get("max_positions")
        if limit is not None and len(value) > limit:
            raise ValidationError(f"позиций в чеке больше, чем принимает ФН: не больше {limit} (получено {len(value)})")
        numbered: list[tuple[int, str]] = []
        for key in value:
            match = _POSITION_KEY.fullmatch(key)
            if not match:
                raise ValidationError({key: [f"ключ «{key}» не вида Position_N (N = 1, 2, 3, …)"]})
            numbered.append((int(match.group(1)), key))
        # Numeric, not lexical: Position_10 prints after Position_9.
        numbered.sort()
        result: list[tuple[str, dict]] = []
        errs: dict[str, Any] = {}
        for _, key in numbered:
            try:
                result.append((key, _LOAD_POSITION(value[key])))
            except ValidationError as exc:
                errs[key] = exc.messages
        if errs:
            raise ValidationError(errs)
        return result


class PaymentTypeField(fields.String):
    """One of domain.PaymentType's names, case-insensitive."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> PaymentType:
        text = super()._deserialize(value, attr, data, **kwargs).strip().lower()
        try:
            return PaymentType(text)
        except ValueError:
            names = ", ".join(p.value for p in PaymentType)
            raise ValidationError(f"неизвестный тип оплаты; допустимо: {names}") from None


class ReceiptSchema(fields.BaseSchema):
    """The whole 1C document. Field order is the order errors are looked for."""

    DocNumber = DocNumberField(
        required=True,
        validate=[
            _not_blank,
            _printable_only,
            validate.Length(max=_MAX_DOC_NUMBER, error=f"номер документа длиннее {_MAX_DOC_NUMBER} символов"),
        ],
    )
    DocDate = fields.Date(required=True)
    DocSumm = fields.Money(required=True)
    Goods = GoodsField(required=True)
    PaymentType = PaymentTypeField(load_default=None, allow_none=True)
    CustomerContact = fields.CustomerContact(load_default=None, allow_none=True)
    ElectronicOnly = fields.Boolean(load_default=False, allow_none=True)
    Device = fields.Integer(
        load_default=1, validate=validate.Range(min=1, error="номер ККТ — целое число от 1"), allow_none=True
    )

    @validates_schema
    def _totals(self, data: dict, **kwargs: Any) -> None:
        total = sum(pos["PositionSumm"] for _, pos in data["Goods"])
        if total != data["DocSumm"]:
            raise ValidationError(f"сумма документа не равна сумме позиций {format_rub(total)} ₽", "DocSumm")
        if data.get("ElectronicOnly") and not data.get("CustomerContact"):
            raise ValidationError(
                "для чека без печати (ElectronicOnly) нужен телефон или e-mail покупателя", "CustomerContact"
            )
        if fields.fiscal_context().get("internet") and not data.get("CustomerContact"):
            # From 01.09.2025 an internet settlement carries 1008 (fiscal-rules.md §5).
            raise ValidationError(
                "для расчёта в интернете (ONEC_INTERNET = True) нужен телефон или e-mail покупателя (тег 1008)",
                "CustomerContact",
            )


#: See _LOAD_POSITION.
_LOAD_RECEIPT = fields.QuickLoad(ReceiptSchema())


# --------------------------------------------------------------------------- building the receipt


def _taxation(config: Any) -> TaxationSystem | None:
    name = config.get("TAXATION")
    if not name:
        return None
    try:
        return domain.TAXATION_NAMES[name]
    except KeyError:
        raise KKTError(f"ошибка в настройках сервиса: неизвестная система налогообложения TAXATION={name!r}") from None


def _internet(config: Any) -> tuple[bool, str]:
    """conf ONEC_INTERNET and ONEC_SETTLEMENT_PLACE: whether 1C receipts are internet settlements
    (1125) and their place of settlement (1187, the site's address)."""
    internet = bool(config.get("ONEC_INTERNET", False))
    place = str(config.get("ONEC_SETTLEMENT_PLACE") or "").strip()
    if internet and not place:
        raise KKTError("ошибка в настройках сервиса: для расчётов в интернете (ONEC_INTERNET = True) укажите "
                       "адрес сайта в ONEC_SETTLEMENT_PLACE (место расчётов, тег 1187)")
    return internet, place


def _default_payment(config: Any) -> PaymentType:
    name = config.get("DEFAULT_PAYMENT") or PaymentType.ELECTRONIC.value
    try:
        return PaymentType(str(name).lower())
    except ValueError:
        raise KKTError(f"ошибка в настройках сервиса: неизвестный тип оплаты DEFAULT_PAYMENT={name!r}") from None


def _domain_field(keys: list[str]) -> Callable[[str], str]:
    """Map domain field names (positions[2].name) back to the 1C names (Goods.Position_2.Name)."""
    names = {"name": "Name", "price": "Price", "amount": "PositionSumm", "quantity": "Quantity", "vat": "Tax"}
    simple = {"customer_contact": "CustomerContact", "payments": "DocSumm", "total": "DocSumm", "positions": "Goods"}

    def rename(field: str) -> str:
        if field.startswith("payments["):
            return "DocSumm"  # 1C sends one payment: the document's sum
        match = re.fullmatch(r"positions\[(\d+)\]\.(\w+)", field)
        if match and 1 <= int(match.group(1)) <= len(keys):
            attr = names.get(match.group(2), match.group(2))
            return f"Goods.{keys[int(match.group(1)) - 1]}.{attr}"
        if field in ("cashier_inn", "cashier_name"):
            return f"CASHIER_{field.split('_')[1].upper()} (настройки сервиса)"
        if field == "settlement_place":
            return "ONEC_SETTLEMENT_PLACE (настройки сервиса)"
        return simple.get(field, field)

    return rename


def parse_receipt(body: object, today: dt.date, config: Any,
                  limits: DeviceLimits | None = None) -> tuple[dict, Receipt]:
    """Validate a 1C document and build the domain receipt; raises ValidationFailed.

    ``limits``: what the device can carry (default: this app's service).
    """
    accept_legacy = bool(config.get("ACCEPT_LEGACY_VAT", True))
    limits = limits or device_limits()
    internet, place = _internet(config)
    try:
        context = {
            "on_date": today,
            "accept_legacy": accept_legacy,
            "line_discounts": bool(config.get("ONEC_LINE_DISCOUNTS", True)),
            "internet": internet,
            "max_positions": limits.max_positions,
        }
        with fields.FiscalContext(context):
            data = _LOAD_RECEIPT(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    keys = [key for key, _ in data["Goods"]]
    positions = tuple(
        Position(
            name=p["Name"], price=p["Price"], quantity=p["Quantity"], amount=p["PositionSumm"], vat=p["Tax"],
            discount=max(0, domain.position_amount(p["Price"], p["Quantity"]) - p["PositionSumm"]),
        )
        for _, p in data["Goods"]
    )
    total = sum(p.amount for p in positions)
    pay_type = data["PaymentType"] or _default_payment(config)
    receipt = Receipt(
        type=SettlementType.SELL,
        positions=positions,
        payments=domain.payment_list(total, pay_type),
        taxation=_taxation(config),
        customer_contact=data["CustomerContact"] or "",
        electronic_only=bool(data["ElectronicOnly"]),
        cashier_name=str(config.get("CASHIER_NAME") or ""),
        cashier_inn=str(config.get("CASHIER_INN") or ""),
        test_mode=bool(config.get("TEST_MODE", False)),
        settlement_place=place,
        internet=internet,
    )
    try:
        domain.check_receipt(receipt)
        limits.check(receipt)
    except DomainError as exc:
        raise validation_error(exc, rename=_domain_field(keys)) from None
    if data["Device"] is None:
        data["Device"] = 1
    return data, receipt


# --------------------------------------------------------------------------- answers


def _json_default(value: Any) -> Any:
    # ISO dates (Flask's provider would write RFC 822), Decimal as its exact digits.
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_response(body: object, status: int = 200, headers: dict | None = None) -> Response:
    """UTF-8 JSON without \\u escapes: 1C and people read Cyrillic directly."""
    response = current_app.response_class(
        json.dumps(body, ensure_ascii=False, default=_json_default), status=status, mimetype="application/json"
    )
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def answer(
    result_code: int,
    description: str,
    status: int,
    *,
    doc_number: str | None = None,
    result: dict | None = None,
    extra: dict | None = None,
    headers: dict | None = None,
) -> Response:
    """The 1C answer: the same keys every time, so 1C can read result_code from any reply."""
    result = result or {}
    fiscalised = result_code == 0 and not result.get("test_mode") and "fiscal_document_number" in result
    body = {
        "check_number": int(result.get("receipt_number") or 0) if fiscalised else 0,
        "result_code": result_code,
        "result_description": description,
        "fiscal_document_number": result.get("fiscal_document_number"),
        "fiscal_sign": result.get("fiscal_sign"),
        "shift_number": result.get("shift_number"),
        "receipt_datetime": result.get("datetime"),
        "doc_number": doc_number,
        "test_mode": bool(result.get("test_mode", False)),
    }
    if extra:
        body.update(extra)
    response = json_response(body, status, headers)
    g.kkt1c_outcome = (result_code, result.get("fiscal_document_number"), status)
    g.kkt1c_refusal = (extra or {}).get("field"), description
    return response


def error_answer(exc: KKTError, doc_number: str | None = None) -> Response:
    """Any service error as the 1C answer; validation errors also name the field and value."""
    extra: dict[str, Any] = {}
    if isinstance(exc, ValidationFailed):
        data = exc.to_dict()
        extra = {"field": data["field"]}
        if "value" in data:
            extra["value"] = data["value"]
    headers = exc.headers or None
    return answer(exc.code, exc.message, errors.http_status(exc), doc_number=doc_number, extra=extra, headers=headers)


def _status_for_code(code: int) -> int:
    if 1 <= code <= 255:
        return errors.DeviceError.http_status
    return _STATUS_BY_CODE.get(code, errors.KKTError.http_status)


def job_answer(job: Job, doc_number: str, receipt: Receipt) -> Response:
    """Translate the service's Job into the 1C answer and HTTP status.

    Texts come from the job (device error table, the owner's reasons) or from errors.py; this
    module only adds the success sentences of its own contract.
    """
    err = job.error or {}
    extra = {"job_id": job.id}
    if job.state == DONE:
        result = job.result or {}
        if result.get("test_mode"):
            text = TEST_MODE_TEXT
        elif receipt.electronic_only:
            text = ELECTRONIC_TEXT
        elif job.reprint or result.get("printed", True) is False:
            # Fiscalised, paper copy owed: the owner's reason says so and that it will print.
            text = job.reason or Reasons.REPRINT
        else:
            text = DONE_TEXT
        return answer(ResultCode.OK, text, 200, doc_number=doc_number, result=result, extra=extra)
    if job.state == FAILED:
        code = int(err.get("code") or ResultCode.INTERNAL)
        message = str(err.get("message") or errors.KKTError.message)
        step = err.get("step")
        if step and str(step) not in message:
            message = f"{message} (шаг: {step})"
        return answer(code, message, _status_for_code(code), doc_number=doc_number, extra=extra)
    if job.state == UNKNOWN:
        exc: KKTError = errors.OutcomeUnknown(job.reason or None)
    else:
        # Queued (no link, held behind an unsettled document, or the wait ran out) or being
        # sent: it will be fiscalised by the service, and 1C must not punch it by hand. A repeat
        # of this DocNumber later gets the final answer instead of a second receipt.
        why = job.reason or errors.Timeout.message
        exc = errors.Queued(f"{errors.Queued.message} ({why})")
    extra["state"] = job.state
    return answer(exc.code, exc.message, exc.http_status, doc_number=doc_number, extra=extra)


# --------------------------------------------------------------------------- views


@bp.before_request
def _start_clock() -> None:
    g.kkt1c_started = time.monotonic()


@bp.route("/kkt", methods=["POST"], endpoint="receipt")
# The original Apache alias took /kkt/ too; a 1C constant may hold "kkt/".
@bp.route("/kkt/", methods=["POST"], endpoint="receipt_slash", strict_slashes=False)
@bp.route("/", methods=["POST"], endpoint="receipt_root")
@require("cashier", anonymous_from="ONEC_ALLOWED_ADDRESSES")
def receipt_view() -> Response:
    """Fiscalise one 1C payment document and wait for the result (KKT_WAIT_TIMEOUT)."""
    config = current_app.config
    body = read_json(request)
    doc_number = body.get("DocNumber") if isinstance(body, dict) else None
    if isinstance(doc_number, int) and not isinstance(doc_number, bool):
        doc_number = str(doc_number)
    g.kkt1c_doc = doc_number
    if not isinstance(doc_number, str):
        doc_number = None
    try:
        data, receipt = parse_receipt(body, dt.date.today(), config)
    except ValidationFailed as exc:
        return error_answer(exc, doc_number)
    g.kkt1c_amount = receipt.total
    service = current_app.extensions["kkt"]
    number = data["DocNumber"].strip()
    key = journal_key(number, data["DocDate"])
    legacy_key = number
    if receipt.test_mode:
        # Test runs must not occupy the real DocNumber: once TEST_MODE is off, the same
        # document has to be fiscalised for real, not answered from the test journal entry.
        key, legacy_key = "test:" + key, "test:" + legacy_key
    wait = float(config.get("KKT_WAIT_TIMEOUT", 60))
    if _link_known_down(service, data["Device"]):
        # The receipt is journalled and will print when the link is back; a cashier in 1C
        # should not sit through the whole wait to hear "нет связи".
        wait = min(wait, LINK_DOWN_WAIT)
    fp = fingerprint(body)
    # Both lookups in one journal read: the request's only one before the receipt is journalled.
    found = service.find_jobs(RECEIPT, (legacy_key, key))
    earlier = _stored_under_number(found.get(legacy_key), fp)
    if earlier is not None:
        return job_answer(service.wait_for(earlier, wait), doc_number or number, receipt)
    if cancelled_by_operator(found.get(key), fp):
        # 1C asks again with the same document while it waits: after an operator's cancel it
        # gets the cancellation, not a new receipt. A changed document under this DocNumber
        # is a new receipt (the key is free).
        return job_answer(found[key], doc_number or number, receipt)
    try:
        job = service.submit_receipt(
            receipt,
            device=data["Device"],
            key=key,
            fingerprint=fp,
            source=SOURCE,
            wait=wait,
        )
    except errors.NotFound as exc:
        # Only the device number can be unknown here; for 1C that is bad input, not a bad URL.
        raise ValidationFailed("Device", exc.message, data["Device"]) from None
    return job_answer(job, doc_number or number, receipt)


def journal_key(number: str, date: dt.date) -> str:
    """The journal key of a 1C document: its number and date (1C numbers within a period)."""
    return f"{number} от {date:%d.%m.%Y}"


def _stored_under_number(job: Job | None, fp: str) -> Job | None:
    """``job``, the latest under the document's number alone (the key before DocDate joined it),
    when it is this very document.

    A document accepted by an earlier version and sent again after the upgrade must get its
    stored answer, not a second receipt. Another body under the bare number is another
    document (an earlier period's), which the new key keeps apart; a failed attempt freed its
    key, so the document is tried again as any failed one is.
    """
    return job if job is not None and job.fingerprint == fp and job.state != FAILED else None


_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")


def _mask_credentials(value: Any) -> Any:
    """A public page shows no secrets: user:password@ in any URL (a link error quoting the
    device address, say) becomes ***@."""
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(r"\1***@", value)
    if isinstance(value, dict):
        return {k: _mask_credentials(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_mask_credentials(v) for v in value]
    return value


def _link_known_down(service: Any, device: int) -> bool:
    # Asked on every POST: a service with link_down() reads only the snapshot's link flag; the
    # whole snapshot (queue counts, unsettled and attention lists) is the fallback.
    link_down = getattr(service, "link_down", None)
    try:
        if callable(link_down):
            return bool(link_down(device))
        return service.snapshot(device).get("link") == "down"
    except KKTError:
        return False  # an unknown device is reported by submit_receipt itself


@bp.route("/kkt", methods=["GET"], endpoint="status")
@bp.route("/kkt/", methods=["GET"], endpoint="status_slash", strict_slashes=False)
@bp.route("/", methods=["GET"], endpoint="status_root")
def status_view() -> Response | str:
    """Status of every configured device, HTML for people or JSON on ``Accept: application/json``.

    Money, fiscal signs and document numbers only for a logged-in viewer (``?login=1`` asks the
    browser for the login) or when STATUS_PAGE_PUBLIC is on; see kktapp.web.statuspage.
    """
    service = current_app.extensions["kkt"]
    full = _viewer_sees_all()
    numbers = _device_numbers(service)
    snapshots = [_mask_credentials(service.snapshot(number)) for number in numbers]
    if not full:
        snapshots = [statuspage.redact(snap) for snap in snapshots]
    now = dt.datetime.now().astimezone()
    page = {
        "service": "kkt",
        "version": kktapp.__version__,
        "test_mode": bool(current_app.config.get("TEST_MODE", False)),
        "generated_at": now.isoformat(timespec="seconds"),
        "full": full,
        "devices": snapshots,
    }
    exchange = exchange_of(current_app)
    if exchange is not None:
        page["exchange"] = exchange.status()
    accept = request.accept_mimetypes
    if accept["application/json"] > accept["text/html"]:
        return json_response(page)
    refresh = float(getattr(service, "status_refresh", 10))
    waiting = getattr(service, "waiting", None)
    devices = [
        statuspage.device_view(snap, now, status_refresh=refresh, full=full,
                               waiting=waiting(snap["device"]) if callable(waiting) else [])
        for snap in snapshots
    ]
    return render_template(
        "status.html",
        page=page,
        devices=devices,
        all_ok=all(not dev["problems"] for dev in devices),
        generated_at=present.server_time(now),
        login_url=url_for("kkt1c.status", login=1),
        operator_url=_operator_url(),
        exchange=page.get("exchange"),
    )


def _operator_url() -> str | None:
    # /kkt/operator when the page was asked for under /kkt (the shipped Apache config), else /operator.
    endpoint = "operator_kkt.page" if request.path.startswith("/kkt") else "operator.page"
    return url_for(endpoint) if endpoint in current_app.view_functions else None


def _viewer_sees_all() -> bool:
    """Logged in (or the page is configured fully public, or access control is off)."""
    config = current_app.config
    if config.get("STATUS_PAGE_PUBLIC", False) or not config.get("AUTH_REQUIRED", True):
        return True
    if request.authorization is not None or request.args.get("login"):
        # Wrong or missing credentials here answer 401 and the browser asks for the login.
        authenticate("cashier")
        return True
    return False


@bp.route("/kkt", methods=["PUT", "PATCH", "DELETE"], endpoint="not_allowed")
@bp.route("/", methods=["PUT", "PATCH", "DELETE"], endpoint="not_allowed_root")
def not_allowed_view() -> Response:
    """Other methods on /kkt: JSON 405 (Werkzeug's would be HTML, which 1C cannot read)."""
    response = answer(ResultCode.NOT_FOUND, METHOD_TEXT.format(method=request.method), 405)
    response.headers["Allow"] = "GET, HEAD, POST, OPTIONS"
    return response


@bp.route("/kkt/<path:rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def not_found_view(rest: str) -> Response:
    """Unknown URLs under /kkt answer in JSON too."""
    return answer(ResultCode.NOT_FOUND, NOT_FOUND_TEXT.format(path=request.path), 404)


@bp.errorhandler(KKTError)
def _kkt_error(exc: KKTError) -> Response:
    return error_answer(exc, _doc_number())


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """Werkzeug's errors (404, 405, 413…) as the 1C answer (also for /kkt/ and paths under it)."""
    status = exc.code or 500
    if status in (404, 405):
        code, text = ResultCode.NOT_FOUND, NOT_FOUND_TEXT.format(path=request.path[:200])
    else:
        code, text = (ResultCode.VALIDATION if status < 500 else ResultCode.INTERNAL), f"ошибка запроса: {exc.name}"
    return http_headers(answer(code, text, status, doc_number=_doc_number()), exc)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log_unexpected(log, exc)
    return answer(ResultCode.INTERNAL, errors.KKTError.message, 500, doc_number=_doc_number())


@bp.after_request
def _log_request(response: Response) -> Response:
    if request.method != "POST" or not log.isEnabledFor(logging.INFO):
        return response
    started = g.get("kkt1c_started", time.monotonic())
    code, fd, status = g.get("kkt1c_outcome", (None, None, response.status_code))
    amount = g.get("kkt1c_amount")
    line = "1С: документ=%s сумма=%s код=%s ФД=%s HTTP=%s адрес=%s время=%d мс"
    args: list[Any] = [
        _printable(_doc_number() or "-"),
        f"{format_rub(amount)} ₽" if amount is not None else "-",
        code if code is not None else "-",
        fd if fd is not None else "-",
        status,
        client_address(),
        (time.monotonic() - started) * 1000,
    ]
    field, reason = g.get("kkt1c_refusal", (None, ""))
    if status in (400, 401, 403, 404, 405, 409, 413, 422, 429):
        # Refused by the service: one line that says which field and why (the device was not
        # touched; device refusals are logged by the device owner).
        line = "1С: чек отклонён: " + line.removeprefix("1С: ") + " поле=%s причина: %s"
        args += [field or "-", _printable(reason, 500)]
        log.warning(line, *args)
    else:
        log.info(line, *args)
    return response


def _printable(text: str, limit: int = _MAX_DOC_NUMBER) -> str:
    # One request, one log line: a newline inside DocNumber must not forge a second one.
    text = text[:limit]
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _doc_number() -> str | None:
    doc = g.get("kkt1c_doc")
    return doc if isinstance(doc, str) else None


# --------------------------------------------------------------------------- status page data


def _device_numbers(service: Any) -> list[int]:
    numbers = getattr(service, "device_numbers", None)
    if callable(numbers):
        numbers = numbers()
    if numbers is None:
        devices = getattr(service, "devices", None) or {1: None}
        numbers = list(devices.keys()) if isinstance(devices, dict) else list(devices)
    return [int(n) for n in numbers]
