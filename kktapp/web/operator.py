"""The operator page, ``/operator`` (relative to where the app is mounted): find receipts, act on devices.

For the administrator (HTTP Basic, role admin): the receipts list with search and filters (the
same as ``GET /api/v1/receipts``), cancel for receipts still in the queue, and per device the X
report, Z report, reprint of the last document and a test print; for a receipt whose outcome the
device cannot tell, the operator's verdict «Пробит» (with the FD) or «Не пробит». Plain HTML forms, no script
needed; every form that changes something is a POST protected against cross-site requests:

* a random token in a cookie (``SameSite=Strict``, ``HttpOnly``) that must equal the token in
  the form (double submit: another site can neither read the cookie nor set it), and
* an ``Origin`` header, when the browser sends one, naming this very site, and no
  ``Sec-Fetch-Site: cross-site``.

HTTP Basic credentials are sent by the browser automatically, which is exactly why the token
is needed. After an action the browser is redirected back to the page (POST-redirect-GET), which
shows the outcome.
"""

from __future__ import annotations

import datetime as dt
import hmac
import logging
import secrets
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, current_app, redirect, render_template, request, url_for

import kktapp
from kktapp import health
from kktapp.errors import KKTError, ResultCode, http_status
from kktapp.owner import kind_name
from kktapp.web import present
from kktapp.web.auth import AuthError, current_user, require
from kktapp.web.receipts import DEFAULT_LIMIT, parse_filters, receipt_row

log = logging.getLogger(__name__)

bp = Blueprint("operator", __name__, template_folder="../templates")

CSRF_COOKIE = "kkt_csrf"
CSRF_FIELD = "csrf"
#: Seconds an action waits for the device before the page shows "still running".
ACTION_WAIT = 30.0
#: Button → (service operation, Russian name).
ACTIONS = {
    "x-report": ("x_report", "X-отчёт"),
    "z-report": ("close_shift", "Z-отчёт (закрытие смены)"),
    "reprint": ("reprint_last", "Повтор печати последнего документа"),
    "test-print": ("print_text", "Тестовая печать"),
}
#: Filter choices of the state list on the page.
STATE_CHOICES = [
    ("", "все"), ("queued", "в очереди"), ("sending", "отправляются"), ("unknown", "результат выясняется"),
    ("done", "пробиты"), ("failed", "не пробиты и отменённые"),
]


class CrossSiteRequest(KKTError):
    """A form without the page's token, or sent from another site."""

    http_status = 403
    message = ("запрос отклонён: форма отправлена не со страницы оператора этого сервиса "
               "(или страница устарела — обновите её и повторите)")


def _service() -> Any:
    return current_app.extensions["kkt"]


def _endpoint(name: str) -> str:
    """This blueprint's endpoint under the prefix the request came by (/operator or /kkt/operator)."""
    return f"{request.blueprint or 'operator'}.{name}"


# --------------------------------------------------------------------------- cross-site protection


def _csrf_token() -> str:
    token = request.cookies.get(CSRF_COOKIE, "")
    return token if len(token) >= 32 else secrets.token_urlsafe(32)


def _check_same_site() -> None:
    """Refuse a POST whose token does not match the cookie or that came from another origin."""
    sent = request.form.get(CSRF_FIELD, "")
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not sent or not cookie or not hmac.compare_digest(sent, cookie):
        raise CrossSiteRequest()
    if request.headers.get("Sec-Fetch-Site") == "cross-site":
        raise CrossSiteRequest()
    origin = request.headers.get("Origin")
    if origin and origin != "null":
        if _origin(origin) != _origin(request.host_url):
            raise CrossSiteRequest()


def _origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) with the default port spelled out: "http://h" equals "http://h:80"."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        port = None
    return parts.scheme, (parts.hostname or "").lower(), port


def _with_cookie(response: Response, token: str) -> Response:
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="Strict", secure=request.is_secure,
                        path=(request.script_root or "") + "/")
    response.headers["Cache-Control"] = "no-store"
    # The page is never framed (clickjacking a cancel button).
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
    return response


