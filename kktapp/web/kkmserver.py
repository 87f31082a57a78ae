"""KKM Server's HTTP API: ``POST /Execute`` and ``POST /Execute/sync``, one JSON command per request.

Shops, kiosks and cashier pages integrated with KKM Server (kkmserver-api.md) switch to kkt by
changing only the host name: the same body ``{"Command": "RegisterCheck", "NumDevice": 0,
"IdCommand": "…", "Timeout": 60, …}`` gets the same answer ``{"Command", "Status", "Error",
"Warning", "Message", "IdCommand", "NumDevice", …}`` with HTTP 200 whatever happened: the
clients read ``Status`` (0 done, 1 running, 2 error, 3 command or device not found, 4 queued)
and show ``Error``; alexanderfefelov's client takes any other HTTP status for a transport
failure. Failed device commands add ``ErrorCode`` (the device's code 1..255 or the service's
≥ 1000) for the programmer.

* Access: HTTP Basic with kkt's USERS. Reports (XReport, ZReport/CloseShift, OfdReport) need
  an admin, everything else a cashier, as in the other contracts. Refusals are Status 2 too.
* ``IdCommand`` is the idempotency key: the first request's body, register and final answer are
  kept (:mod:`.kkmserver_store`), its device job is keyed in the journal. The same IdCommand
  with the same body returns the stored answer and never runs again; with another body it is
  refused. A request without one gets a fresh IdCommand, echoed, so it can be polled too.
* ``Timeout``: seconds to wait, 0 or absent = 60; 1 = answer at once (Status 4 queued or 1
  running); ``GetRezult {IdCommand}`` answers ``{"Rezult": <the command's answer>}`` later,
  also after a restart.
* CORS for browser pages: conf KKMSERVER_CORS_ORIGINS lists the origins allowed (``"*"`` any);
  preflight ``OPTIONS`` needs no password.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal

from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from kktapp import errors
from kktapp.errors import KKTError, ValidationFailed
from kktapp.service import fingerprint
from kktapp.web import fields as kfields
from kktapp.web.auth import authenticate, check_role, current_user
from kktapp.web.common import http_headers, read_json
from kktapp.web.compat import dumps
from kktapp.web.kkmserver_commands import (
    BY_LOWER,
    COMMANDS,
    ERROR,
    NOT_FOUND,
    OK,
    Call,
)
from kktapp.web.kkmserver_store import CommandStore, store_path
from kktapp.web.kkmserver_units import route, unit_name

log = logging.getLogger(__name__)

bp = Blueprint("kkmserver", __name__)

GET_REZULT = "GetRezult"
#: Timeout 0 or absent waits this long [S: ST request.ts "Если не указано или 0 - то значение по умолчанию 60 сек"].
DEFAULT_TIMEOUT = 60
#: Timeout 1 means "asynchronous: answer at once" [S: ST request.ts].
ASYNC_TIMEOUT = 1
#: Longest wait a request may ask for: beyond this a proxy or mod_wsgi cuts the request anyway.
MAX_TIMEOUT = 300
MAX_ID = 128
#: Answers that will not change any more and are kept for repeats and GetRezult.
FINAL = (OK, ERROR)
UNKNOWN_COMMAND = "команда «{name}» не поддерживается сервисом kkt; поддерживаются: {names}"
KEY_REUSED = "IdCommand {id} уже использован для другой команды (другое содержимое запроса)"
NOT_FOUND_ID = "команда с IdCommand {id} не найдена (не поступала или уже удалена из журнала)"
WRONG_METHOD = ("запрос {method} не поддерживается: команды KKM Server отправляются запросом POST на /Execute "
                "(или /Execute/sync), тело — команда JSON")
WRONG_PATH = "адрес {path} не найден: команды KKM Server отправляются запросом POST на /Execute или /Execute/sync"
CORS_METHODS = "POST, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type"
CORS_MAX_AGE = "600"


# --------------------------------------------------------------------------- answers


def answer_response(answer: dict) -> Response:
    """The answer as KKM Server sends it: JSON, HTTP 200, money as exact numbers."""
    resp = current_app.response_class(dumps(answer), status=200, mimetype="application/json")
    resp.headers["Content-Type"] = "application/json; charset=utf-8"
    return resp


def envelope(command: str, id_command: str, device: int, fields: dict, warnings: list[str] | None = None) -> dict:
    """Common fields first (ST response.ts), then the command's own."""
    warning = "; ".join(w for w in [fields.pop("Warning", ""), *(warnings or [])] if w)
    body = {"Command": command, "Status": fields.pop("Status", ERROR), "Error": fields.pop("Error", ""),
            "Warning": warning, "Message": fields.pop("Message", ""), "IdCommand": id_command,
            "NumDevice": device, "UnitName": unit_name(device) if device else ""}
    body.update(fields)
    return body


