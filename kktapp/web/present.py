"""How values look to people on the HTML pages: money, dates, times, ages, job states.

One place, so the status page and the operator page write "1 950,72 ₽", "30.11.2026" and
"30.11.2026 10:15:02 MSK" the same way. Values come from snapshots and journal rows (ISO strings).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from kktapp.health import human_duration, parse_time

DASH = "—"
#: Russian names of job states, as the operator reads them.
JOB_STATES = {
    "queued": "в очереди",
    "sending": "отправляется в ККТ",
    "unknown": "результат выясняется",
    "failed": "не пробит",
    "done": "пробит",
}
#: Where a receipt came from.
SOURCES = {"1c": "1С", "api": "API", "compat": "atol-kkt-service", "proc": "сервис"}


def rub(kopecks: Any) -> str:
    """Integer kopecks → "1 950,72 ₽" (thin no-break spaces between thousands, as people write it)."""
    if isinstance(kopecks, bool) or not isinstance(kopecks, int):
        return DASH
    sign = "−" if kopecks < 0 else ""
    rubles, kop = divmod(abs(kopecks), 100)
    return f"{sign}{rubles:,}".replace(",", "\u202f") + f",{kop:02d}\u00a0₽"


def zone(moment: dt.datetime) -> str:
    """"MSK" where the system names the zone, else "UTC+03:00"."""
    name = moment.tzname() or ""
    if name.isalpha():
        return name
    offset = moment.utcoffset() or dt.timedelta()
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "−"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def date(value: Any) -> str:
    """A date (or the date of a date-time) → "30.11.2026"."""
    if isinstance(value, str) and len(value) >= 10:
        try:
            return dt.date.fromisoformat(value[:10]).strftime("%d.%m.%Y")
        except ValueError:
            return value
    if isinstance(value, dt.date):
        return value.strftime("%d.%m.%Y")
    return DASH


def server_time(value: Any) -> str:
    """A moment on the server's clock → "30.11.2026 10:15:02 MSK" (with its time zone)."""
    moment = parse_time(value)
    if moment is None:
        return DASH
    moment = moment.astimezone()
    return f"{moment:%d.%m.%Y %H:%M:%S} {zone(moment)}"


def device_time(value: Any) -> str:
    """A moment on the device's clock (no zone of its own) → "30.11.2026 10:15"; seconds when not :00."""
    if isinstance(value, str) and value:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
    elif isinstance(value, dt.datetime):
        moment = value
    else:
        return DASH
    return f"{moment:%d.%m.%Y %H:%M}" + (f":{moment:%S}" if moment.second else "")


def age(value: Any, now: dt.datetime) -> str:
    """How long ago: "12 с", "3 мин", "2 ч 5 мин"."""
    moment = parse_time(value)
    if moment is None:
        return DASH
    return human_duration(max(0.0, (now - moment).total_seconds()))


def text(value: Any) -> str:
    """Anything → its text, or a dash for nothing."""
    return DASH if value in (None, "") else str(value)