# --------------------------------------------------------------------------- page


def _filters_query() -> dict[str, str]:
    """The list filters of this request, to carry through links and redirects."""
    keys = ("q", "state", "device", "since", "until", "limit", "offset")
    return {k: request.args[k] for k in keys if request.args.get(k)}


def _outcome(job_id: str) -> tuple[str, str] | None:
    """(tone, text) for the job an action just ran, from the journal."""
    job = _service().get_job(job_id)
    if job is None:
        return None
    title = kind_name(job.kind)
    title = title[:1].upper() + title[1:]
    where = f"касса № {job.device}"
    if job.state == "done":
        return "ok", f"{title}, {where}: выполнено"
    if job.state == "failed":
        err = job.error or {}
        return "bad", f"{title}, {where}: не выполнено — {err.get('message', '')} (код {err.get('code', '—')})"
    reason = f" ({job.reason})" if job.reason else ""
    return "warn", f"{title}, {where}: ещё не выполнено, {present.JOB_STATES.get(job.state, job.state)}{reason}"


def _page(messages: list[tuple[str, str]], status: int = 200) -> Response:
    service = _service()
    now = dt.datetime.now().astimezone()
    try:
        filters = parse_filters(request.args)
    except KKTError as exc:
        messages.append(("bad", exc.message))
        filters = parse_filters({})
    jobs, total = service.list_receipts(**filters)
    rows = []
    for job in jobs:
        row = receipt_row(job)
        row.update({
            "accepted": present.server_time(row["accepted_at"]),
            "amount_text": present.rub(row["amount"]),
            "state_text": present.JOB_STATES.get(row["state"], row["state"]),
            "source_text": present.SOURCES.get(row["source"], row["source"]),
            "age": present.age(row["accepted_at"], now),
        })
        if row["error_code"] == ResultCode.CANCELLED:
            row["state_text"] = "отменён"
        rows.append(row)
    devices = []
    for number in sorted(service.devices):
        snap = service.snapshot(number)
        problems = health.problems(snap, now, service.status_refresh)
        devices.append({
            "number": number,
            "name": snap.get("name") or "",
            "problems": problems,
            "link": snap.get("link"),
            "shift": (snap.get("shift") or {}).get("state"),
        })
    limit, offset = filters["limit"], filters["offset"]
    query = _filters_query()
    prev_url = next_url = None
    if offset > 0:
        prev_url = url_for(_endpoint("page"), **(query | {"offset": str(max(0, offset - limit))}))
    if offset + limit < total:
        next_url = url_for(_endpoint("page"), **(query | {"offset": str(offset + limit)}))
    token = _csrf_token()
    user = current_user()
    html = render_template(
        "operator.html",
        version=kktapp.__version__,
        user=(user.login if user else "") or "администратор",
        messages=messages,
        devices=devices,
        actions=[(name, title) for name, (_op, title) in ACTIONS.items()],
        rows=rows,
        total=total,
        shown=(offset + 1 if rows else 0, offset + len(rows)),
        prev_url=prev_url,
        next_url=next_url,
        args=request.args,
        state_choices=STATE_CHOICES,
        default_limit=DEFAULT_LIMIT,
        csrf=token,
        bp=request.blueprint or "operator",
        query=query,
        generated_at=present.server_time(now),
        status_url=url_for("kkt1c.status"),
    )
    return _with_cookie(current_app.response_class(html, status=status, mimetype="text/html"), token)


