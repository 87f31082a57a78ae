"""What is wrong with a device, decided once from its snapshot: for /healthz, /metrics and the status page.

A :class:`Problem` has a code for machines, a Russian text for people, and whether it makes the
service unhealthy (``critical``: the device cannot fiscalise or a receipt is unsettled, /healthz
answers 503) or is a warning that needs a person soon (paper near its end, FN expiring, OFD
backlog). Works on the dict :meth:`kktapp.service.FiscalService.snapshot` returns, so every
process decides the same from the shared journal without touching a device.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

#: The FN expires: warn this many days ahead.
FN_WARN_DAYS = 30
#: OFD documents unsent longer than this get a warning; at 30 days the FN blocks (54-ФЗ art. 4.1).
OFD_WARN_AGE = dt.timedelta(days=1)
#: The FN stops fiscalising when its oldest unsent document is this old.
OFD_BLOCK_DAYS = 30
#: A shift lasts at most 24 hours.
SHIFT_LIMIT = dt.timedelta(hours=24)
#: Data older than this many status refresh periods (and at least STALE_MIN seconds) are stale.
STALE_PERIODS = 3
STALE_MIN = 60.0
#: A receipt in "sending" longer than this counts as unsettled (normally it takes a second).
SENDING_UNSETTLED = 60.0


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one device."""

    device: int
    code: str
    text: str
    critical: bool

    def to_dict(self) -> dict[str, Any]:
        """JSON form for /healthz."""
        return {"device": self.device, "problem": self.code, "message": self.text, "critical": self.critical}


def parse_time(value: Any) -> dt.datetime | None:
    """An ISO date-time from a snapshot, aware (naive values are the server's local time)."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo is not None else moment.astimezone()


def parse_date(value: Any) -> dt.date | None:
    """An ISO date (or the date of a date-time) from a snapshot."""
    if isinstance(value, str) and value:
        try:
            return dt.date.fromisoformat(value[:10])
        except ValueError:
            return None
    return value if isinstance(value, dt.date) else None


def read_at(snap: dict) -> dt.datetime | None:
    """When the device last answered (older snapshots without ``read_at``: their own time if the link was up)."""
    moment = parse_time(snap.get("read_at"))
    if moment is None and snap.get("link") == "ok":
        moment = parse_time(snap.get("updated_at"))
    return moment


def stale_after(status_refresh: float) -> float:
    """Seconds after which a device's data count as stale."""
    return max(STALE_MIN, STALE_PERIODS * float(status_refresh))


def device_clock(snap: dict, now: dt.datetime) -> dt.datetime | None:
    """The device's clock now, estimated from its reading at ``read_at`` (device clocks are naive)."""
    device_time = parse_time((snap.get("status") or {}).get("datetime"))
    taken = read_at(snap)
    if device_time is None or taken is None:
        return None
    return device_time + (now - taken)


def shift_age(snap: dict, now: dt.datetime) -> dt.timedelta | None:
    """How long the open shift has been open by the device's clock (None when closed or unknown)."""
    shift = snap.get("shift") or {}
    if shift.get("state") not in ("open", "expired"):
        return None
    opened = parse_time(shift.get("opened_at"))
    if opened is None:
        return None
    return (device_clock(snap, now) or now) - opened


def fn_days_left(snap: dict, today: dt.date) -> int | None:
    """Days until the FN's validity ends (None when unknown)."""
    until = parse_date((snap.get("fn") or {}).get("valid_until"))
    return (until - today).days if until else None


def ofd_oldest_age(snap: dict, now: dt.datetime) -> dt.timedelta | None:
    """Age of the oldest document not yet sent to the OFD (None when all are sent)."""
    fn = snap.get("fn") or {}
    if not fn.get("unsent_count"):
        return None
    first = parse_time(fn.get("first_unsent_at"))
    return now - first if first else None


def unsettled_jobs(snap: dict, now: dt.datetime) -> list[dict]:
    """Unsettled entries of the snapshot that count: outcome unknown, copy owed, or sending too long."""
    found = []
    for item in snap.get("unsettled") or []:
        if item.get("state") == "sending":
            since = parse_time(item.get("since"))
            if since is not None and (now - since).total_seconds() < SENDING_UNSETTLED:
                continue
        found.append(item)
    return found


def problems(snap: dict, now: dt.datetime, status_refresh: float) -> list[Problem]:
    """Everything wrong with one device, critical first."""
    number = int(snap.get("device") or 0)
    found: list[Problem] = []

    def add(code: str, text: str, critical: bool) -> None:
        found.append(Problem(number, code, text, critical))

    link = snap.get("link")
    taken = read_at(snap)
    if link == "down":
        add("link_down", "нет связи с ККТ", True)
    elif taken is None:
        add("no_data", "данные ККТ ещё не прочитаны", True)
    elif (now - taken).total_seconds() > stale_after(status_refresh) or link != "ok":
        add("stale", f"данные ККТ устарели: прочитаны {human_duration((now - taken).total_seconds())} назад", True)
    unsettled = unsettled_jobs(snap, now)
    if unsettled:
        add("unsettled", f"неподтверждённых чеков: {len(unsettled)} — сервис выясняет их результат", True)
    status = snap.get("status") or {}
    if status and status.get("paper_present") is False:
        add("no_paper", "нет бумаги", True)
    elif status.get("paper_near_end"):
        add("paper_near_end", "бумага заканчивается", False)
    if status.get("cover_open"):
        add("cover_open", "открыта крышка", True)
    age = shift_age(snap, now)
    if (snap.get("shift") or {}).get("state") == "expired" or (age is not None and age > SHIFT_LIMIT):
        add("shift_over_24h", "смена открыта больше 24 часов: перед следующим чеком будет снят Z-отчёт", False)
    days = fn_days_left(snap, now.date())
    if days is not None and days <= FN_WARN_DAYS:
        text = f"срок ФН истёк {-days} дн. назад" if days < 0 else f"срок ФН истекает через {days} дн."
        add("fn_expiring", text + ": замените ФН", days < 0)
    ofd = ofd_oldest_age(snap, now)
    if ofd is not None and ofd > OFD_WARN_AGE:
        unsent = (snap.get("fn") or {}).get("unsent_count")
        add("ofd_backlog", f"в ОФД не отправлено {unsent} док., самый старый — {ofd.days} дн.; "
                           f"через {OFD_BLOCK_DAYS} дн. ФН заблокирует кассу: проверьте интернет и договор с ОФД",
            ofd.days >= OFD_BLOCK_DAYS - 5)
    if (snap.get("fn") or {}).get("warnings"):
        add("fn_warning", "ФН сообщает о проблеме (замена, переполнение или нет ответа ОФД)", False)
    found.sort(key=lambda p: not p.critical)
    return found


def human_duration(seconds: float) -> str:
    """"12 с", "3 мин", "2 ч 5 мин", "3 дн." for pages and log lines."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} с"
    minutes = seconds // 60
    if minutes < 60:
        return f"{minutes} мин"
    if minutes < 48 * 60:
        return f"{minutes // 60} ч {minutes % 60} мин"
    return f"{minutes // 1440} дн."
