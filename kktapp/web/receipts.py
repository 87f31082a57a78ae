"""The operator's view of receipts: list filters from a query string, one row per receipt.

Shared by ``GET /api/v1/receipts`` (JSON) and the operator page (HTML), so both filter and
describe a receipt the same way. Money stays integer kopecks here; pages format it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from kktapp.errors import ValidationFailed
from kktapp.journal import STATES, Job, receipt_from_json

#: Rows per page unless the caller asks otherwise, and the most it may ask for.
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
#: Longest search text: a DocNumber is at most 128 characters.
MAX_QUERY = 200
#: Namespaces the contracts put before the caller's key (kktapp.web.api / compat).
_KEY_PREFIXES = ("api:", "compat:")


def _parse_time(name: str, raw: str, *, end: bool) -> float:
    """ISO date or date-time → epoch seconds; a bare date as ``until`` means the end of that day."""
    text = raw.strip()
    try:
        if len(text) == 10:
            day = dt.date.fromisoformat(text)
            moment = dt.datetime.combine(day + dt.timedelta(days=1 if end else 0), dt.time())
        else:
            moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValidationFailed(name, "ожидается дата ГГГГ-ММ-ДД или дата и время ISO 8601", raw) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the server's local time, as the operator means it
    return moment.timestamp()


def _parse_int(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValidationFailed(name, f"ожидается целое число от {low} до {high}", raw) from None
    if not low <= value <= high:
        raise ValidationFailed(name, f"ожидается целое число от {low} до {high}", raw)
    return value


def parse_filters(args: Mapping[str, str]) -> dict[str, Any]:
    """Query string → keyword arguments of :meth:`FiscalService.list_receipts`; 422 on bad input.

    ``state`` (one or several, comma-separated: queued, sending, unknown, done, failed),
    ``device``, ``q`` (DocNumber, key, item name, id), ``since`` / ``until`` (ISO date or
    date-time; a date ``until`` includes that whole day), ``limit``, ``offset``.
    """
    filters: dict[str, Any] = {}
    raw_state = (args.get("state") or "").strip()
    if raw_state:
        states = tuple(s.strip() for s in raw_state.split(",") if s.strip())
        for state in states:
            if state not in STATES:
                raise ValidationFailed("state", f"неизвестное состояние; допустимо: {', '.join(STATES)}", state)
        filters["states"] = states
    raw_device = (args.get("device") or "").strip()
    if raw_device:
        filters["device"] = _parse_int(args, "device", 1, 1, 10_000)
    text = (args.get("q") or "").strip()
    if len(text) > MAX_QUERY:
        raise ValidationFailed("q", f"строка поиска длиннее {MAX_QUERY} символов")
    if text:
        filters["text"] = text
    for name in ("since", "until"):
        raw = (args.get(name) or "").strip()
        if raw:
            filters[name] = _parse_time(name, raw, end=name == "until")
    filters["limit"] = _parse_int(args, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    filters["offset"] = _parse_int(args, "offset", 0, 0, 10**9)
    return filters


def caller_key(job: Job) -> str | None:
    """The key as its caller wrote it (for 1C: DocNumber with DocDate), without the contract's namespace."""
    key = job.key
    if key is None:
        return None
    for prefix in _KEY_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def receipt_total(job: Job) -> int | None:
    """The receipt's total in kopecks (None for a payload that is not a receipt)."""
    try:
        return receipt_from_json(job.payload["receipt"]).total
    except (KeyError, TypeError, ValueError):
        return None


def receipt_row(job: Job) -> dict[str, Any]:
    """One receipt for the list: who sent it, how much, when, where it stands."""
    result = job.result or {}
    done = job.state == "done"
    error = job.error or {}
    return {
        "id": job.id,
        "key": caller_key(job),
        "source": job.source,
        "device": job.device,
        "amount": receipt_total(job),
        "accepted_at": job.created_at.isoformat(timespec="seconds"),
        "updated_at": job.updated_at.isoformat(timespec="seconds"),
        "state": job.state,
        "reason": job.reason or str(error.get("message") or ""),
        "error_code": error.get("code"),
        "fiscal_document_number": result.get("fiscal_document_number") if done else None,
        "fiscal_sign": result.get("fiscal_sign") if done else None,
        "cancellable": job.state == "queued",
    }