@bp.get("/operator")
@require("admin")
def page() -> Response:
    """The receipts list with search, and the device buttons."""
    messages: list[tuple[str, str]] = []
    done = request.args.get("done")
    if done:
        outcome = _outcome(done)
        if outcome:
            messages.append(outcome)
    cancelled = request.args.get("cancelled")
    if cancelled:
        job = _service().get_job(cancelled)
        if job is not None:
            messages.append(("ok", f"Чек {job.key or job.id} отменён: он не будет пробит; "
                                   "номер документа свободен для нового чека"))
    settled = request.args.get("settled")
    if settled:
        job = _service().get_job(settled)
        if job is not None and job.state == "done":
            messages.append(("ok", f"Чек {job.key or job.id}: записан как пробитый, "
                                   f"ФД {(job.result or {}).get('fiscal_document_number')}; очередь кассы свободна"))
        elif job is not None and job.state == "failed":
            messages.append(("ok", f"Чек {job.key or job.id}: записан как не пробитый; очередь кассы свободна, "
                                   "тот же документ можно отправить снова"))
    return _page(messages)


@bp.post("/operator/receipts/<job_id>/cancel")
@require("admin")
def cancel(job_id: str) -> Response:
    """Cancel a queued receipt; refused (409, shown on the page) when it may already be on the device."""
    _check_same_site()
    user = current_user()
    try:
        _service().cancel_receipt(job_id, who=(user.login if user else "") or "")
    except KKTError as exc:
        return _page([("bad", f"Чек не отменён: {exc.message}")], status=http_status(exc))
    return redirect(url_for(_endpoint("page"), cancelled=job_id, **_filters_query()), code=303)


#: Form value of the settle buttons → the verdict: fiscalised or not.
VERDICTS = {"fiscalised": True, "not-fiscalised": False}


@bp.post("/operator/receipts/<job_id>/settle")
@require("admin")
def settle(job_id: str) -> Response:
    """«Пробит» (with the FD the operator found in the FN or OFD) or «Не пробит» for a receipt
    whose outcome the device cannot tell; refused (shown on the page) unless it is unknown."""
    _check_same_site()
    verdict = request.form.get("verdict", "")
    if verdict not in VERDICTS:
        return _page([("bad", "Результат не установлен: выберите «Пробит» или «Не пробит»")], status=422)
    user = current_user()
    try:
        _service().settle_by_hand(job_id, fiscalised=VERDICTS[verdict], fd_number=request.form.get("fd"),
                                  fiscal_sign=request.form.get("fp", ""), who=(user.login if user else "") or "")
    except KKTError as exc:
        return _page([("bad", f"Результат не установлен: {exc.message}")], status=http_status(exc))
    return redirect(url_for(_endpoint("page"), settled=job_id, **_filters_query()), code=303)


@bp.post("/operator/devices/<int:device>/<action>")
@require("admin")
def device_action(device: int, action: str) -> Response:
    """X report, Z report, reprint, test print on one device; the page shows the outcome."""
    _check_same_site()
    if action not in ACTIONS:
        return _page([("bad", f"Неизвестное действие: {action}")], status=404)
    op, title = ACTIONS[action]
    params = None
    if op == "print_text":
        now = dt.datetime.now().astimezone()
        params = {"lines": [
            {"text": "ТЕСТОВАЯ ПЕЧАТЬ", "bold": True, "align": "center"},
            {"text": f"kkt {kktapp.__version__}, касса № {device}"},
            {"text": now.strftime("%d.%m.%Y %H:%M")},
            {"text": "Касса на связи, принтер печатает."},
        ]}
    user = current_user()
    try:
        job = _service().submit(op, params, device=device, wait=ACTION_WAIT)
    except KKTError as exc:
        return _page([("bad", f"{title}, касса № {device}: {exc.message}")], status=http_status(exc))
    log.info("Оператор %s: %s на ККТ %d → %s", (user.login if user else "") or "-", title, device, job.state)
    return redirect(url_for(_endpoint("page"), done=job.id, **_filters_query()), code=303)


@bp.errorhandler(KKTError)
def _refused(exc: KKTError) -> Response:
    headers = exc.headers if isinstance(exc, AuthError) else {}
    body = render_template("operator_error.html", message=exc.message, code=exc.code,
                           status_url=url_for("kkt1c.status"))
    response = current_app.response_class(body, status=http_status(exc), mimetype="text/html")
    for name, value in headers.items():
        response.headers[name] = value
    return response