def error_fields(exc: KKTError) -> dict:
    """Status 3 for an unknown register or command, Status 2 for everything else; ErrorCode for the programmer."""
    status = NOT_FOUND if isinstance(exc, errors.NotFound) else ERROR
    return {"Status": status, "Error": exc.message, "ErrorCode": int(exc.code)}


# --------------------------------------------------------------------------- CORS


def _allowed_origin() -> str | None:
    origin = request.headers.get("Origin")
    allowed = current_app.config.get("KKMSERVER_CORS_ORIGINS") or []
    if isinstance(allowed, str):
        allowed = [allowed]
    if origin and ("*" in allowed or origin in allowed):
        return origin
    return None


@bp.after_request
def _cors(resp: Response) -> Response:
    origin = _allowed_origin()
    if origin is not None:
        # The origin itself, not "*": pages send credentials (Authorization), and browsers
        # refuse "*" together with credentials.
        resp.headers["Access-Control-Allow-Origin"] = origin
        resp.headers["Access-Control-Allow-Credentials"] = "true"
    resp.headers.add("Vary", "Origin")
    return resp


def preflight() -> Response:
    """CORS preflight: what the page may send; no password (browsers never send one here)."""
    resp = current_app.response_class("", status=200)
    if _allowed_origin() is not None:
        resp.headers["Access-Control-Allow-Methods"] = CORS_METHODS
        resp.headers["Access-Control-Allow-Headers"] = (
            request.headers.get("Access-Control-Request-Headers") or CORS_HEADERS)
        resp.headers["Access-Control-Max-Age"] = CORS_MAX_AGE
        # Chrome's Private Network Access: a public shop page calling a register server in the LAN.
        if request.headers.get("Access-Control-Request-Private-Network") == "true":
            resp.headers["Access-Control-Allow-Private-Network"] = "true"
    return resp


# --------------------------------------------------------------------------- request


def store() -> CommandStore:
    """This app's IdCommand registry (created on first use)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    found = app.extensions.get("kkt_kkmserver_store")
    if found is None:
        found = CommandStore(store_path(str(app.config["JOURNAL_PATH"])),
                             float(app.config.get("RESULT_RETENTION_DAYS", 30)))
        app.extensions["kkt_kkmserver_store"] = found
    return found


def id_command(body: dict) -> str:
    """The request's IdCommand, or a fresh one (echoed, so the client may poll GetRezult with it)."""
    value = body.get("IdCommand")
    if value in (None, ""):
        return str(uuid.uuid4())
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationFailed("IdCommand", "ожидается строка", str(value))
    text = str(value).strip()
    if not text or len(text) > MAX_ID or not text.isprintable():
        raise ValidationFailed("IdCommand", f"строка от 1 до {MAX_ID} печатных символов", text[:MAX_ID])
    return text


def wait_seconds(body: dict) -> float:
    """Timeout → seconds to wait: 0/absent = 60, 1 = none (asynchronous), at most MAX_TIMEOUT."""
    value = body.get("Timeout")
    if value in (None, ""):
        return DEFAULT_TIMEOUT
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValidationFailed("Timeout", "ожидается целое число секунд (1 — не ждать)", str(value))
    if value == 0:
        return DEFAULT_TIMEOUT
    if value == ASYNC_TIMEOUT:
        return 0.0
    return float(min(value, MAX_TIMEOUT))


def _body_fingerprint(body: dict) -> str:
    # Timeout only says how long this request waits; IdCommand is the key itself.
    return fingerprint({k: v for k, v in body.items() if k not in ("IdCommand", "Timeout")})


def run(command: str, body: dict, ident: str, device: int, wait: float) -> dict:
    """Run one command (already authorised) and wrap its answer; never raises KKTError."""
    spec = COMMANDS[command]
    call = Call(command, body, ident, device, wait)
    try:
        fields = spec.handler(call)
    except KKTError as exc:
        fields = error_fields(exc)
    return envelope(str(body.get("Command") or command), ident, device, fields, call.warnings)


