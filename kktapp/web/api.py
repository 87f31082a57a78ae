"""The JSON API at /api/v1: devices, shift, cash, printing, receipts, jobs.

Conventions (also stated in the OpenAPI description served at /api/v1/openapi.json):

* Requests give money in roubles, as JSON numbers or strings with at most two decimals
  (``"amount": 150.5``), like ATOL's JSON tasks. Responses give money as integer kopecks
  (``"total": 15050``), like the fiscal storage counts it: no rounding anywhere.
* Every operation is a job in the device's queue. ``?wait=SECONDS`` (default conf
  API_DEFAULT_WAIT) says how long to wait for it: finished in time → 200 with the job; still
  running → 202 with ``Location: /api/v1/jobs/<id>``; failed → the HTTP status of the error
  class (422 input, 409 key reused, 502 device refused, 503 no link or outcome unknown) with
  the job, whose ``error`` says what happened in Russian.
* Idempotency: ``Idempotency-Key`` header (or ``"id"`` in a receipt). A repeat with the same key
  and the same content gets the same job (never a second receipt); the same key with other
  content → 409. Without a key nothing is deduplicated, so clients should always send one.
  Keys live in their own namespace (``api:``), apart from 1C DocNumbers and compat tr_ids.
* Errors: ``{"error": {"code", "message", "field"?, "value"?}}``; validation problems are 422
  and never reach a device.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from flask import Blueprint, Response, current_app, request, url_for
from marshmallow import Schema, ValidationError
from werkzeug.exceptions import HTTPException

from kktapp import errors
from kktapp.domain import DomainError, format_rub
from kktapp.errors import KKTError, ValidationFailed
from kktapp.web import fields as kfields
from kktapp.web.auth import current_user, require
from kktapp.web.common import device_limits, http_headers, log_refusal, log_unexpected, read_json, validation_error
from kktapp.web.receipts import parse_filters, receipt_row
from kktapp.web.sale import fill_from_catalogue
from kktapp.web.schemas import (
    CashSchema,
    PrintSchema,
    ReceiptSchema,
    SettleSchema,
    api_field_name,
    build_receipt,
    line_params,
    receipt_date,
    receipt_fingerprint,
    receipt_type,
)

log = logging.getLogger(__name__)

# Built once, shared by every request: building one deep-copies every field, and a load keeps
# no state in the instance (the fiscal load context is a contextvar, fields.FiscalContext).
_CASH = CashSchema()
_PRINT = PrintSchema()
_RECEIPT = ReceiptSchema()
_SETTLE = SettleSchema()

bp = Blueprint("api", __name__, url_prefix="/api/v1")

SOURCE = "api"
KEY_PREFIX = "api:"
KEY_HEADER = "Idempotency-Key"
#: Longest ``?wait``: beyond this a proxy or mod_wsgi would cut the request anyway.
MAX_WAIT = 120.0
#: Fresh status reads wait this long by default (a receipt may be printing ahead of them).
STATUS_WAIT = 15.0
#: Job states that will not change any more.
FINISHED = ("done", "failed")


# --------------------------------------------------------------------------- helpers


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """UTF-8 JSON without \\u escapes; dates as ISO 8601, Decimal as its digits."""
    def default(value: Any) -> Any:
        if isinstance(value, dt.datetime | dt.date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        raise TypeError(f"not JSON serialisable: {type(value).__name__}")

    response = current_app.response_class(json.dumps(body, ensure_ascii=False, default=default), status=status,
                                          mimetype="application/json")
    response.headers["Content-Type"] = "application/json; charset=utf-8"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def error_response(exc: KKTError) -> Response:
    """``{"error": {...}}`` with the error's HTTP status and headers (WWW-Authenticate, Retry-After)."""
    headers = exc.headers or None
    return json_response({"error": exc.to_dict()}, errors.http_status(exc), headers)


