"""Helpers every HTTP contract shares: reading a JSON body, turning validation errors into one.

The 1C client posts raw UTF-8 JSON with ``Content-Type: application/x-www-form-urlencoded``, so
bodies are always read as bytes and never handed to Werkzeug's form parser. Numbers with a
fraction become :class:`~decimal.Decimal`, so money never passes through a float.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from flask import current_app
from marshmallow import ValidationError
from marshmallow.error_store import SCHEMA

from kktapp.device import DeviceLimits
from kktapp.domain import DomainError
from kktapp.errors import ValidationFailed

#: Field name used when the problem is the request body as a whole.
BODY = "body"
_BOM = b"\xef\xbb\xbf"
#: Longest value repr put into an error message: a cashier needs a hint, not the whole document.
_MAX_SHOWN = 80


def read_json(request: Any) -> object:
    """Parse the raw request body as JSON whatever the content type says.

    Accepts a UTF-8 BOM (1C can be told to write one). Fractions parse as Decimal; NaN and
    Infinity are refused because no fiscal amount can be one. Raises ValidationFailed("body").
    """
    # parse_form_data=False: with the 1C content type Werkzeug would otherwise eat the stream
    # as an urlencoded form and leave us an empty body.
    raw: bytes = request.get_data(cache=True, parse_form_data=False)
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if not raw.strip():
        raise ValidationFailed(BODY, "тело запроса пустое, ожидается документ JSON")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValidationFailed(
            BODY, f"тело запроса не JSON: текст не в кодировке UTF-8 (байт {exc.start + 1})"
        ) from None
    try:
        return json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(
            BODY, f"тело запроса не JSON: ошибка в строке {exc.lineno}, позиции {exc.colno}"
        ) from None
    except ValueError as exc:
        raise ValidationFailed(BODY, f"тело запроса не JSON: {exc}") from None


def device_limits() -> DeviceLimits:
    """What a document may hold on this service's devices (from the driver's command layouts)."""
    return current_app.extensions["kkt"].limits


def _refuse_constant(name: str) -> object:
    raise ValueError(f"значение {name} недопустимо")


class _Shown(str):
    """A value prepared for an error message: repr() shows it without quotes or Decimal(...)."""

    def __repr__(self) -> str:
        return str(self)


def shown_value(value: object) -> object:
    """Make a value readable in a Russian error message and safe for JSON.

    Decimal becomes its plain digits, containers a shortened JSON-ish text; strings and ints stay
    as they are, so the message shows them the way the caller wrote them.
    """
    if value is None or isinstance(value, (bool, int, str)):
        if isinstance(value, str) and len(value) > _MAX_SHOWN:
            return value[:_MAX_SHOWN] + "…"
        return value
    if isinstance(value, Decimal):
        return _Shown(str(value))
    if isinstance(value, (Mapping, list, tuple)):
        text = json.dumps(value, ensure_ascii=False, default=str)
        return _Shown(text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + "…")
    return _Shown(str(value))


def _first_error(messages: object, path: list[str]) -> tuple[list[str], str]:
    """Depth-first walk to the first leaf message, collecting the key path to it."""
    if isinstance(messages, Mapping):
        for key, sub in messages.items():
            # Schema-level errors (validates_schema without a field name) belong to the object.
            return _first_error(sub, path if key == SCHEMA else [*path, str(key)])
        return path, "недопустимое значение"
    if isinstance(messages, (list, tuple)):
        for item in messages:
            return _first_error(item, path)
        return path, "недопустимое значение"
    return path, str(messages)


def _value_at(data: object, path: Sequence[str]) -> object:
    """The input value at a dotted path, or None when the path does not exist in the input."""
    current = data
    for key in path:
        if isinstance(current, Mapping):
            if key not in current:
                return None
            current = current[key]
        elif isinstance(current, (list, tuple)) and key.isdigit() and int(key) < len(current):
            current = current[int(key)]
        else:
            return None
    return current


def validation_error(
    err: ValidationError | DomainError, rename: Callable[[str], str] | None = None
) -> ValidationFailed:
    """One ValidationFailed naming the first failing field path (``Goods.Position_3.Price``).

    marshmallow reports every error as a nested dict; a cashier and a 1C programmer need the
    first one, with the value that caused it. ``rename`` maps a domain field name (for
    DomainError) or a path to the contract's own naming.
    """
    if isinstance(err, DomainError):
        field = rename(err.field) if rename else err.field
        return ValidationFailed(field, err.message, shown_value(err.value))
    path, message = _first_error(err.messages, [])
    if not path and err.field_name != SCHEMA:
        path = [err.field_name]
    value = _value_at(err.data, path) if path else None
    field = ".".join(path) or BODY
    if rename:
        field = rename(field)
    return ValidationFailed(field, message.rstrip("."), shown_value(value))
