"""The status page (``GET /kkt``): what each device's snapshot means to a person, honestly.

* The time shown is when the device really answered (``read_at``), with its age, marked stale
  when old; the device's clock at that reading stands beside the server's.
* Problems come from :mod:`kktapp.health` (the same rules as /healthz and /metrics) and stand
  out at the top of each device; the badge is green only when there is none.
* Money, fiscal signs and document numbers (the last document, counters, DocNumbers of waiting
  receipts) are shown only to a logged-in viewer, unless STATUS_PAGE_PUBLIC says the page is
  fully public: :func:`redact` removes them from the snapshot for everyone else, HTML and JSON.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
from typing import Any

from kktapp import health
from kktapp.journal import Job
from kktapp.web import present
from kktapp.web.receipts import caller_key, receipt_total

_SHIFT_STATES = {
    "open": ("открыта", ""),
    "closed": ("закрыта (откроется сама перед первым чеком)", ""),
    "expired": ("открыта больше 24 часов: перед следующим чеком сервис снимет Z-отчёт и откроет новую", "warn"),
}
#: A device clock this far from the server's gets a warning tone (seconds).
CLOCK_DRIFT_WARN = 120


def redact(snap: dict) -> dict:
    """The snapshot without money, fiscal signs and document numbers (for anonymous viewers)."""
    out = copy.deepcopy(snap)
    out.pop("last_document", None)
    out.pop("totals", None)
    for section, keys in (("fn", ("last_fd_number", "first_unsent_number")),
                          ("status", ("receipt_number", "receipt_sum"))):
        part = out.get(section)
        if isinstance(part, dict):
            for key in keys:
                part.pop(key, None)
    out["unsettled"] = [
        {k: v for k, v in item.items() if k not in ("id", "key")}
        for item in out.get("unsettled") or [] if isinstance(item, dict)
    ]
    out["redacted"] = True
    return out


def _badge(problems: list[health.Problem], link: str) -> tuple[str, str]:
    if link == "down":
        return "bad", "нет связи с ККТ"
    if any(p.critical for p in problems):
        return "bad", "есть проблемы"
    if problems:
        return "warn", "на связи, есть предупреждения"
    return "ok", "на связи, всё в порядке"


def _clock_rows(snap: dict, taken: dt.datetime | None) -> list[tuple[str, str, str]]:
    device_at = (snap.get("status") or {}).get("datetime")
    rows = [
        ("Часы ККТ при чтении", present.device_time(device_at), ""),
        ("Часы сервера при чтении", present.server_time(taken) if taken else present.DASH, ""),
    ]
    moment = health.parse_time(device_at)
    if moment is not None and taken is not None:
        drift = (moment - taken).total_seconds()
        if abs(drift) >= CLOCK_DRIFT_WARN:
            word = "спешат" if drift > 0 else "отстают"
            rows.append(("Расхождение часов", f"часы ККТ {word} на {health.human_duration(abs(drift))}", "warn"))
    return rows


def device_view(snap: dict, now: dt.datetime, *, status_refresh: float, full: bool,
                waiting: list[Job] | None = None) -> dict[str, Any]:
    """Everything the page shows for one device; ``full`` adds money and document numbers."""
    info = snap.get("info") or {}
    status = snap.get("status") or {}
    shift = snap.get("shift") or {}
    fn = snap.get("fn") or {}
    number = snap.get("device", "")
    name = snap.get("name") or ""
    problems = health.problems(snap, now, status_refresh)
    if snap.get("link_error"):
        # The owner's sentence says why ("соединение отклонено…"): one alert, not two.
        problems = [dataclasses.replace(p, text=snap["link_error"]) if p.code == "link_down" else p
                    for p in problems]
    codes = {p.code for p in problems}
    taken = health.read_at(snap)
    stale = bool(codes & {"stale", "link_down", "no_data"})

    if taken is None:
        read_text = "ещё не прочитаны"
    else:
        read_text = f"{present.server_time(taken)} ({present.age(taken, now)} назад)"
        if stale:
            read_text += " — данные устарели"
    if status:
        paper = ("нет бумаги", "bad") if status.get("paper_present") is False else (
            ("заканчивается", "warn") if status.get("paper_near_end") else ("есть", ""))
    else:
        paper = (present.DASH, "")
    device_rows = [
        ("Данные прочитаны", read_text, "bad" if stale else ""),
        *_clock_rows(snap, taken),
        ("Модель", present.text(info.get("model_name")), ""),
        ("Заводской номер", present.text(info.get("serial") or status.get("serial")), ""),
        ("Прошивка", present.text(info.get("firmware")), ""),
        ("Бумага", *paper),
    ]
    if status.get("cover_open"):
        device_rows.append(("Крышка", "открыта", "bad"))

    state_text, tone = _SHIFT_STATES.get(shift.get("state"), (present.text(shift.get("state")), ""))
    age = health.shift_age(snap, now)
    if "shift_over_24h" in codes:
        tone = "warn"
    shift_rows = [
        ("Состояние", state_text, tone),
        ("Номер", present.text(shift.get("number")), ""),
        ("Открыта (по часам ККТ)", present.device_time(shift.get("opened_at")), ""),
        ("Открыта уже", health.human_duration(age.total_seconds()) if age else present.DASH, tone),
        ("Истекает (по часам ККТ)", present.device_time(shift.get("expires_at")), ""),
        ("Чеков в смене", present.text(shift.get("receipts")), ""),
    ]

    days = health.fn_days_left(snap, now.date())
    unsent = fn.get("unsent_count")
    ofd_tone = "bad" if "ofd_backlog" in codes else ""
    fn_rows = [
        ("Номер ФН", present.text(fn.get("fn_number")), ""),
        ("Действует до", present.date(fn.get("valid_until")), "warn" if "fn_expiring" in codes else ""),
        ("Осталось дней", present.text(days), "warn" if "fn_expiring" in codes else ""),
        ("Не отправлено в ОФД", present.text(unsent), ofd_tone),
        ("Самый старый неотправленный",
         f"{present.device_time(fn.get('first_unsent_at'))} ({present.age(fn.get('first_unsent_at'), now)} назад)"
         if unsent and fn.get("first_unsent_at") else present.DASH, ofd_tone),
    ]
    groups = [
        {"title": "Касса", "rows": device_rows},
        {"title": "Смена", "rows": shift_rows},
        {"title": "Фискальный накопитель и ОФД", "rows": fn_rows},
    ]
    if full:
        last = snap.get("last_document") or {}
        result = last.get("result") or {}
        totals = snap.get("totals") or {}
        groups.append({"title": "Последний документ", "rows": [
            ("Номер ФД", present.text(last.get("fd_number") or result.get("fiscal_document_number")), ""),
            ("Дата и время (по часам ККТ)", present.device_time(result.get("datetime")), ""),
            ("Номер чека", present.text(result.get("receipt_number")), ""),
            ("Сумма", present.rub(result.get("total")), ""),
            ("Фискальный признак", present.text(result.get("fiscal_sign")), ""),
        ]})
        if totals:
            groups.append({"title": "Деньги", "rows": [
                ("Наличных в кассе", present.rub(totals.get("cash_in_drawer")), ""),
                ("Выручка смены", present.rub(totals.get("shift_earnings")), ""),
            ]})
    queue = snap.get("queue") or {}
    if not isinstance(queue, dict):
        queue = {"queued": queue}
    groups.append({"title": "Очередь", "rows": [
        ("Ждут отправки в ККТ", present.text(queue.get("queued", 0)), "warn" if queue.get("queued") else ""),
        ("Отправляются сейчас", present.text(queue.get("sending", 0)), ""),
        ("Результат выясняется", present.text(queue.get("unknown", 0)), "bad" if queue.get("unknown") else ""),
    ]})

    badge = _badge(problems, snap.get("link") or "")
    return {
        "number": number,
        "title": f"Касса № {number}" + (f" — {name}" if name else ""),
        "badge": badge,
        "problems": problems,
        "groups": groups,
        "waiting": [waiting_row(job, now, full) for job in (waiting or [])],
        # Documents the owner gave up on after repeated interrupted sends (snapshot "attention").
        "attention": [
            {"doc": present.text(item.get("key") or item.get("id")) if full else "",
             "reason": present.text(item.get("reason")), "since": present.server_time(item.get("since"))}
            for item in snap.get("attention") or [] if isinstance(item, dict)
        ],
    }


def waiting_row(job: Job, now: dt.datetime, full: bool) -> dict[str, str]:
    """One receipt that has not reached its end yet: DocNumber, sum and age (numbers only when full)."""
    return {
        "doc": present.text(caller_key(job)) if full else "",
        "source": present.SOURCES.get(job.source, job.source),
        "amount": present.rub(receipt_total(job)) if full else "",
        "state": "пробит, ждёт печати копии" if job.state == "done" else present.JOB_STATES.get(job.state, job.state),
        "tone": "bad" if job.state in ("unknown", "sending") or job.reprint else "warn",
        "reason": job.reason or present.DASH,
        "age": present.age(job.created_at, now),
        "accepted": present.server_time(job.created_at),
    }