def _all_error_classes(cls: type[KKTError] = KKTError) -> list[type[KKTError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_error_classes(sub))
    return found


def status_for_code(code: int) -> int:
    """HTTP status for an error code of a failed job: derived from the classes in errors.py."""
    if 1 <= code <= 255:
        return errors.DeviceError.http_status
    for cls in _all_error_classes():
        # The class that defines the code decides; its status may be inherited (FrameError).
        if cls.__dict__.get("code") == code:
            return cls.http_status
    return errors.KKTError.http_status


def service() -> Any:
    """The per-process fiscal service (kktapp.service.FiscalService)."""
    return current_app.extensions["kkt"]


def wait_seconds(default: float | None = None) -> float:
    """``?wait=SECONDS`` (0..MAX_WAIT); default conf API_DEFAULT_WAIT."""
    raw = request.args.get("wait")
    if raw is None or raw == "":
        return float(default if default is not None else current_app.config.get("API_DEFAULT_WAIT", 5))
    try:
        value = Decimal(raw.strip())
    except InvalidOperation:
        raise ValidationFailed("wait", "ожидается число секунд", raw) from None
    if not value.is_finite() or not 0 <= value <= Decimal(str(MAX_WAIT)):
        raise ValidationFailed("wait", f"ожидается число секунд от 0 до {int(MAX_WAIT)}", raw)
    return float(value)


def idempotency_key(body_key: str | None = None) -> str | None:
    """The caller's key from the header or the body (both given must agree), namespaced."""
    header = request.headers.get(KEY_HEADER)
    if header is not None:
        header = header.strip()
        if not header or len(header) > 128:
            raise ValidationFailed(KEY_HEADER, "ключ идемпотентности: от 1 до 128 символов", header or None)
    if header and body_key and header != body_key:
        raise ValidationFailed("id", f"не совпадает с заголовком {KEY_HEADER}", body_key)
    key = header or body_key
    return KEY_PREFIX + key if key else None


def load(schema: Schema, data: object, rename: Callable[[str], str] | None = None) -> dict:
    """schema.load → dict, or ValidationFailed (422) naming the first bad field."""
    try:
        return schema.load(data)  # type: ignore[return-value]
    except ValidationError as exc:
        raise validation_error(exc, rename) from None


def job_body(job: Any) -> dict:
    """The job as the API shows it: its own dict, with the caller's key without our prefix."""
    body = dict(job.to_dict())
    key = body.get("key")
    if isinstance(key, str) and key.startswith(KEY_PREFIX):
        body["key"] = key[len(KEY_PREFIX):]
    return body


def job_response(job: Any, endpoint: str = "api.get_job") -> Response:
    """200 done / 202 still running (Location) / error status for a failed job."""
    body = job_body(job)
    location = url_for(endpoint, job_id=job.id)
    if job.state == "done":
        return json_response(body, 200, {"Location": location})
    if job.state == "failed":
        code = int((job.error or {}).get("code") or errors.ResultCode.INTERNAL)
        return json_response(body, status_for_code(code), {"Location": location})
    return json_response(body, 202, {"Location": location})


def _submit(op: str, device: int, params: dict | None = None) -> Response:
    # The service fingerprints the validated parameters (kopecks, not the caller's spelling).
    job = service().submit(op, params, device=device, key=idempotency_key(), wait=wait_seconds())
    user = current_user()
    log.info("API: %s на ККТ %d (пользователь %s) → задание %s, %s",
             op, device, (user.login if user else "") or "-", job.id, job.state)
    return job_response(job)


def _known_device(device: int) -> None:
    if device not in service().devices:
        raise errors.NotFound(f"касса номер {device} не настроена")


def raise_job_error(job: Any) -> None:
    """Turn a failed or unfinished read job into the matching exception."""
    if job.state == "failed":
        err = job.error or {}
        exc = KKTError(str(err.get("message") or KKTError.message), code=int(err.get("code") or KKTError.code))
        exc.http_status = status_for_code(exc.code)
        raise exc
    if job.state != "done":
        raise errors.Timeout("ККТ не ответила за отведённое время (занята другими заданиями или нет связи)")


# --------------------------------------------------------------------------- status


def _iso(value: Any) -> str | None:
    if value in (None, ""):
        return None
    return value.isoformat() if isinstance(value, dt.date | dt.datetime) else str(value)


def normalize_status(device: int, name: str, result: dict) -> dict:
    """The service's status result → the documented DeviceStatus object (money in kopecks)."""
    status = result.get("status") or {}
    info = result.get("info") or {}
    shift = result.get("shift") or {}
    fn = result.get("fn") or {}
    totals = result.get("totals") or {}
    state = shift.get("state") or ("open" if status.get("shift_open") else "closed")
    opened_at = shift.get("opened_at")
    expires_at = shift.get("expires_at")
    if expires_at is None and opened_at:
        try:
            expires_at = (dt.datetime.fromisoformat(str(opened_at)) + dt.timedelta(hours=24)).isoformat()
        except ValueError:
            expires_at = None
    return {
        "device": device,
        "name": name,
        "datetime": _iso(status.get("datetime")) or "",
        # Both carry the full serial; only a device that refused register 22 gives 3F's 8 digits.
        "serial": str(info.get("serial") or status.get("serial") or ""),
        "model": str(info.get("model_name") or ""),
        "firmware": str(info.get("firmware") or ""),
        "registration_number": info.get("registration_number") or status.get("registration_number"),
        "mode": int(status.get("mode") or 0),
        "submode": int(status.get("submode") or 0),
        "fiscal": bool(status.get("fiscal")),
        "paper_present": bool(status.get("paper_present", True)),
        "paper_near_end": bool(status.get("paper_near_end", False)),
        "cover_open": bool(status.get("cover_open", False)),
        "shift": {
            "state": state,
            "open": state in ("open", "expired"),
            "expired": state == "expired",
            "number": int(shift.get("number") or status.get("shift_number") or 0),
            "opened_at": _iso(opened_at),
            "expires_at": _iso(expires_at),
            "receipts": int(shift.get("receipts") or 0),
        },
        "fn": {
            "number": str(fn.get("fn_number") or ""),
            "valid_until": _iso(fn.get("valid_until")),
            "last_fd_number": int(fn.get("last_fd_number") or 0),
            "unsent_count": int(fn.get("unsent_count") or 0),
            "first_unsent_number": int(fn.get("first_unsent_number") or 0),
            "first_unsent_at": _iso(fn.get("first_unsent_at")),
            "warnings": int(fn.get("warnings") or 0),
        },
        "totals": {
            "cash_in_drawer": int(totals.get("cash_in_drawer") or 0),
            "shift_earnings": int(totals.get("shift_earnings") or 0),
            "total_earnings": int(totals.get("total_earnings") or 0),
        },
    }


def read_status(device: int, wait: float) -> dict:
    """A fresh status read through the device's queue; raises on failure or timeout."""
    svc = service()
    _known_device(device)
    job = svc.submit("status", device=device, wait=wait)
    raise_job_error(job)
    cfg = svc.devices[device]
    return normalize_status(device, str(getattr(cfg, "name", "") or f"Касса {device}"), job.result or {})


# --------------------------------------------------------------------------- errors


@bp.errorhandler(KKTError)
def _kkt_error(exc: KKTError) -> Response:
    if isinstance(exc, ValidationFailed):
        log_refusal("API", request, exc)
    return error_response(exc)


@bp.errorhandler(DomainError)
def _domain_error(exc: DomainError) -> Response:
    return error_response(validation_error(exc, api_field_name))


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """Werkzeug's errors (404, 405, 413…) in this API's shape (also for unknown /api/ paths)."""
    code = errors.ResultCode.NOT_FOUND if exc.code in (404, 405) else errors.ResultCode.VALIDATION
    err = KKTError(f"ошибка запроса: {exc.name}", code=code)
    err.http_status = exc.code or 400
    return http_headers(error_response(err), exc)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    log_unexpected(log, exc)
    return error_response(KKTError())


# --------------------------------------------------------------------------- devices


@bp.get("/devices")
@require("cashier")
def list_devices() -> Response:
    """All configured devices with their cached state (never waits for a device)."""
    svc = service()
    devices = [
        {"number": n, "name": str(getattr(cfg, "name", "") or f"Касса {n}"), "snapshot": svc.snapshot(n)}
        for n, cfg in sorted(svc.devices.items())
    ]
    return json_response({"devices": devices})


@bp.get("/devices/<int:device>/status")
@require("cashier")
def device_status(device: int) -> Response:
    """A fresh status read: date-time, shift, FN and OFD, money counters, paper."""
    return json_response(read_status(device, wait_seconds(STATUS_WAIT)))


@bp.get("/devices/<int:device>/snapshot")
@require("cashier")
def device_snapshot(device: int) -> Response:
    """The cached state of one device (what the status page shows); never blocks."""
    _known_device(device)
    return json_response({"device": device, "snapshot": service().snapshot(device)})


# --------------------------------------------------------------------------- shift, cash, printing


@bp.post("/devices/<int:device>/shift/open")
@require("cashier")
def shift_open(device: int) -> Response:
    """Open the shift (the service also opens it by itself before the first receipt)."""
    return _submit("open_shift", device)


@bp.post("/devices/<int:device>/shift/x-report")
@require("admin")
def shift_x_report(device: int) -> Response:
    """X report: the shift's counters, no clearing."""
    return _submit("x_report", device)


@bp.post("/devices/<int:device>/shift/close")
@require("admin")
def shift_close(device: int) -> Response:
    """Z report: close the shift."""
    return _submit("close_shift", device)


@bp.post("/devices/<int:device>/settlement-report")
@require("admin")
def settlement_report(device: int) -> Response:
    """«Отчёт о текущем состоянии расчётов»: an FN document, journalled like a shift report."""
    return _submit("settlement_report", device)


@bp.post("/devices/<int:device>/cash-in")
@require("cashier")
def cash_in(device: int) -> Response:
    """Внесение наличных: ``{"amount": roubles}``."""
    data = load(_CASH, read_json(request))
    return _submit("cash_in", device, {"amount": data["amount"]})


@bp.post("/devices/<int:device>/cash-out")
@require("cashier")
def cash_out(device: int) -> Response:
    """Выплата наличных: ``{"amount": roubles}``."""
    data = load(_CASH, read_json(request))
    return _submit("cash_out", device, {"amount": data["amount"]})


@bp.post("/devices/<int:device>/print")
@require("cashier")
def print_text(device: int) -> Response:
    """A non-fiscal document: plain lines or lines with print attributes."""
    data = load(_PRINT, read_json(request))
    return _submit("print_text", device, {"lines": line_params(data["lines"])})


@bp.post("/devices/<int:device>/reprint-last")
@require("cashier")
def reprint_last(device: int) -> Response:
    """Print the last document again (after the paper ran out)."""
    return _submit("reprint_last", device)


@bp.post("/devices/<int:device>/cancel-receipt")
@require("admin")
def cancel_receipt(device: int) -> Response:
    """Cancel a receipt left open on the device (not one the service is still settling)."""
    return _submit("cancel_receipt", device)


def _reset(op: str, device: int) -> Response:
    if not current_app.config.get("ALLOW_DEVICE_RESET", False):
        raise errors.Disabled("сброс ККТ отключён в настройках (ALLOW_DEVICE_RESET = False)")
    log.warning("API: %s на ККТ %d по запросу пользователя %s", op, device, getattr(current_user(), "login", "-"))
    return _submit(op, device)


@bp.post("/devices/<int:device>/reset-summary")
@require("admin")
def reset_summary(device: int) -> Response:
    """Clear the device's money counters (only with ALLOW_DEVICE_RESET)."""
    return _reset("reset_summary", device)


@bp.post("/devices/<int:device>/tech-reset")
@require("admin")
def tech_reset(device: int) -> Response:
    """Technological reset of the device (only with ALLOW_DEVICE_RESET)."""
    return _reset("tech_reset", device)


# --------------------------------------------------------------------------- receipts and jobs


def parse_receipt_request(body: object) -> tuple[dict, Any]:
    """Validate a receipt request and build the domain receipt; raises ValidationFailed."""
    config = current_app.config
    ctx = {"on_date": receipt_date(body), "accept_legacy": bool(config.get("ACCEPT_LEGACY_VAT", True)),
           "settlement": receipt_type(body)}
    with kfields.FiscalContext(ctx):  # type: ignore[arg-type]
        data = load(_RECEIPT, body)
    data["extra"] = fill_from_catalogue(data["items"], data["device"], "items")
    try:
        receipt = build_receipt(data, config)
        device_limits().check(receipt)
    except DomainError as exc:
        raise validation_error(exc, api_field_name) from None
    return data, receipt


@bp.post("/receipts")
@require("cashier")
def create_receipt() -> Response:
    """Fiscalise a receipt: sell, returns, buy, corrections."""
    data, receipt = parse_receipt_request(read_json(request))
    key = idempotency_key(data.get("id"))
    device = data["device"]
    job = service().submit_receipt(receipt, device=device, key=key, fingerprint=receipt_fingerprint(receipt),
                                   source=SOURCE, wait=wait_seconds(), extra=data["extra"])
    user = current_user()
    log.info("API: чек %s на %s ₽ на ККТ %d (ключ %s, пользователь %s) → задание %s, %s",
             receipt.type.value, format_rub(receipt.total), device, key or "-", (user.login if user else "") or "-",
             job.id, job.state)
    return job_response(job, "api.get_receipt")


@bp.get("/receipts")
@require("cashier")
def list_receipts() -> Response:
    """Receipts newest first, filtered (state, device, q, since, until) and paged (limit, offset)."""
    filters = parse_filters(request.args)
    jobs, total = service().list_receipts(**filters)
    return json_response({
        "receipts": [receipt_row(job) for job in jobs],
        "total": total, "limit": filters["limit"], "offset": filters["offset"],
    })


@bp.post("/receipts/<job_id>/cancel")
@require("admin")
def cancel_receipt_job(job_id: str) -> Response:
    """Cancel a receipt that is still queued (409 with the reason otherwise); its key is free again."""
    user = current_user()
    job = service().cancel_receipt(job_id, who=(user.login if user else "") or "")
    return json_response(receipt_row(job))


@bp.get("/receipts/<job_id>")
@require("cashier")
def get_receipt(job_id: str) -> Response:
    """State, result, error and reason of a receipt job."""
    return get_job(job_id)


@bp.get("/jobs/<job_id>")
@require("cashier")
def get_job(job_id: str) -> Response:
    """State, result, error and reason of any job (receipt or device operation)."""
    job = service().get_job(job_id)
    if job is None:
        raise errors.NotFound(f"задание {job_id} не найдено (или уже удалено из журнала)")
    return json_response(job_body(job))


@bp.post("/jobs/<job_id>/settle")
@require("admin")
def settle_job(job_id: str) -> Response:
    """The operator's verdict on a job whose outcome the device cannot tell (409 unless unknown)."""
    data = load(_SETTLE, read_json(request))
    user = current_user()
    job = service().settle_by_hand(job_id, fiscalised=data["fiscalised"], fd_number=data["fiscal_document_number"],
                                   fiscal_sign=data["fiscal_sign"] or "", who=(user.login if user else "") or "")
    return json_response(job_body(job))


# --------------------------------------------------------------------------- description


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI 3 description of this API (public: it holds no secrets)."""
    from kktapp.web.openapi import spec

    return json_response(spec())
