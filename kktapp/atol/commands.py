"""ATOL command layer: one declarative definition per command, shared by driver and emulator.

Each :class:`Command` lists its request fields and reply fields (pyshtrih's declarative
table, pymodbus's one-definition-per-message); the generic code below encodes and decodes
both directions from those lists:

* driver: ``cmd.encode(**params)`` → command bytes, ``cmd.decode_reply(reply)`` → dict
  (raises :class:`~kktapp.errors.DeviceError` for ``55 err ext`` with err ≠ 0);
* emulator: :func:`parse_request` → ``(cmd, params)``, ``cmd.encode_reply(**fields)`` or
  :func:`encode_error`.

Command bytes are what follows the access password in a task (:mod:`.taskbuf`). Layouts
marked [U] are the project's model, explained in :mod:`.model`. The mappings from domain
enums to ATOL codes live here too, once.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..domain import PaymentType, SettlementType, TextLine
from . import codec, model
from .errors import device_error

# --------------------------------------------------------------------------- field kinds


class Kind:
    """How one field is laid out. ``size`` None means "the rest of the message" (last field only)."""

    size: int | None = 1
    default: Any = None

    def encode(self, value: Any) -> bytes:  # pragma: no cover - abstract
        """Value → bytes (exactly ``size`` bytes when the size is fixed)."""
        raise NotImplementedError

    def decode(self, data: bytes) -> Any:  # pragma: no cover - abstract
        """Bytes → value."""
        raise NotImplementedError


class U8(Kind):
    """One unsigned byte."""

    default = 0

    def encode(self, value: int) -> bytes:
        return codec.encode_le(int(value), 1)

    def decode(self, data: bytes) -> int:
        return data[0]


class LE(Kind):
    """Unsigned little-endian integer (A4 xx FN replies)."""

    default = 0

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, value: int) -> bytes:
        return codec.encode_le(value, self.size)

    def decode(self, data: bytes) -> int:
        return codec.decode_le(data)


class BCD(Kind):
    """Big-endian BCD integer (money in kopecks, counters)."""

    default = 0

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, value: int) -> bytes:
        return codec.encode_bcd(value, self.size)

    def decode(self, data: bytes) -> int:
        return codec.decode_bcd(data)


class BcdDigits(Kind):
    """Big-endian BCD read as a digit string of fixed width: serial numbers keep their leading zeros."""

    default = ""

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, value: str) -> bytes:
        if value and not (value.isascii() and value.isdigit()):
            raise codec.CodecError(f"{value!r} is not a string of digits")
        return codec.encode_bcd(int(value or 0), self.size)

    def decode(self, data: bytes) -> str:
        return str(codec.decode_bcd(data)).zfill(2 * len(data))


class Quantity(Kind):
    """Decimal quantity × 1000 as 5-byte BCD."""

    size = codec.QUANTITY_BYTES
    default = Decimal(1)

    def encode(self, value: Decimal) -> bytes:
        return codec.encode_quantity(value)

    def decode(self, data: bytes) -> Decimal:
        return codec.decode_quantity(data)


class Text(Kind):
    """Device-codepage text: fixed width zero-padded, or the rest of the message."""

    default = ""

    def __init__(self, size: int | None = None) -> None:
        self.size = size

    def encode(self, value: str) -> bytes:
        if self.size is None:
            return codec.encode_text(value)
        return codec.encode_text_field(value, self.size)

    def decode(self, data: bytes) -> str:
        return codec.decode_text_field(data) if self.size is not None else codec.decode_text(data)


class Ascii(Kind):
    """Fixed-width ASCII (FN serial number), zero- or space-padded."""

    default = ""

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, value: str) -> bytes:
        raw = value.encode("ascii", errors="replace")
        if len(raw) > self.size:
            raise codec.CodecError(f"{value!r} longer than {self.size} characters")
        return raw.ljust(self.size, b"\x00")

    def decode(self, data: bytes) -> str:
        return data.split(b"\x00", 1)[0].decode("ascii", errors="replace").strip()


class BcdDateTime(Kind):
    """Date/time, one BCD byte per part (see :func:`codec.encode_bcd_datetime`); zeros = None."""

    def __init__(self, parts: str) -> None:
        self.parts = parts
        self.size = len(parts)

    def encode(self, value: dt.datetime | dt.date | None) -> bytes:
        return codec.encode_bcd_datetime(value, self.parts)

    def decode(self, data: bytes) -> dt.datetime | dt.date | None:
        return codec.decode_bcd_datetime(data, self.parts)


class Raw(Kind):
    """Raw bytes: fixed size (zero default) or the rest of the message."""

    def __init__(self, size: int | None = None) -> None:
        self.size = size
        self.default = bytes(size or 0)

    def encode(self, value: bytes) -> bytes:
        value = bytes(value)
        if self.size is not None and len(value) != self.size:
            raise codec.CodecError(f"need {self.size} bytes, got {len(value)}")
        return value

    def decode(self, data: bytes) -> bytes:
        return bytes(data)


class LenBytes(Kind):
    """``len(2 LE) value``: a length-prefixed value, the rest of the message (E8)."""

    size = None
    default = b""

    def encode(self, value: bytes) -> bytes:
        return codec.encode_le(len(value), 2) + bytes(value)

    def decode(self, data: bytes) -> bytes:
        if len(data) < 2 or codec.decode_le(data[:2]) != len(data) - 2:
            raise codec.CodecError("length prefix does not match the value")
        return bytes(data[2:])


_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """A named field; without a default it is required when encoding."""

    name: str
    kind: Kind
    default: Any = _REQUIRED

    @property
    def required(self) -> bool:
        """No default: the caller must give it."""
        return self.default is _REQUIRED


def _fields_encode(fields: tuple[Field, ...], values: dict[str, Any], what: str) -> bytes:
    unknown = set(values) - {f.name for f in fields}
    if unknown:
        raise TypeError(f"{what}: unknown fields {sorted(unknown)}")
    out = []
    for f in fields:
        if f.name in values:
            value = values[f.name]
        elif f.required:
            raise TypeError(f"{what}: field {f.name!r} is required")
        else:
            value = f.default
        try:
            out.append(f.kind.encode(value))
        except (codec.CodecError, TypeError, ValueError) as exc:
            raise codec.CodecError(f"{what}.{f.name}: {exc}") from exc
    return b"".join(out)


def _fields_decode(fields: tuple[Field, ...], data: bytes, what: str, *, strict: bool) -> dict[str, Any]:
    result: dict[str, Any] = {}
    pos = 0
    for i, f in enumerate(fields):
        size = f.kind.size
        if size is None:
            if i != len(fields) - 1:
                raise AssertionError(f"{what}: variable field {f.name} must be last")
            chunk = data[pos:]
        else:
            chunk = data[pos:pos + size]
            if len(chunk) != size:
                raise codec.CodecError(f"{what}: message too short for field {f.name!r}")
        result[f.name] = f.kind.decode(chunk)
        pos += len(chunk)
    if strict and pos != len(data):
        raise codec.CodecError(f"{what}: {len(data) - pos} bytes too many")
    return result


# --------------------------------------------------------------------------- commands

#: The generic successful reply: ``55 err=0 ext=0`` then the reply fields.
OK_HEAD = b"\x55\x00\x00"
ERROR_PREFIX = 0x55


@dataclass(frozen=True)
class Command:
    """One ATOL command: code (+ sub-code), fields both ways, timeout, the mode it needs."""

    code: int
    name: str
    #: Russian name of the step, for error messages ("закрытие чека").
    title: str
    request: tuple[Field, ...] = ()
    reply: tuple[Field, ...] = ()
    #: Second byte for A4 xx FN queries and 91 register reads, None otherwise.
    sub: int | None = None
    #: Bytes a successful reply starts with (``55 00 00`` for most commands).
    reply_head: bytes = OK_HEAD
    #: [U] Mode the device must be in (None: any). See model.Mode.
    mode: int | None = None
    timeout: float = field(default=model.DEFAULT_TIMEOUT)

    @property
    def prefix(self) -> bytes:
        """Command code (and sub-code) as sent."""
        return bytes((self.code,)) if self.sub is None else bytes((self.code, self.sub))

    def encode(self, **params: Any) -> bytes:
        """Command bytes for a task body (without the access password)."""
        return self.prefix + _fields_encode(self.request, params, self.name)

    def decode_request(self, data: bytes) -> dict[str, Any]:
        """Parse command bytes made by :meth:`encode` (the emulator's side)."""
        if not data.startswith(self.prefix):
            raise codec.CodecError(f"{self.name}: request does not start with {self.prefix.hex()}")
        return _fields_decode(self.request, data[len(self.prefix):], self.name, strict=True)

    def encode_reply(self, **fields: Any) -> bytes:
        """A successful reply with these fields (the emulator's side)."""
        return self.reply_head + _fields_encode(self.reply, fields, self.name + " reply")

    def decode_reply(self, data: bytes, *, step: str = "") -> dict[str, Any]:
        """Reply fields as a dict; ``55 err ext`` with err ≠ 0 raises DeviceError."""
        if data.startswith(self.reply_head):
            # Later firmware may append fields: ignore what we do not know.
            return _fields_decode(self.reply, data[len(self.reply_head):], self.name + " reply", strict=False)
        if len(data) >= 2 and data[0] == ERROR_PREFIX and data[1] != 0:
            raise device_error(data[1], data[2] if len(data) > 2 else 0, step=step or self.title, command=self.code)
        raise codec.CodecError(f"{self.name}: unexpected reply {data[:8].hex(' ')}")


def encode_error(code: int, ext: int = 0) -> bytes:
    """An error reply ``55 err ext`` (the emulator's side)."""
    if not 0 < code <= 0xFF:
        raise ValueError(f"bad error code {code}")
    return bytes((ERROR_PREFIX, code, ext))


def reply_error(data: bytes) -> tuple[int, int] | None:
    """``(err, ext)`` when ``data`` is an error reply, else None (for replies of any command)."""
    if len(data) >= 2 and data[0] == ERROR_PREFIX and data[1] != 0:
        return data[1], data[2] if len(data) > 2 else 0
    return None


def _f(name: str, kind: Kind, default: Any = _REQUIRED) -> Field:
    return Field(name, kind, default)


def _opt(name: str, kind: Kind) -> Field:
    return Field(name, kind, kind.default)


_M = model.Mode
_T = model.TIMEOUTS

#: [S] Bytes of item name in E6 (atol4j; 104-byte command). Longer names: model.LONG_NAME_BY_TAG1030.
POSITION_NAME_BYTES = 64

COMMANDS_LIST: tuple[Command, ...] = (
    # ---- status and identity
    Command(0x3F, "status", "запрос состояния", reply_head=b"\x44", reply=(
        _opt("cashier", BCD(1)), _opt("hall", U8()), _f("datetime", BcdDateTime("YMDhms"), None),
        _opt("flags", U8()), _opt("serial", BCD(4)), _opt("model", U8()),
        _opt("fw_major", U8()), _opt("fw_minor", U8()), _opt("mode", U8()),
        _opt("receipt_number", BCD(2)), _opt("shift_number", BCD(2)), _opt("receipt_state", U8()),
        _opt("receipt_sum", BCD(5)), _opt("decimal_point", U8()), _opt("port_type", U8()),
    )),
    # [U] 45 never fails in this model: its reply head 55 cannot be told from an error reply.
    Command(0x45, "short_status", "короткий запрос состояния", reply_head=b"\x55", reply=(
        _opt("mode", U8()), _opt("flags", U8()),
    )),
    Command(0xA5, "device_type", "запрос типа устройства", reply_head=b"\x00", reply=(
        _opt("protocol", U8()), _opt("type", U8()), _opt("model", U8()), _opt("device_mode", LE(2)),
        _opt("fw_major", U8()), _opt("fw_minor", U8()), _opt("fw_patch", U8()), _opt("fw_build", LE(2)),
        _opt("name", Text()),
    )),
    # ---- modes
    Command(0x56, "enter_mode", "вход в режим", request=(
        _f("mode", U8()), _f("password", BCD(4)),
    )),
    Command(0x48, "leave_mode", "выход из режима"),
    # ---- shift
    Command(0x9A, "open_shift", "открытие смены", request=(_opt("flags", U8()),),
            mode=_M.REGISTRATION, timeout=_T[0x9A]),
    Command(0x5A, "close_shift", "закрытие смены (Z-отчёт)", mode=_M.REPORT_Z, timeout=_T[0x5A]),
    Command(0x67, "x_report", "X-отчёт", request=(_f("report_type", U8(), 1),),
            mode=_M.REPORT_X, timeout=_T[0x67]),
    # ---- receipt
    Command(0x92, "open_receipt", "открытие чека", request=(
        _opt("flags", U8()), _f("receipt_type", U8()),
    ), mode=_M.REGISTRATION),
    Command(0xE6, "register_position", "регистрация позиции", request=(
        _opt("flags", U8()), _f("name", Text(POSITION_NAME_BYTES)), _f("price", BCD(6)), _f("quantity", Quantity()),
        _f("discount_type", U8(), 1), _opt("discount_sign", U8()), _opt("discount_sum", BCD(6)),
        _f("tax", U8()), _opt("section", U8()), _opt("reserve", Raw(17)),
    ), mode=_M.REGISTRATION, timeout=_T[0xE6]),
    Command(0x43, "receipt_discount", "скидка на чек", request=(
        _opt("flags", U8()), _opt("area", U8()), _f("discount_type", U8(), 1), _opt("sign", U8()),
        _f("amount", BCD(5)),
    ), mode=_M.REGISTRATION),
    Command(0x99, "payment", "оплата", request=(
        _opt("flags", U8()), _f("payment_type", U8()), _f("amount", BCD(5)),
    ), reply=(_opt("remainder", BCD(5)), _opt("change", BCD(5))), mode=_M.REGISTRATION),
    Command(0x4A, "close_receipt", "закрытие чека", request=(
        _opt("flags", U8()), _f("payment_type", U8(), 1), _opt("amount", BCD(5)),
    ), mode=_M.REGISTRATION, timeout=_T[0x4A]),
    Command(0x59, "cancel_receipt", "отмена чека", mode=_M.REGISTRATION),
    # [U] mode 1 or 3 (model.ATTRIBUTE_MODES): checked by the device.
    Command(0xE8, "write_attribute", "запись реквизита", request=(
        _opt("flags", U8()), _f("tag", LE(2)), _f("value", LenBytes()),
    )),
    # ---- cash
    Command(0x49, "cash_in", "внесение наличных", request=(_opt("flags", U8()), _f("amount", BCD(5))),
            mode=_M.REGISTRATION, timeout=_T[0x49]),
    Command(0x4F, "cash_out", "выплата наличных", request=(_opt("flags", U8()), _f("amount", BCD(5))),
            mode=_M.REGISTRATION, timeout=_T[0x4F]),
    Command(0x4D, "cash_in_drawer", "запрос суммы наличных", reply_head=b"\x4d",
            reply=(_opt("amount", BCD(model.CASH_DRAWER_SUM_BYTES)),)),
    # ---- earnings ([U] meaning and register number in model.py)
    Command(0x58, "last_shift_totals", "запрос сменного итога", reply=(
        _opt("income", BCD(model.TOTALS_BYTES)), _opt("outcome", BCD(model.TOTALS_BYTES)),
    )),
    # ---- printing
    Command(0x4C, "print_string", "печать строки", request=(_opt("flags", U8()), _opt("text", Text()))),
    Command(0x75, "cut", "отрезка чека", request=(_opt("cut_type", U8()),)),
    Command(0x95, "reprint_last", "повтор последнего документа", timeout=_T[0x95]),
    # ---- registers
    Command(0x91, "read_register", "чтение регистра", request=(
        _f("register", U8()), _opt("p1", U8()), _opt("p2", U8()),
    ), reply=(_opt("value", Raw()),), timeout=_T[0x91]),
    Command(0x91, "shift_state", "запрос состояния смены", sub=model.REGISTER_SHIFT_STATE, request=(
        _opt("p1", U8()), _opt("p2", U8()),
    ), reply=(_opt("state", U8()), _f("opened_at", BcdDateTime("YMDhms"), None)), timeout=_T[0x91]),
    # [U] register 22: the full 14-digit serial (model.REGISTER_SERIAL); 3F has only 8 digits.
    Command(0x91, "serial_number", "запрос заводского номера", sub=model.REGISTER_SERIAL, request=(
        _opt("p1", U8()), _opt("p2", U8()),
    ), reply=(_opt("serial", BcdDigits(model.SERIAL_BYTES)),), timeout=_T[0x91]),
    Command(0x91, "non_resettable_totals", "запрос необнуляемой суммы", sub=model.REGISTER_NON_RESETTABLE,
            request=(_opt("p1", U8()), _opt("p2", U8())), reply=(
        _opt("income", BCD(model.TOTALS_BYTES)), _opt("outcome", BCD(model.TOTALS_BYTES)),
    ), timeout=_T[0x91]),
    # ---- fiscal storage (little-endian binary, date-times BCD in this model)
    Command(0xA4, "fn_shift", "запрос параметров смены ФН", sub=0x10, reply=(
        _opt("state", U8()), _opt("shift_number", LE(2)), _opt("receipt_number", LE(2)),
    )),
    Command(0xA4, "ofd_status", "запрос состояния обмена с ОФД", sub=0x20, reply=(
        _opt("status", U8()), _opt("reading", U8()), _opt("unsent", LE(2)),
        _opt("first_unsent_number", LE(4)), _f("first_unsent_at", BcdDateTime("YMDhm"), None),
    )),
    Command(0xA4, "fn_status", "запрос состояния ФН", sub=0x30, reply=(
        _opt("phase", U8()), _opt("document_type", U8()), _opt("document_data", U8()),
        _opt("shift_open", U8()), _opt("warnings", U8()), _f("datetime", BcdDateTime("YMDhm"), None),
        _opt("fn_serial", Ascii(16)), _opt("last_fd_number", LE(4)),
    )),
    Command(0xA4, "fn_serial", "запрос номера ФН", sub=0x31, reply=(_opt("fn_serial", Ascii(16)),)),
    Command(0xA4, "fn_validity", "запрос срока действия ФН", sub=0x32, reply=(
        _f("valid_until", BcdDateTime("YMD"), None), _opt("registrations_left", U8()),
        _opt("registrations_done", U8()),
    )),
    Command(0xA4, "fn_version", "запрос версии ФН", sub=0x33, reply=(_opt("version", Ascii(16)),)),
    Command(0xA4, "fn_document", "запрос документа ФН", sub=model.FN_DOCUMENT_SUBCODE, request=(
        _f("fd_number", LE(4)),
    ), reply=(
        _opt("doc_type", U8()), _opt("fd_number", LE(4)), _opt("fiscal_sign", LE(4)),
        _f("datetime", BcdDateTime("YMDhm"), None), _opt("shift_number", LE(2)),
        _opt("receipt_number", LE(2)), _opt("receipt_type", U8()), _opt("total", LE(5)),
    )),
    # ---- service ([U] modes, see model)
    Command(0x6B, "tech_reset", "технологическое обнуление", mode=_M.SELECT, timeout=_T[0x6B]),
    Command(0x71, "init_tables", "инициализация таблиц", mode=_M.REPORT_Z, timeout=_T[0x71]),
    Command(0x77, "general_clearing", "общее гашение", mode=_M.REPORT_Z, timeout=_T[0x77]),
)

#: Registry by snake_case name.
COMMANDS: dict[str, Command] = {c.name: c for c in COMMANDS_LIST}
#: Registry by (code, sub-code); sub-code None for commands without one.
BY_CODE: dict[tuple[int, int | None], Command] = {(c.code, c.sub): c for c in COMMANDS_LIST}
assert len(COMMANDS) == len(BY_CODE) == len(COMMANDS_LIST), "duplicate command name or code"


def get(name: str) -> Command:
    """Command by name (KeyError for an unknown one)."""
    return COMMANDS[name]


def lookup(data: bytes) -> Command | None:
    """The command that command bytes belong to (sub-coded entries first), None if unknown."""
    if not data:
        return None
    if len(data) >= 2 and (data[0], data[1]) in BY_CODE:
        return BY_CODE[(data[0], data[1])]
    return BY_CODE.get((data[0], None))


def parse_request(data: bytes) -> tuple[Command, dict[str, Any]]:
    """Command bytes (after the password) → (command, params). KeyError for an unknown code,
    :class:`~kktapp.atol.codec.CodecError` for a malformed request."""
    cmd = lookup(data)
    if cmd is None:
        raise KeyError(f"unknown command {data[:2].hex(' ')}")
    return cmd, cmd.decode_request(data)


# --------------------------------------------------------------------------- 3F / 45 flags


class StatusFlags(enum.IntFlag):
    """[S] 3F flags byte (offset 9)."""

    FISCAL = 0x01
    SHIFT_OPEN = 0x02
    DRAWER_OPEN = 0x04
    PAPER_PRESENT = 0x08
    COVER_OPEN = 0x20
    FN_ACTIVE = 0x40
    BATTERY_BAD = 0x80


class ShortStatusFlags(enum.IntFlag):
    """[S] 45 flags byte."""

    NO_PAPER = 0x01
    PRINTER_OFFLINE = 0x02
    MECHANICAL_ERROR = 0x04
    CUTTER_ERROR = 0x08
    PRINTER_ERROR = 0x10
    #: [S] K's table (docs/atol-real-device.md, 45); medium confidence.
    PAPER_NEAR_END = 0x80


#: [C] Model codes (libfptr) → names.
MODEL_NAMES = {57: "АТОЛ 25Ф", 61: "АТОЛ 30Ф", 62: "АТОЛ 55Ф", 63: "АТОЛ 22Ф", 64: "АТОЛ 52Ф", 67: "АТОЛ 11Ф"}


def split_mode(mode_byte: int) -> tuple[int, int]:
    """Mode byte → (mode, sub-mode): mode in the low nibble, sub-mode in the high one."""
    return mode_byte & 0x0F, mode_byte >> 4


# --------------------------------------------------------------------------- domain ↔ ATOL codes

#: Receipt type byte of 92 for each settlement type.
RECEIPT_TYPES: dict[SettlementType, int] = {
    SettlementType.SELL: 1, SettlementType.SELL_RETURN: 2,
    SettlementType.BUY: 4, SettlementType.BUY_RETURN: 5,
    SettlementType.SELL_CORRECTION: 7, SettlementType.SELL_RETURN_CORRECTION: 8,
    SettlementType.BUY_CORRECTION: 9, SettlementType.BUY_RETURN_CORRECTION: 10,
}
SETTLEMENT_BY_RECEIPT_TYPE = {v: k for k, v in RECEIPT_TYPES.items()}
#: Tag 1054 (settlement sign) of each 92 receipt type; corrections carry their sign too.
TAG1054_BY_RECEIPT_TYPE = {1: 1, 2: 2, 4: 3, 5: 4, 7: 1, 8: 2, 9: 3, 10: 4}
CORRECTION_RECEIPT_TYPES = frozenset({7, 8, 9, 10})

#: Payment type byte of 99 / 4A.
PAYMENT_TYPES: dict[PaymentType, int] = {
    PaymentType.CASH: 1, PaymentType.ELECTRONIC: 2, PaymentType.PREPAID: 3,
    PaymentType.CREDIT: 4, PaymentType.OTHER: 5,
}
PAYMENT_TYPE_BY_CODE = {v: k for k, v in PAYMENT_TYPES.items()}


def print_flags(line: TextLine) -> int:
    """[U] The 4C flags byte for a text line's attributes (layout in model.py)."""
    flags = 0
    for attr, bit in (("bold", model.PRINT_BOLD), ("italic", model.PRINT_ITALIC),
                      ("inverse", model.PRINT_INVERSE), ("underline", model.PRINT_UNDERLINE),
                      ("double_width", model.PRINT_DOUBLE_WIDTH), ("double_height", model.PRINT_DOUBLE_HEIGHT)):
        if getattr(line, attr):
            flags |= bit
    return flags | model.PRINT_ALIGN.get(line.align, 0) << model.PRINT_ALIGN_SHIFT


def text_line(text: str, flags: int) -> TextLine:
    """Inverse of :func:`print_flags` (the emulator's side)."""
    align = {v: k for k, v in model.PRINT_ALIGN.items()}.get(flags >> model.PRINT_ALIGN_SHIFT, "left")
    return TextLine(
        text=text, bold=bool(flags & model.PRINT_BOLD), italic=bool(flags & model.PRINT_ITALIC),
        inverse=bool(flags & model.PRINT_INVERSE), underline=bool(flags & model.PRINT_UNDERLINE),
        double_width=bool(flags & model.PRINT_DOUBLE_WIDTH), double_height=bool(flags & model.PRINT_DOUBLE_HEIGHT),
        align=align,
    )


def name_fits_position(name: str) -> bool:
    """True when the whole name fits in E6; else it also goes as tag 1030 (model.LONG_NAME_BY_TAG1030)."""
    return len(codec.encode_text(name)) <= POSITION_NAME_BYTES


def attribute_value(tag: int, value: str | int | dt.date) -> bytes:
    """[U] E8 value bytes for a tag: text in the device codec, one byte, or UnixTime."""
    if tag in model.UNIXTIME_TAGS:
        if not isinstance(value, dt.date):
            raise codec.CodecError(f"tag {tag} needs a date")
        moment = dt.datetime(value.year, value.month, value.day, tzinfo=dt.UTC)
        return codec.encode_le(int(moment.timestamp()), 4)
    if tag in model.BYTE_TAGS or isinstance(value, int):
        return codec.encode_le(int(value), 1)
    return codec.encode_text(str(value))


def decode_attribute_value(tag: int, raw: bytes) -> str | int | dt.date:
    """Inverse of :func:`attribute_value` (the emulator's side); unknown tags stay text."""
    if tag in model.UNIXTIME_TAGS and len(raw) == 4:
        return dt.datetime.fromtimestamp(codec.decode_le(raw), dt.UTC).date()
    if tag in model.BYTE_TAGS and len(raw) == 1:
        return raw[0]
    return codec.decode_text(raw)

