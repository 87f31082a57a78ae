"""Helpers every HTTP contract shares: reading a JSON body, turning validation errors into one.

The 1C client posts raw UTF-8 JSON with ``Content-Type: application/x-www-form-urlencoded``, so
bodies are always read as bytes and never handed to Werkzeug's form parser. Numbers with a
fraction become :class:`~decimal.Decimal`, so money never passes through a float.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import Any

from flask import Flask, Response, current_app, request
from marshmallow import ValidationError
from marshmallow.error_store import SCHEMA
from werkzeug.exceptions import HTTPException

from kktapp.device import DeviceLimits
from kktapp.domain import DomainError
from kktapp.errors import ValidationFailed

#: Field name used when the problem is the request body as a whole.
BODY = "body"
_BOM = b"\xef\xbb\xbf"
#: Longest value repr put into an error message: a cashier needs a hint, not the whole document.
_MAX_SHOWN = 80
#: Deepest nesting of a request body: every contract's documents are at most five levels deep;
#: a thousand levels would exhaust Python's recursion in the parser, schemas or error messages.
MAX_JSON_DEPTH = 20
#: Largest JSON number (digits, and exponent either way): far above any fiscal value, far below
#: what makes Decimal arithmetic overflow or int() build a billion-digit integer.
MAX_JSON_DIGITS = 40
_INT_LIMIT = 10**MAX_JSON_DIGITS


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
    return parse_json(text, BODY, "тело запроса не JSON")


def parse_json(text: str, field: str, what: str) -> object:
    """JSON text → value (fractions as Decimal) with the limits of :func:`check_tree`.

    ``what`` starts the message when the text is not JSON ("тело запроса не JSON").
    """
    try:
        value = json.loads(text, parse_float=Decimal, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ValidationFailed(field, f"{what}: ошибка в строке {exc.lineno}, позиции {exc.colno}") from None
    except RecursionError:
        raise ValidationFailed(field, f"{what}: вложенность глубже {MAX_JSON_DEPTH} уровней") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):
            # Python refuses integer literals over 4,300 digits while parsing.
            raise ValidationFailed(field, f"{what}: число длиннее {MAX_JSON_DIGITS} цифр") from None
        raise ValidationFailed(field, f"{what}: {str(exc)[:_MAX_SHOWN]}") from None
    check_tree(value, field)
    return value


def check_tree(value: object, field: str = BODY) -> None:
    """Refuse what no contract needs and what would break the code after the parser.

    Nesting deeper than MAX_JSON_DEPTH, numbers beyond MAX_JSON_DIGITS, and lone surrogates
    (``"\\ud800"`` is valid JSON but not text: any answer echoing it could not be encoded).
    Iterative, so a deep document cannot exhaust the stack here either.
    """
    # The dotted path of an item is built only when it is refused: paths are tuples shared
    # with the parent, and ".".join runs once per error instead of once per item.
    stack: list[tuple[object, tuple[str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise ValidationFailed(_where(path, field), f"вложенность глубже {MAX_JSON_DEPTH} уровней")
        if isinstance(item, str):
            _check_text(item, path, field)
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if abs(item) >= _INT_LIMIT:
                raise ValidationFailed(_where(path, field), "число вне допустимого диапазона")
        elif isinstance(item, Decimal):
            if len(item.as_tuple().digits) > MAX_JSON_DIGITS or abs(item.adjusted()) > MAX_JSON_DIGITS:
                raise ValidationFailed(_where(path, field), "число вне допустимого диапазона")
        elif isinstance(item, dict):
            for key, sub in item.items():
                _check_text(key, path, field)
                stack.append((sub, (*path, key)))
        elif isinstance(item, list):
            stack.extend((sub, (*path, str(i))) for i, sub in enumerate(item))


def _where(path: tuple[str, ...], field: str) -> str:
    return ".".join(path) or field


def _check_text(text: str, path: tuple[str, ...], field: str) -> None:
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        raise ValidationFailed(_where(path, field), f"недопустимый символ U+{code:04X} (одиночный суррогат)") from None


def http_headers(response: Response, exc: HTTPException) -> Response:
    """Copy the headers of Werkzeug's error that a client acts on (Allow, Retry-After)."""
    for name, value in exc.get_headers():
        if name in ("Allow", "Retry-After"):
            response.headers[name] = value
    return response


def route_errors_by_prefix(app: Flask, handlers: Sequence[tuple[str, Callable[[HTTPException], Response]]]) -> None:
    """404 and 405 found while routing (no view, so no blueprint's handler) answered in the shape
    of the contract whose prefix the path has: 1C and scripts expect JSON, never an HTML page.
    The first matching prefix wins; other paths keep Werkzeug's answer."""

    def handle(exc: HTTPException) -> Response | HTTPException:
        path = request.path
        for prefix, handler in handlers:
            if path.startswith(prefix) or path == prefix.rstrip("/"):
                return handler(exc)
        return exc

    for status in (404, 405):
        app.register_error_handler(status, handle)


def log_unexpected(logger: logging.Logger, exc: BaseException) -> None:
    """One line per unexpected error (a flood of bad requests must not flood the log with
    tracebacks); the traceback only at DEBUG."""
    text = " ".join(repr(exc)[:200].split())
    logger.error("внутренняя ошибка при обработке %s %s: %s", request.method, request.path[:200], text)
    logger.debug("трассировка", exc_info=exc)


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


def log_refusal(contract: str, request: Any, exc: ValidationFailed) -> None:
    """One WARNING line for a request refused for bad input: which field and why (no device was touched)."""
    logging.getLogger("kktapp.web").warning(
        "%s: запрос %s %s отклонён: поле=%s причина: %s", contract, request.method, request.path, exc.field, exc.message
    )
