"""The atol-kkt-service protocol over HTTP: ``POST /api/compat/atol-kkt-service``.

Clients of burkun-sergey/atol-kkt-service (seed 002) send their JSON messages unchanged::

    {"atol_device_data": {"atol_device_number": 1, "atol_operator_password": "3"},
     "comand": "CASH_REGISTER_INF", "data": ""}

and get ``{"response": ..., "error": "", "error_code": 0}``; on error ``response`` is ``""``,
``error`` a Russian text and ``error_code`` non-zero. Like the original (whose driver codes
were negative, e.g. -3807), every error code here is negative: minus the device's code
(1..255) or minus our service code (≥ 1000, :class:`kktapp.errors.ResultCode`); "Неизвестная
команда" and "Устройство с номером N не найдено" keep the original's -1. The HTTP status tells
the class of a failure (401/403/429 access, 404 unknown device, 422 bad data, 502 device error…).

Decisions where the original left room:

* ``atol_operator_password`` is accepted and ignored: the device passwords are in conf
  (DEVICES), rights come from the HTTP user's role, and a client-chosen password must not
  change what the device lets us do.
* ``type_close``: tcCash is cash (``cash_sm`` is what the buyer handed over; change is
  computed by the device; 0 means exactly the total). tc1..tc6 were payment slots programmed
  in the device; conf COMPAT_PAYMENT_TYPES maps them to payment types, by default all six to
  ``electronic`` (tc1 = "Безнал" in the original's example; a wrong "electronic" is the least
  harmful guess, while "prepaid" or "credit" would change the fiscal meaning).
* ``check_sm`` must equal the goods' sum, before or after ``check_discount_sm``;
  ``check_discount_sm`` is spread over the positions to the kopeck (FFD has no receipt discount).
* A non-zero ``tr_id`` is an idempotency key (``compat:<tr_id>``, apart from 1C DocNumbers and
  API keys): the same sale sent again answers from the journal and never prints twice.
* Old rate names ("nds18") mean the general rate on the receipt date (conf ACCEPT_LEGACY_VAT).
* PRINT_TSTRING_LIST applies the per-line ``font`` only with ``use_print_string: true``, as the
  original documents; ``setmode_one`` is accepted and ignored (we manage device modes).
* SEGMENT parts are stored in a small SQLite file next to the journal (``<journal>-segments``),
  not in memory: Apache mod_wsgi and gunicorn may hand the parts of one command to different
  processes, and a restart between parts must not lose them. Parts may arrive in any order; the
  part that completes a set runs the joined command; sets left incomplete for
  COMPAT_SEGMENT_TTL seconds (default 600) are deleted.
* RESET_SUMMARY and TECH_RESET need conf ALLOW_DEVICE_RESET and an admin; XREPORT and ZREPORT an
  admin; everything else a cashier.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flask import Blueprint, Response, current_app, request
from marshmallow import ValidationError
from werkzeug.exceptions import HTTPException

import kktapp
from kktapp import domain, errors
from kktapp.domain import DomainError, Payment, PaymentType, Receipt, SettlementType, TextLine
from kktapp.errors import KKTError, ResultCode, ValidationFailed
from kktapp.sqlitefiles import add_column, connect_wal, write_transaction
from kktapp.web import fields as kfields
from kktapp.web.api import normalize_status, status_for_code
from kktapp.web.auth import check_role, current_user, require
from kktapp.web.common import (
    device_limits,
    http_headers,
    log_refusal,
    log_unexpected,
    parse_json,
    read_json,
    validation_error,
)
from kktapp.web.sale import fill_from_catalogue
from kktapp.web.schemas import (
    MAX_TEXT,
    CashSchema,
    EnvelopeSchema,
    IncomeSchema,
    SegmentSchema,
    StringListSchema,
    TStringListSchema,
    build_positions,
    font_line,
    line_params,
    receipt_fingerprint,
)

log = logging.getLogger(__name__)

bp = Blueprint("compat", __name__, url_prefix="/api/compat")

SOURCE = "compat"
KEY_PREFIX = "compat:"
DONE = "готово"
UNKNOWN_COMMAND = "Неизвестная команда"
UNKNOWN_DEVICE = "Устройство с номером {n} не найдено"
#: The original's code for its own (non-driver) errors.
ORIGINAL_ERROR = -1
DEFAULT_PAYMENT_TYPES = {f"tc{i}": PaymentType.ELECTRONIC.value for i in range(1, 7)}
#: A joined command larger than this is refused (the original's reason for SEGMENT is 64 KB).
MAX_SEGMENTED_BYTES = 16 * 1024 * 1024
#: Seconds a SEGMENT waits for another request's write to the segment store.
SEGMENT_BUSY_TIMEOUT = 10.0
#: CASH_REGISTER_INF print settings: our protocol layer does not read them; the original's
#: values are reported so clients that display them keep working.
CHECK_FONT_SIZE = "7x5"
CHECK_LINE_SPACING = 3


class CompatError(KKTError):
    """An error the original service reported with its own text and code -1."""

    code = ORIGINAL_ERROR

    def __init__(self, message: str, http_status: int = 400) -> None:
        super().__init__(message)
        self.http_status = http_status


# --------------------------------------------------------------------------- answers


def _roubles(kopecks: int) -> int | Decimal:
    """Kopecks as the original's rouble number: 100 for whole roubles, 12.5 otherwise."""
    if kopecks % 100 == 0:
        return kopecks // 100
    return Decimal(kopecks).scaleb(-2).normalize()