def execute(body: object) -> dict:
    """One KKM Server request → its answer (KKTError for what fails before a command runs)."""
    if not isinstance(body, dict):
        raise ValidationFailed("body", "ожидается объект JSON с полем Command")
    name = body.get("Command")
    if not isinstance(name, str) or not name.strip():
        raise ValidationFailed("Command", "не указана команда", name if isinstance(name, str | int) else None)
    g.kkt_user = authenticate("cashier")
    if name.strip().lower() == GET_REZULT.lower():
        # A fresh id (as other commands get) would only be reported "not found": say what is missing.
        if body.get("IdCommand") in (None, ""):
            raise ValidationFailed("IdCommand", kfields.BASE_MESSAGES["required"])
        return get_rezult(name, id_command(body))
    ident = id_command(body)
    command = BY_LOWER.get(name.strip().lower())
    if command is None:
        log.warning("KKM Server: неподдерживаемая команда %r", name[:64])
        # Status 3 "command or device not found" [C: ST status.ts, AF], not 2: a client may try
        # another command (or server) on 3, while 2 says this one failed.
        raise errors.NotFound(UNKNOWN_COMMAND.format(name=name.strip()[:64],
                                                     names=", ".join([*COMMANDS, GET_REZULT])))
    spec = COMMANDS[command]
    check_role(spec.role)
    wait = wait_seconds(body)
    if spec.conf_only and body.get("IdCommand") in (None, ""):
        return run(command, body, ident, route(body) if spec.routed else 0, wait)
    fp = _body_fingerprint(body)
    reg = store()
    record = reg.get(ident)
    if record is None:
        device = route(body) if spec.routed else 0
        record, _ = reg.claim(ident, command, fp, body, device)
    if record.fingerprint != fp or record.command != command:
        raise errors.Conflict(KEY_REUSED.format(id=ident))
    if record.answer is not None:
        log.info("KKM Server: повтор %s с IdCommand %s: ответ из журнала", command, ident)
        return record.answer
    answer = _keep(ident, run(command, body, ident, record.device, wait))
    user = current_user()
    log.info("KKM Server: %s на ККТ %d (IdCommand %s, пользователь %s) → Status %s", command, record.device, ident,
             (user.login if user else "") or "-", answer["Status"])
    return answer


def _keep(ident: str, answer: dict) -> dict:
    """A final answer is kept; two requests finishing at once both return the one kept first."""
    return store().store_answer(ident, answer) if answer["Status"] in FINAL else answer


def get_rezult(name: str, ident: str) -> dict:
    """GetRezult: ``{"Rezult": <the command's answer now>}`` [S: AF GetRezultResponse; ST GetRezult.ts].

    The envelope carries the command's register (NumDevice, UnitName), as every answer does.
    """
    record = store().get(ident)
    if record is None:
        return envelope(name, ident, 0, {"Status": NOT_FOUND, "Error": NOT_FOUND_ID.format(id=ident)})
    inner = record.answer
    if inner is None:
        # Not final when last asked: look again without waiting. The handler finds its job under
        # the IdCommand key, so this never starts the command a second time.
        check_role(COMMANDS[record.command].role)
        inner = _keep(ident, run(record.command, record.body, ident, record.device, 0.0))
    return envelope(name, ident, record.device, {"Status": OK, "Rezult": inner})


@bp.route("/Execute", methods=["POST", "OPTIONS"])
@bp.route("/Execute/sync", methods=["POST", "OPTIONS"])
def execute_view() -> Response:
    """One KKM Server command (or a CORS preflight)."""
    if request.method == "OPTIONS":
        return preflight()
    body: object = None
    try:
        body = read_json(request)
        return answer_response(execute(body))
    except KKTError as exc:
        name = body.get("Command") if isinstance(body, dict) else ""
        ident = body.get("IdCommand") if isinstance(body, dict) else ""
        name = name if isinstance(name, str) else ""
        log.info("KKM Server: отказ %s: %s", name or "?", exc.message)
        return answer_response(envelope(name, str(ident or ""), 0, error_fields(exc)))


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Response:
    """Werkzeug's errors (405, 404, 413…) in the contract's JSON with HTTP 200 (also for /Execute/… paths).

    The clients read only Status and Error; AF's takes any other HTTP status for a broken link.
    """
    if exc.code == 405:
        text = WRONG_METHOD.format(method=request.method)
    elif exc.code == 404:
        text = WRONG_PATH.format(path=request.path[:200])
    else:
        text = f"ошибка запроса: {exc.name} ({request.method} {request.path[:200]}); команды KKM Server — POST /Execute"
    log.info("KKM Server: отказ: %s", text)
    err = KKTError(text, code=errors.ResultCode.VALIDATION)
    return http_headers(answer_response(envelope("", "", 0, error_fields(err))), exc)


@bp.errorhandler(Exception)
def _unexpected(exc: Exception) -> Response:
    # A bug must not turn into an HTML 500 page: the clients only understand the JSON answer.
    log.exception("KKM Server: внутренняя ошибка при обработке запроса")
    return answer_response(envelope("", "", 0, error_fields(KKTError())))