def dumps(body: object) -> str:
    """JSON with Decimal written as a number (json would need a float for that; we never use one)."""
    numbers: dict[str, str] = {}

    def swap(value: Any) -> Any:
        if isinstance(value, Decimal):
            token = f"\x00{uuid.uuid4().hex}\x00"
            numbers[json.dumps(token)] = format(value, "f")
            return token
        if isinstance(value, dict):
            return {k: swap(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [swap(v) for v in value]
        return value

    text = json.dumps(swap(body), ensure_ascii=False)
    for token, digits in numbers.items():
        text = text.replace(token, digits)
    return text


def answer(response: object = "", error: str = "", error_code: int = 0, status: int = 200,
           headers: Mapping[str, str] | None = None) -> Response:
    """The original's answer object."""
    resp = current_app.response_class(dumps({"response": response, "error": error, "error_code": error_code}),
                                      status=status, mimetype="application/json")
    resp.headers["Content-Type"] = "application/json; charset=utf-8"
    for name, value in (headers or {}).items():
        resp.headers[name] = value
    return resp


def compat_code(exc: KKTError) -> int:
    """Negative error code: the original's convention (its driver codes were negative)."""
    return -abs(int(exc.code)) if exc.code else ORIGINAL_ERROR


def error_answer(exc: KKTError) -> Response:
    """Any error as ``{"response": "", "error": text, "error_code": -N}``."""
    headers = exc.headers or None
    return answer("", exc.message, compat_code(exc), errors.http_status(exc), headers)


@bp.errorhandler(KKTError)
def _kkt_error(exc: KKTError) -> Response:
    if isinstance(exc, ValidationFailed):
        log_refusal("compat", request, exc)
    return error_answer(exc)


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """Werkzeug's errors (404, 405, 413…) in this protocol's shape (also for unknown paths under it)."""
    return http_headers(answer("", f"ошибка запроса: {exc.name}", ORIGINAL_ERROR, exc.code or 400), exc)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log_unexpected(log, exc)
    return error_answer(KKTError())


# --------------------------------------------------------------------------- running jobs


def _service() -> Any:
    return current_app.extensions["kkt"]


def _wait() -> float:
    return float(current_app.config.get("KKT_WAIT_TIMEOUT", 60))


def _settle(job: Any) -> Any:
    """Raise the job's error (or why it is not finished); return the job when done."""
    if job.state == "done":
        return job
    err = job.error or {}
    if job.state == "failed":
        exc = KKTError(str(err.get("message") or KKTError.message), code=int(err.get("code") or ResultCode.INTERNAL))
        exc.http_status = status_for_code(exc.code)
        raise exc
    if job.state == "unknown":
        raise errors.OutcomeUnknown()
    if err.get("code") in (ResultCode.LINK_LOST, ResultCode.FRAME_ERROR, ResultCode.DEVICE_BUSY) or job.reason:
        text = job.reason or err.get("message") or errors.LinkError.message
        raise errors.LinkError(f"{text}; задание сохранено и будет выполнено, когда ККТ станет доступна")
    raise errors.Timeout()


def _run(device: int, op: str, params: dict | None = None) -> Any:
    job = _service().submit(op, params, device=device, wait=_wait())
    user = current_user()
    log.info("compat: %s на ККТ %d (пользователь %s) → %s", op, device, (user.login if user else "") or "-", job.state)
    return _settle(job)


def _load(schema: Any, data: object) -> dict:
    if not isinstance(data, dict):
        raise ValidationFailed("data", "ожидается объект JSON", data if isinstance(data, str | int) else None)
    try:
        return schema.load(data)
    except ValidationError as exc:
        raise validation_error(exc, lambda f: f"data.{f}") from None


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """One command of the protocol: the role it needs and its handler(device, data) → response."""

    role: str
    handler: Callable[[int, Any], Any]
    #: Wipes device data: refused unless conf ALLOW_DEVICE_RESET, whoever asks.
    wipes: bool = False


def cash_register_inf(device: int, data: Any) -> dict:
    """CASH_REGISTER_INF: the original's status object, field for field."""
    job = _run(device, "status")
    cfg = _service().devices[device]
    st = normalize_status(device, str(getattr(cfg, "name", "")), job.result or {})
    when = st["datetime"]
    try:
        when = dt.datetime.fromisoformat(when).strftime("%d.%m.%Y %H:%M:%S")
    except ValueError:
        pass
    return {
        "KKMDateTime": when,
        "KKMEarnings": _roubles(st["totals"]["total_earnings"]),
        "KKMEarningSession": _roubles(st["totals"]["shift_earnings"]),
        "KKMSum": _roubles(st["totals"]["cash_in_drawer"]),
        "Mode": st["mode"],
        "SerialNumber": st["serial"],
        "CheckFontSizeString": CHECK_FONT_SIZE,
        "CheckLineSpacing": CHECK_LINE_SPACING,
        "SessionNumber": st["shift"]["number"],
        "isFiskal": st["fiscal"],
        "isSessionExceedLimit24": st["shift"]["expired"],
        "isSessionOpened": st["shift"]["open"],
        "CashRegisterNum": device,
    }


def _print(device: int, lines: list[TextLine]) -> str:
    if not any(line.text.strip() for line in lines):
        raise ValidationFailed("data.text", "нет строк для печати")
    lines = [dataclasses.replace(line, text=domain.spaces_for_breaks(line.text)) for line in lines]
    try:
        device_limits().check_lines(lines, "data.text")
    except DomainError as exc:
        raise validation_error(exc) from None
    _run(device, "print_text", {"lines": line_params(lines)})
    return DONE


def print_text_cheque(device: int, data: Any) -> str:
    """PRINT_TEXT_CHEQUE: a short non-fiscal test document."""
    now = dt.datetime.now().strftime("%d.%m.%Y %H:%M:%S")
    lines = [
        TextLine("ТЕСТОВЫЙ ЧЕК", bold=True, align="center", double_height=True),
        TextLine("не фискальный документ", align="center"),
        TextLine(f"Касса № {device}"),
        TextLine(now),
        TextLine(f"Сервис kkt {kktapp.__version__}"),
    ]
    return _print(device, lines)


def print_string_list(device: int, data: Any) -> str:
    """PRINT_STRING_LIST: lines separated by CR LF, default font."""
    loaded = _load(StringListSchema(), data)
    text = loaded["text"].replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    for i, line in enumerate(lines, 1):
        if len(line) > MAX_TEXT:
            # The same per-line limit as every other printed line.
            raise ValidationFailed("data.text", f"строка {i} длиннее {MAX_TEXT} символов", len(line))
    return _print(device, [TextLine(line) for line in lines])


def print_tstring_list(device: int, data: Any) -> str:
    """PRINT_TSTRING_LIST: lines with their own font, used when use_print_string is true."""
    loaded = _load(TStringListSchema(), data)
    use_font = loaded["use_print_string"]
    return _print(device, [font_line(item["text"], item["font"] if use_font else None) for item in loaded["text"]])


def _simple(op: str) -> Callable[[int, Any], str]:
    def handler(device: int, data: Any) -> str:
        _run(device, op)
        return DONE

    handler.__doc__ = f"Runs the service operation {op}."
    return handler


def _reset(op: str) -> Callable[[int, Any], str]:
    def handler(device: int, data: Any) -> str:
        user = current_user()
        log.warning("compat: %s на ККТ %d по запросу пользователя %s", op, device, (user.login if user else "") or "-")
        _run(device, op)
        return DONE

    handler.__doc__ = f"Runs the device-wiping operation {op} (ALLOW_DEVICE_RESET and admin only)."
    return handler


def _cash(op: str) -> Callable[[int, Any], str]:
    def handler(device: int, data: Any) -> str:
        try:
            loaded = CashSchema().load({"amount": data})
        except ValidationError as exc:
            raise validation_error(exc, lambda f: "data") from None
        _run(device, op, {"amount": loaded["amount"]})
        return DONE

    handler.__doc__ = f"{op}: data is the amount in roubles (kopecks as the fraction)."
    return handler


def payment_types() -> dict[str, PaymentType]:
    """tc1..tc6 → payment type, from conf COMPAT_PAYMENT_TYPES over the defaults."""
    table = dict(DEFAULT_PAYMENT_TYPES)
    table.update(current_app.config.get("COMPAT_PAYMENT_TYPES") or {})
    out = {}
    for slot, name in table.items():
        try:
            out[slot] = PaymentType(str(name))
        except ValueError:
            raise KKTError(f"ошибка в настройках: COMPAT_PAYMENT_TYPES[{slot!r}] = {name!r}; допустимо: "
                           + ", ".join(p.value for p in PaymentType)) from None
    return out


def build_income(loaded: dict, config: Mapping[str, Any]) -> Receipt:
    """INCOME data (loaded) → domain sale receipt; raises DomainError/ValidationFailed."""
    items = [
        {"name": g["name"], "price": g["price"], "quantity": g["kol"], "tax": g["nds"],
         "department": g["dep"], "discount": g["discount"], "unit": g.get("unit", 0)}
        for g in loaded["goods"]
    ]
    gross = sum(max(0, domain.position_amount(i["price"], i["quantity"]) - i["discount"]) for i in items)
    discount = loaded["check_discount_sm"]
    positions = build_positions(items, discount, prefix="data.goods")
    total = sum(p.amount for p in positions)
    if loaded["check_sm"] not in (total, gross):
        raise ValidationFailed("data.check_sm", f"сумма чека не равна сумме товаров {domain.format_rub(total)}",
                               domain.format_rub(loaded["check_sm"]))
    if loaded["type_close"] == "tcCash":
        given = loaded["cash_sm"] or total
        if given < total:
            raise ValidationFailed("data.cash_sm", f"наличных меньше суммы чека {domain.format_rub(total)}",
                                   domain.format_rub(given))
        payments: tuple[Payment, ...] = (Payment(PaymentType.CASH, given),)
    else:
        payments = (Payment(payment_types()[loaded["type_close"]], total),)
    taxation = config.get("TAXATION")
    receipt = Receipt(
        type=SettlementType.SELL,
        positions=tuple(positions),
        payments=payments,
        taxation=domain.TAXATION_NAMES[taxation] if taxation else None,
        cashier_name=str(config.get("CASHIER_NAME") or ""),
        cashier_inn=str(config.get("CASHIER_INN") or ""),
        header=tuple(font_line(t["text"], t["font"]) for t in loaded["header_text"]),
        footer=tuple(font_line(t["text"], t["font"]) for t in loaded["footer_text"]),
        test_mode=bool(config.get("TEST_MODE", False)),
    )
    domain.check_receipt(receipt)
    return receipt


#: Domain position attributes under this protocol's names.
_GOOD_NAMES = {".quantity": ".kol", ".vat": ".nds", ".department": ".dep"}


def _domain_field(field: str) -> str:
    if field.startswith("positions[") and "]" in field:
        index, _, rest = field[len("positions["):].partition("]")
        if index.isdigit():
            return f"data.goods.{int(index) - 1}{_GOOD_NAMES.get(rest, rest)}"
    for part in ("header", "footer"):
        if field.startswith(f"{part}[") and "]" in field:
            index, _, rest = field[len(part) + 1:].partition("]")
            if index.isdigit():
                return f"data.{part}_text.{int(index) - 1}{rest}"
    if field.startswith("payments["):
        return "data.cash_sm"  # only cash may exceed the total
    return {"payments": "data.cash_sm", "total": "data.check_sm"}.get(field, field)


def income(device: int, data: Any) -> str:
    """INCOME: fiscalise a sale; a non-zero tr_id makes a repeat safe."""
    config = current_app.config
    ctx = {"on_date": dt.date.today(), "accept_legacy": bool(config.get("ACCEPT_LEGACY_VAT", True))}
    with kfields.FiscalContext(ctx):  # type: ignore[arg-type]
        loaded = _load(IncomeSchema(), data)
    extra = fill_from_catalogue(loaded["goods"], device, "data.goods", by_barcode=True, tax_key="nds")
    try:
        receipt = build_income(loaded, config)
        device_limits().check(receipt)
    except DomainError as exc:
        raise validation_error(exc, _domain_field) from None
    key = KEY_PREFIX + loaded["tr_id"] if loaded["tr_id"] else None
    job = _service().submit_receipt(receipt, device=device, key=key, fingerprint=receipt_fingerprint(receipt),
                                    source=SOURCE, wait=_wait(), extra=extra)
    user = current_user()
    log.info("compat: INCOME на %s ₽ на ККТ %d (tr_id %s, пользователь %s) → %s",
             domain.format_rub(receipt.total), device, loaded["tr_id"] or "-", (user.login if user else "") or "-",
             job.state)
    _settle(job)
    return DONE


def segment(device: int, data: Any) -> Any:
    """SEGMENT: store a base64 part; the part completing the set runs the joined command."""
    loaded = _load(SegmentSchema(), data)
    store = segment_store()
    user = current_user()
    config = current_app.config
    joined = store.add(loaded["segment_guid"], loaded["segment_num"], loaded["segment_count"], loaded["text"],
                       ttl=float(config["COMPAT_SEGMENT_TTL"]), owner=(user.login if user else "") or "",
                       user_limit=int(config["COMPAT_SEGMENT_USER_BYTES"]),
                       total_limit=int(config["COMPAT_SEGMENT_TOTAL_BYTES"]))
    if joined is None:
        return f"принят сегмент {loaded['segment_num']} из {loaded['segment_count']}"
    message = decode_segments(joined)
    if isinstance(message, dict) and message.get("comand") == "SEGMENT":
        raise ValidationFailed("data", "склеенная команда снова SEGMENT: вложенные сегменты не поддерживаются")
    log.info("compat: сегменты %s собраны (%d), выполняется %s", loaded["segment_guid"], loaded["segment_count"],
             message.get("comand") if isinstance(message, dict) else "?")
    return execute(message)


COMMANDS: dict[str, Command] = {
    "CASH_REGISTER_INF": Command("cashier", cash_register_inf),
    "PRINT_TEXT_CHEQUE": Command("cashier", print_text_cheque),
    "PRINT_STRING_LIST": Command("cashier", print_string_list),
    "PRINT_TSTRING_LIST": Command("cashier", print_tstring_list),
    "OPEN_SESSION": Command("cashier", _simple("open_shift")),
    "XREPORT": Command("admin", _simple("x_report")),
    "ZREPORT": Command("admin", _simple("close_shift")),
    "RESET_SUMMARY": Command("admin", _reset("reset_summary"), wipes=True),
    "TECH_RESET": Command("admin", _reset("tech_reset"), wipes=True),
    "CASH_INCOME": Command("cashier", _cash("cash_in")),
    "CASH_OUTCOME": Command("cashier", _cash("cash_out")),
    "INCOME": Command("cashier", income),
    "PRINT_LAST_CHEQUE_COPY": Command("cashier", _simple("reprint_last")),
    "SEGMENT": Command("cashier", segment),
}


def execute(message: object) -> Any:
    """Run one protocol message; returns the ``response`` value or raises KKTError."""
    if not isinstance(message, dict):
        raise ValidationFailed("body", "ожидается объект JSON с полями atol_device_data, comand, data")
    try:
        envelope = EnvelopeSchema().load(message)
    except ValidationError as exc:
        raise validation_error(exc) from None
    command = COMMANDS.get(envelope["comand"].strip().upper())
    if command is None:
        log.warning("compat: неизвестная команда %r", envelope["comand"][:64])
        # The original's text first (a client may look for it), then what would have worked.
        raise CompatError(f"{UNKNOWN_COMMAND}; допустимые команды: {', '.join(COMMANDS)}")
    device = envelope["atol_device_data"].get("atol_device_number", 1)
    if device not in _service().devices:
        raise CompatError(UNKNOWN_DEVICE.format(n=device), http_status=404)
    # Reset commands say "switched off" before "not allowed": no role makes them work then.
    if command.wipes and not current_app.config.get("ALLOW_DEVICE_RESET", False):
        raise errors.Disabled("сброс ККТ отключён в настройках сервиса (ALLOW_DEVICE_RESET = False)")
    check_role(command.role)
    return command.handler(device, envelope["data"])


@bp.post("/atol-kkt-service")
@require("cashier")
def atol_kkt_service() -> Response:
    """One atol-kkt-service message → its answer."""
    return answer(execute(read_json(request)))


# --------------------------------------------------------------------------- segments


def decode_segments(joined: str) -> object:
    """Base64 of the joined parts → the JSON message (UTF-8, BOM-safe; cp1251 from old Windows clients)."""
    try:
        raw = base64.b64decode("".join(joined.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed("data.text", "склеенные сегменты — не base64") from None
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("cp1251", errors="replace")
    return parse_json(text, "data.text", "склеенные сегменты — не JSON")


class SegmentStore:
    """Parts of SEGMENT commands in SQLite, shared by all processes of the service.

    The part that completes a set is found inside one write transaction, which also deletes
    the set: two processes receiving the last parts at once cannot both run the command.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        conn = self._connect()
        try:
            # One transaction: every process's first SEGMENT may open a new store at the same
            # moment, and the column check below must not interleave with another's ALTER.
            with write_transaction(conn):
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS segments (guid TEXT NOT NULL, num INTEGER NOT NULL,"
                    " count INTEGER NOT NULL, text TEXT NOT NULL, received REAL NOT NULL,"
                    " owner TEXT NOT NULL DEFAULT '', PRIMARY KEY (guid, num))"
                )
                # Stores of 0.1.0: their parts get no owner ("" = anyone may finish them).
                add_column(conn, "segments", "owner TEXT NOT NULL DEFAULT ''")
        finally:
            conn.close()

    def _connect(self) -> sqlite3.Connection:
        return connect_wal(self.path, timeout=SEGMENT_BUSY_TIMEOUT)

    def add(self, guid: str, num: int, count: int, text: str, *, ttl: float, owner: str = "",
            user_limit: int | None = None, total_limit: int | None = None) -> str | None:
        """Store one part; return the joined text when this part completes the set.

        A set belongs to the user who sent its first part (nobody else may add or replace
        parts); one user's unfinished parts may hold ``user_limit`` characters, everyone's
        ``total_limit`` (a flood of orphan parts would otherwise fill the disk); None: no limit.
        """
        now = time.time()
        conn = self._connect()
        try:
            with write_transaction(conn):
                expired = conn.execute("DELETE FROM segments WHERE received < ?", (now - ttl,)).rowcount
                if expired:
                    log.info("compat: удалено %d сегментов незавершённых команд (старше %.0f с)", expired, ttl)
                row = conn.execute("SELECT count, COALESCE(SUM(LENGTH(text)), 0) FROM segments WHERE guid=?"
                                   " GROUP BY count", (guid,)).fetchone()
                first = conn.execute("SELECT owner FROM segments WHERE guid=? LIMIT 1", (guid,)).fetchone()
                if first is not None and first[0] != owner:
                    raise errors.Conflict(f"набор сегментов {guid} начат другим пользователем")
                used, mine = conn.execute(
                    "SELECT COALESCE(SUM(LENGTH(text)), 0), COALESCE(SUM(CASE WHEN owner=? THEN LENGTH(text) END), 0)"
                    " FROM segments WHERE NOT (guid=? AND num=?)", (owner, guid, num)).fetchone()
                if (user_limit is not None and mine + len(text) > user_limit) or (
                        total_limit is not None and used + len(text) > total_limit):
                    raise CompatError("хранилище сегментов заполнено: дождитесь завершения или истечения начатых "
                                      "команд (COMPAT_SEGMENT_TTL) и повторите", http_status=503)
                if row is not None and row[0] != count:
                    raise ValidationFailed("data.segment_count",
                                           f"у сегментов {guid} уже указано количество {row[0]}", count)
                if row is not None and row[1] + len(text) > MAX_SEGMENTED_BYTES:
                    conn.execute("DELETE FROM segments WHERE guid=?", (guid,))
                    conn.execute("COMMIT")
                    raise ValidationFailed("data.text", "команда из сегментов слишком длинная")
                conn.execute("INSERT OR REPLACE INTO segments (guid, num, count, text, received, owner)"
                             " VALUES (?,?,?,?,?,?)", (guid, num, count, text, now, owner))
                have = conn.execute("SELECT COUNT(*) FROM segments WHERE guid=?", (guid,)).fetchone()[0]
                if have < count:
                    return None
                parts = [r[0] for r in conn.execute("SELECT text FROM segments WHERE guid=? ORDER BY num", (guid,))]
                conn.execute("DELETE FROM segments WHERE guid=?", (guid,))
                return "".join(parts)
        finally:
            conn.close()

    def pending(self) -> int:
        """Number of stored parts (for tests and the status page)."""
        conn = self._connect()
        try:
            return int(conn.execute("SELECT COUNT(*) FROM segments").fetchone()[0])
        finally:
            conn.close()


def segments_path(journal_path: str) -> str:
    """``/var/lib/kkt/journal.sqlite3`` → ``/var/lib/kkt/journal-segments.sqlite3``."""
    root, ext = os.path.splitext(journal_path)
    return f"{root}-segments{ext or '.sqlite3'}"


def segment_store() -> SegmentStore:
    """This app's segment store (created on first use)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    store = app.extensions.get("kkt_compat_segments")
    if store is None:
        store = SegmentStore(segments_path(str(app.config["JOURNAL_PATH"])))
        app.extensions["kkt_compat_segments"] = store
    return store
