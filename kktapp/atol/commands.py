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

import contextlib
import datetime as dt
import enum
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..device import DeviceLimits
from ..domain import MAX_NAME, PaymentType, SettlementType, TextLine
from . import codec, model, taskbuf
from .errors import device_error

log = logging.getLogger(__name__)

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


#: Each byte value's one-byte string, for the most frequent field kind.
_BYTES = {n: bytes((n,)) for n in range(256)}


class U8(Kind):
    """One unsigned byte."""

    default = 0

    def encode(self, value: int) -> bytes:
        value = int(value)
        if value in _BYTES:
            return _BYTES[value]
        return codec.encode_le(value, 1)  # refuses it, with the integer field's error text

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


class BE(Kind):
    """Unsigned big-endian integer (register 0x37's command and extended code, [S K])."""

    default = 0

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, value: int) -> bytes:
        return int(value).to_bytes(self.size, "big")

    def decode(self, data: bytes) -> int:
        return int.from_bytes(data, "big")


class BCD(Kind):
    """Big-endian BCD integer (money in kopecks, counters)."""

    default = 0

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, value: int) -> bytes:
        return codec.encode_bcd(value, self.size)

    def decode(self, data: bytes) -> int:
        return codec.decode_bcd(data)


class LenientBCD(BCD):
    """BCD read leniently: a byte that is not BCD gives None instead of an error (3F fields the
    sources read differently and the service does not decide on, model.py)."""

    def decode(self, data: bytes) -> int | None:
        try:
            return codec.decode_bcd(data)
        except codec.CodecError:
            log.info("not BCD, read as unknown: %s", data.hex(" "))
            return None


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


class BinDateTime(BcdDateTime):
    """Date/time, one binary byte per part (FN replies, model.py); zeros = None."""

    def encode(self, value: dt.datetime | dt.date | None) -> bytes:
        return codec.encode_bin_datetime(value, self.parts)

    def decode(self, data: bytes) -> dt.datetime | dt.date | None:
        return codec.decode_bin_datetime(data, self.parts)


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


def _fields_encode(fields: tuple[Field, ...], values: dict[str, Any], what: str, names: frozenset[str]) -> bytes:
    """``names``: the fields' names, kept by the command (not rebuilt per call)."""
    if not names.issuperset(values):
        raise TypeError(f"{what}: unknown fields {sorted(set(values) - names)}")
    out = []
    for f in fields:
        value = values.get(f.name, f.default)
        if value is _REQUIRED:
            raise TypeError(f"{what}: field {f.name!r} is required")
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

#: [C A,K,Z] A plain successful reply: ``55 err=0 00`` (Z: third byte "reserved, always 0").
PLAIN_HEAD = b"\x55\x00\x00"
#: [C A,K,Z,U] A data reply of 91, A4 xx and 58: ``55 err=0`` and the data right after it.
DATA_HEAD = b"\x55\x00"
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
    #: Bytes a successful reply starts with: ``55 00 00`` (plain), ``55 00`` (91, A4, 58), …
    reply_head: bytes = PLAIN_HEAD
    #: [U] Mode the device must be in (None: any). See model.Mode.
    mode: int | None = None
    timeout: float = field(default=model.DEFAULT_TIMEOUT)
    #: The host waits for this task's own result (sent with NeedResult). Tasks without it go
    #: with flags 0, as C sends its fire-and-forget tasks (E8, EA, 4C, 56): a failure still
    #: comes back as A7, success is known when a later NeedResult task of the batch ends.
    wants_result: bool = True
    #: Further heads a successful reply may start with, each taken only when the data after it
    #: has exactly the reply's fixed size (99, where the sources differ by one byte: model.py).
    other_heads: tuple[bytes, ...] = ()
    #: The service reads something from the reply. When False (99: remainder and change are
    #: never used), the driver logs a success reply it cannot decode instead of failing on it.
    reply_needed: bool = True

    def __post_init__(self) -> None:
        # Computed once: a receipt encodes some thirty commands.
        prefix = bytes((self.code,)) if self.sub is None else bytes((self.code, self.sub))
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_request_names", frozenset(f.name for f in self.request))
        object.__setattr__(self, "_reply_names", frozenset(f.name for f in self.reply))
        sizes = [f.kind.size for f in self.reply]
        object.__setattr__(self, "_reply_size", None if None in sizes else sum(sizes))

    @property
    def prefix(self) -> bytes:
        """Code and sub-code bytes."""
        return self._prefix

    def encode(self, **params: Any) -> bytes:
        """Command bytes for these parameters (after the access password)."""
        return self._prefix + _fields_encode(self.request, params, self.name, self._request_names)

    def decode_request(self, data: bytes) -> dict[str, Any]:
        """Parse command bytes made by :meth:`encode` (the emulator's side)."""
        if not data.startswith(self.prefix):
            raise codec.CodecError(f"{self.name}: request does not start with {self.prefix.hex()}")
        return _fields_decode(self.request, data[len(self.prefix):], self.name, strict=True)

    def encode_reply(self, **fields: Any) -> bytes:
        """A successful reply with these fields (the emulator's side)."""
        return self.reply_head + _fields_encode(self.reply, fields, self.name + " reply", self._reply_names)

    def decode_reply(self, data: bytes, *, step: str = "") -> dict[str, Any]:
        """Reply fields as a dict; ``55 err …`` with err ≠ 0 raises DeviceError."""
        if self.other_heads and len(data) - len(self.reply_head) != self._reply_size:
            for head in self.other_heads:
                if data.startswith(head) and len(data) - len(head) == self._reply_size:
                    return _fields_decode(self.reply, data[len(head):], self.name + " reply", strict=True)
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

# ---- field widths: one definition, read by the table below and by input validation

#: [C Z,C,K] EB: price, position sum ("стоимость"), tax sum and discount, 7 BCD bytes each.
POSITION_MONEY_BYTES = 7
#: [C Z,C,K] Quantity x 1000, 5 BCD bytes (codec.QUANTITY_BYTES).
QUANTITY_BYTES = codec.QUANTITY_BYTES
QUANTITY_SCALE = codec.QUANTITY_SCALE
#: [C Z,C,K] EB name: up to 128 bytes in the device code page, not padded.
POSITION_NAME_MAX = 128
#: [C Z,C] E6 (FFD 1.0): 64-byte name, 6-byte BCD price and discount.
E6_NAME_BYTES = 64
E6_MONEY_BYTES = 6
#: [C C,K,Z] Payment (99), close (4A), cash in/out (49/4F) and receipt discount (43): 5 BCD bytes.
PAYMENT_SUM_BYTES = 5
#: [C Z,C] Section (department) of a position: one BCD byte in EB (K sends it binary, the same
#: below 10) and E6.
SECTION_MAX = 99
#: [C Z] 92 and 9A flag: test mode; [C K,Z] 92 flag: do not print (A has 0x02; two sources
#: that ran in production agree on 0x04).
FLAG_TEST = 0x01
FLAG_NO_PRINT = 0x04


def _money(name: str) -> Field:
    return _f(name, BCD(POSITION_MONEY_BYTES))


def _register(name: str, title: str, register: int, reply: tuple[Field, ...]) -> Command:
    """A 91 register read: ``91 reg p1 p2`` → ``55 err value`` ([C A,K,Z])."""
    return Command(0x91, name, title, sub=register, request=(_opt("p1", U8()), _opt("p2", U8())),
                   reply=reply, reply_head=DATA_HEAD, timeout=_T[0x91])


def _fn(name: str, title: str, sub: int, reply: tuple[Field, ...], request: tuple[Field, ...] = ()) -> Command:
    """An A4 FN query: ``A4 sub …`` → ``55 err data`` ([C A,K,Z,U])."""
    return Command(0xA4, name, title, sub=sub, request=request, reply=reply, reply_head=DATA_HEAD)


COMMANDS_LIST: tuple[Command, ...] = (
    # ---- status and identity
    # [C A,K,Z,U] 3F offsets; shift_number is the last CLOSED shift; firmware and receipt sum read
    # leniently (model.py).
    Command(0x3F, "status", "запрос состояния", reply_head=b"\x44", reply=(
        _opt("cashier", BCD(1)), _opt("hall", U8()), _f("datetime", BcdDateTime("YMDhms"), None),
        _opt("flags", U8()), _opt("serial", BCD(4)), _opt("model", U8()),
        _opt("fw_major", LenientBCD(1)), _opt("fw_minor", LenientBCD(1)), _opt("mode", U8()),
        _opt("receipt_number", BCD(2)), _opt("shift_number", BCD(2)), _opt("receipt_state", U8()),
        _opt("receipt_sum", LenientBCD(5)), _opt("decimal_point", U8()), _opt("port_type", U8()),
    )),
    # [C Z,K] 45 answers ``55 mode flags``; [U] it never fails (its head is an error reply's).
    Command(0x45, "short_status", "короткий запрос состояния", reply_head=b"\x55", reply=(
        _opt("mode", U8()), _opt("flags", U8()),
    )),
    # [C A,Z] first byte the error code; [S Z] version major minor (BCD) build(3 BCD).
    Command(0xA5, "device_type", "запрос типа устройства", reply_head=b"\x00", reply=(
        _opt("protocol", U8()), _opt("type", U8()), _opt("model", U8()), _opt("device_mode", LE(2)),
        _opt("fw_major", BCD(1)), _opt("fw_minor", BCD(1)), _opt("fw_build", BCD(3)),
        _opt("name", Text()),
    )),
    # [S K] "9D 91": internal firmware number in the reply's last two bytes, BCD (model.py).
    Command(0x9D, "firmware_build", "запрос номера прошивки", sub=0x91, reply_head=DATA_HEAD,
            reply=(_opt("value", Raw()),)),
    # ---- modes
    Command(0x56, "enter_mode", "вход в режим", request=(
        _f("mode", U8()), _f("password", BCD(4)),
    ), wants_result=False),
    # [C Z] 48 leave the mode (one level up)
    Command(0x48, "leave_mode", "выход из режима", wants_result=False),
    # ---- shift
    # [C C,Z] 9A flags; [U] the optional text is not sent.
    Command(0x9A, "open_shift", "открытие смены", request=(_opt("flags", U8()),),
            mode=_M.REGISTRATION, timeout=_T[0x9A]),
    # [C C,Z] 5A, then the report's progress modes (model.REPORT_PROGRESS_MODES)
    Command(0x5A, "close_shift", "закрытие смены (Z-отчёт)", mode=_M.REPORT_Z, timeout=_T[0x5A]),
    # [C A,C] 67 type: 1 X report, 9 settlement-state report (model.REPORT_SETTLEMENT_STATE)
    Command(0x67, "x_report", "X-отчёт", request=(_f("report_type", U8(), model.REPORT_X_DAILY),),
            mode=_M.REPORT_X, timeout=_T[0x67]),
    # ---- receipt
    # [C A,K,Z] 92 flags type; flags 0x01 test, [C K,Z] 0x04 do not print.
    Command(0x92, "open_receipt", "открытие чека", request=(
        _opt("flags", U8()), _f("receipt_type", U8()),
    ), mode=_M.REGISTRATION, timeout=_T[0x92]),
    # [C Z,C,K] EA 00 01 00: begin a position (FFD 1.05+).
    Command(0xEA, "begin_position", "начало позиции", request=(
        _opt("flags", U8()), _f("param", U8(), 1), _opt("reserved", U8()),
    ), mode=_M.REGISTRATION, wants_result=False),
    # [C Z,C,K] EB: the position (FFD 1.05+), layout of atol-real-device.md §5.
    Command(0xEB, "end_position", "регистрация позиции", request=(
        _f("flags", U8(), model.POSITION_NO_CASH_CHECK), _money("price"), _f("quantity", Quantity()), _money("sum"),
        _f("tax", U8()), _f("tax_sum", BCD(POSITION_MONEY_BYTES), 0), _f("section", BCD(1), 0),
        _f("payment_object", BCD(1), 1), _f("payment_method", BCD(1), 4),
        _opt("discount_sign", U8()), _f("discount", BCD(POSITION_MONEY_BYTES), 0),
        _opt("reserved", Raw(2)), _f("name", Text()),
    ), mode=_M.REGISTRATION, timeout=_T[0xEB], wants_result=False),
    # [C Z,C] E6: the FFD 1.0 position; section one BCD byte (Z's CheckAddRequest Ubcd1, C's
    # RegisterPositionCommand through its BCD encoder).
    Command(0xE6, "register_position", "регистрация позиции (ФФД 1.0)", request=(
        _opt("flags", U8()), _f("name", Text(E6_NAME_BYTES)), _f("price", BCD(E6_MONEY_BYTES)),
        _f("quantity", Quantity()), _f("discount_type", U8(), 1), _opt("discount_sign", U8()),
        _opt("discount_sum", BCD(E6_MONEY_BYTES)), _f("tax", U8()), _f("section", BCD(1), 0), _opt("reserve", Raw(17)),
    ), mode=_M.REGISTRATION, timeout=_T[0xE6], wants_result=False),
    # [S C] 43 flags area type sign value(5 BCD)
    Command(0x43, "receipt_discount", "скидка на чек", request=(
        _opt("flags", U8()), _opt("area", U8()), _f("discount_type", U8(), 1), _opt("sign", U8()),
        _f("amount", BCD(PAYMENT_SUM_BYTES)),
    ), mode=_M.REGISTRATION),
    # [C C,K] 99 flags type sum(5); [C C,A] reply 55 err remainder(5) change(5), also taken with
    # the doc's third head byte (model.py, "99 reply"); its data is not needed.
    Command(0x99, "payment", "оплата", request=(
        _opt("flags", U8()), _f("payment_type", U8()), _f("amount", BCD(PAYMENT_SUM_BYTES)),
    ), reply=(_opt("remainder", BCD(5)), _opt("change", BCD(5))), reply_head=DATA_HEAD,
            other_heads=(PLAIN_HEAD,), reply_needed=False, mode=_M.REGISTRATION),
    # [C C,K,Z] 4A flags payType sum(5 BCD)
    Command(0x4A, "close_receipt", "закрытие чека", request=(
        _opt("flags", U8()), _f("payment_type", U8(), 1), _opt("amount", BCD(PAYMENT_SUM_BYTES)),
    ), mode=_M.REGISTRATION, timeout=_T[0x4A]),
    # [C Z,K,C] 59
    Command(0x59, "cancel_receipt", "отмена чека", mode=_M.REGISTRATION),
    # [C C,K] E8 flags blockCount blockNumber tag(2 LE) len(2 LE) value; mode 1 or 3 (model.py).
    Command(0xE8, "write_attribute", "запись реквизита", request=(
        _f("flags", U8(), model.ATTRIBUTE_PRINT), _f("blocks", U8(), model.ATTRIBUTE_ONE_BLOCK),
        _opt("block", U8()), _f("tag", LE(2)), _f("value", LenBytes()),
    ), wants_result=False),
    # ---- cash [C C,K] flags sum(5 BCD)
    Command(0x49, "cash_in", "внесение наличных", request=(
        _opt("flags", U8()), _f("amount", BCD(PAYMENT_SUM_BYTES))), mode=_M.REGISTRATION, timeout=_T[0x49]),
    Command(0x4F, "cash_out", "выплата наличных", request=(
        _opt("flags", U8()), _f("amount", BCD(PAYMENT_SUM_BYTES))), mode=_M.REGISTRATION, timeout=_T[0x4F]),
    # [U] 4D: model.CASH_DRAWER_SUM_BYTES
    Command(0x4D, "cash_in_drawer", "запрос суммы наличных", reply_head=b"\x4d",
            reply=(_opt("amount", BCD(model.CASH_DRAWER_SUM_BYTES)),)),
    # ---- earnings [S A] 58: 55 err income(7) outcome(7)
    Command(0x58, "last_shift_totals", "запрос сменного итога", reply_head=DATA_HEAD, reply=(
        _opt("income", BCD(model.TOTALS_BYTES)), _opt("outcome", BCD(model.TOTALS_BYTES)),
    )),
    # ---- printing
    # [C A,K,C] 4C text: no flags byte.
    Command(0x4C, "print_string", "печать строки", request=(_opt("text", Text()),), wants_result=False),
    # [S C] 87 print field with C's values (model.py).
    Command(0x87, "print_field", "печать поля", request=(
        _opt("flags", U8()), _f("printer", U8(), model.PRINT_FIELD_PRINTER), _opt("font", U8()),
        _f("multipliers", U8(), model.PRINT_NORMAL), _opt("linespacing", U8()), _opt("brightness", U8()),
        _f("mode_cl", U8(), model.PRINT_MODE_ON), _f("mode_kl", U8(), model.PRINT_MODE_ON), _opt("format", U8()),
        _opt("reserved", Raw(2)),
        _opt("text", Text()),
    ), wants_result=False),
    # [U] 75 cut type (A names the command; the type byte's values are not found)
    Command(0x75, "cut", "отрезка чека", request=(_opt("cut_type", U8()),)),
    # [U] 80 opens the cash drawer (atol-protocol.md only; 85 is the impulse variant); no parameters.
    Command(0x80, "open_drawer", "открытие денежного ящика"),
    # [C A,K] 95 prints the last document again (A; 0xAA when none); K uses it for deferred Z reports
    Command(0x95, "reprint_last", "повтор последнего документа", timeout=_T[0x95]),
    # ---- registers [C A,K,Z] 91 reg p1 p2 → 55 err value
    Command(0x91, "read_register", "чтение регистра", request=(
        _f("register", U8()), _opt("p1", U8()), _opt("p2", U8()),
    ), reply=(_opt("value", Raw()),), reply_head=DATA_HEAD, timeout=_T[0x91]),
    _register("shift_state", "запрос состояния смены", model.REGISTER_SHIFT_STATE, (
        _opt("state", U8()), _f("opened_at", BcdDateTime("DMYhms"), None))),
    _register("serial_number", "запрос заводского номера", model.REGISTER_SERIAL, (
        _opt("serial", BcdDigits(model.SERIAL_BYTES)),)),
    _register("non_resettable_total", "запрос необнуляемой суммы", model.REGISTER_NON_RESETTABLE, (
        _opt("total", BCD(model.TOTALS_BYTES)),)),
    _register("last_sale", "запрос последнего чека", model.REGISTER_LAST_SALE, (
        _opt("fd_number", BCD(5)), _opt("receipt_type", U8()), _opt("total", BCD(7)),
        _f("datetime", BcdDateTime("DMYhm"), None), _opt("fiscal_sign", BCD(5)), _opt("reserved", Raw(3)))),
    _register("cash_register", "запрос суммы в кассе", model.REGISTER_CASH, (
        _opt("amount", BCD(model.CASH_DRAWER_SUM_BYTES)),)),
    _register("last_fd", "запрос номера последнего ФД", model.REGISTER_LAST_FD, (_opt("fd_number", BCD(5)),)),
    _register("shift_data", "запрос текущей смены", model.REGISTER_SHIFT_DATA, (
        _opt("receipt_number", BCD(3)), _opt("shift_number", BCD(3)))),
    _register("ffd_versions", "запрос версий ФФД", model.REGISTER_FFD, (
        _opt("kkt_ffd", U8()), _opt("fn_ffd", U8()), _opt("reserved", Raw(4)))),
    _register("extended_error", "запрос расширенного кода ошибки", model.REGISTER_EXT_ERROR, (
        _opt("command", BE(2)), _opt("ext_code", BE(2)), _opt("reserved", Raw(4)))),
    # ---- fiscal storage [C A,K,Z,U] A4 xx → 55 err data; binary LE, date-times binary (model.py)
    _fn("fn_shift", "запрос параметров смены ФН", 0x10, (
        _opt("state", U8()), _opt("shift_number", LE(2)), _opt("receipt_number", LE(2)))),
    _fn("ofd_status", "запрос состояния обмена с ОФД", 0x20, (
        _opt("status", U8()), _opt("reading", U8()), _opt("unsent", LE(2)),
        _opt("first_unsent_number", LE(4)), _f("first_unsent_at", BinDateTime("YMDhm"), None))),
    _fn("fn_status", "запрос состояния ФН", 0x30, (
        _opt("phase", U8()), _opt("document_type", U8()), _opt("document_data", U8()),
        _opt("shift_open", U8()), _opt("warnings", U8()), _f("datetime", BinDateTime("YMDhm"), None),
        _opt("fn_serial", Ascii(16)), _opt("last_fd_number", LE(4)))),
    _fn("fn_serial", "запрос номера ФН", 0x31, (_opt("fn_serial", Ascii(16)),)),
    _fn("fn_validity", "запрос срока действия ФН", 0x32, (
        _f("valid_until", BinDateTime("YMD"), None), _opt("registrations_left", U8()),
        _opt("registrations_done", U8()))),
    _fn("fn_version", "запрос версии ФН", 0x33, (_opt("version", Ascii(16)), _opt("fn_type", U8()))),
    # [S K] A4 43 registration data: INN at bytes 7..18, RNM 19..38, tax systems 39, modes 40.
    _fn("registration", "запрос итогов регистрации", 0x43, (
        _f("datetime", BinDateTime("YMDhm"), None), _opt("inn", Ascii(12)), _opt("rnm", Ascii(20)),
        _opt("tax_systems", U8()), _opt("modes", U8()))),
    # [C Z,K] A4 45 fd(4 LE) → docType(2 LE) size(2 LE); A4 46 → the next chunk of its TLVs.
    _fn("document_open", "запрос документа ФН", 0x45, (
        _opt("doc_type", LE(2)), _opt("size", LE(2))), request=(_f("fd_number", LE(4)),)),
    _fn("document_read", "чтение документа ФН", 0x46, (_opt("data", Raw()),)),
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


def _bcd_max(width: int) -> int:
    return 10 ** (2 * width) - 1


#: What one document may hold on this device, derived from the layouts above: the web contracts
#: refuse anything bigger before it is journalled (a value that fails to encode mid-receipt
#: would otherwise stop the register). Validation runs before the device's FFD path is known,
#: so each limit is the narrower of the EB (FFD 1.05+) and E6 (FFD 1.0) layouts: price and
#: position sum 6 BCD bytes (E6), section 99 (one BCD byte in EB). Names longer than E6's field
#: go whole as tag 1030 there, so both paths take MAX_NAME bytes. A printed line is bounded by
#: one 87 task in a packet (Add header 3 bytes, password, 87 code and its 11 parameter bytes);
#: positions by the FN's document size (model.MAX_POSITIONS).
LIMITS = DeviceLimits(
    max_price=_bcd_max(min(POSITION_MONEY_BYTES, E6_MONEY_BYTES)),
    max_quantity=Decimal(_bcd_max(QUANTITY_BYTES)) / QUANTITY_SCALE,
    max_position_sum=_bcd_max(min(POSITION_MONEY_BYTES, E6_MONEY_BYTES)),
    max_payment=_bcd_max(PAYMENT_SUM_BYTES),
    max_cash=_bcd_max(PAYMENT_SUM_BYTES),
    name_bytes=min(POSITION_NAME_MAX, MAX_NAME if model.LONG_NAME_BY_TAG1030 else E6_NAME_BYTES),
    text_line_bytes=taskbuf.MAX_TASK - taskbuf.PASSWORD_BYTES - 12,
    max_positions=model.MAX_POSITIONS,
    max_department=SECTION_MAX,
    encode=codec.encode_text,
)


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


def firmware_build(value: bytes) -> int:
    """The internal firmware number from a ``9D 91`` reply's data: its last two bytes, BCD ([S K])."""
    return codec.decode_bcd(value[-2:]) if len(value) >= 2 else 0


def describe(task: bytes) -> str:
    """Name of the command in a task body (password + command bytes), for wire traces."""
    cmd = lookup(task[2:]) if len(task) > 2 else None
    if cmd is None:
        return f"команда {task[2:3].hex().upper() or '?'}"
    return f"{cmd.name} ({cmd.title})"


def parse_request(data: bytes) -> tuple[Command, dict[str, Any]]:
    """Command bytes (after the password) → (command, params). KeyError for an unknown code,
    :class:`~kktapp.atol.codec.CodecError` for a malformed request."""
    cmd = lookup(data)
    if cmd is None:
        raise KeyError(f"unknown command {data[:2].hex(' ')}")
    return cmd, cmd.decode_request(data)


# --------------------------------------------------------------------------- 3F / 45 flags


class StatusFlags(enum.IntFlag):
    """[C A,Z,K] 3F flags byte (offset 9). [U] bit 7: Z "battery installed", A "battery OK" when clear."""

    FISCAL = 0x01
    SHIFT_OPEN = 0x02
    DRAWER_OPEN = 0x04
    PAPER_PRESENT = 0x08
    COVER_OPEN = 0x20
    FN_ACTIVE = 0x40
    BATTERY_BAD = 0x80


class ShortStatusFlags(enum.IntFlag):
    """[S K] 45 flags byte."""

    NO_PAPER = 0x01
    PRINTER_OFFLINE = 0x02
    MECHANICAL_ERROR = 0x04
    CUTTER_ERROR = 0x08
    HEAD_OVERHEAT = 0x10
    PRINTER_ERROR = 0x40
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


def print_field_params(line: TextLine) -> dict[str, Any]:
    """87 parameters for a text line, as C sends them (model.py: multiplier 1 for double height,
    double width printed normal [U], alignment with spaces on a 48-character line)."""
    columns = model.PRINT_LINE_WIDTH
    text = line.text
    if line.align == "center":
        text = text.center(columns).rstrip()
    elif line.align == "right":
        text = text.rjust(columns)
    return {"multipliers": model.PRINT_DOUBLE_HEIGHT if line.double_height else model.PRINT_NORMAL, "text": text}


def text_line(params: dict[str, Any]) -> TextLine:
    """Inverse of :func:`print_field_params` as far as the wire keeps it (the emulator's side)."""
    mult = params.get("multipliers", model.PRINT_NORMAL)
    return TextLine(text=params.get("text", "").strip(), double_height=mult == model.PRINT_DOUBLE_HEIGHT)


def name_fits_position(name: str) -> bool:
    """True when the whole name fits in E6 (FFD 1.0); else it also goes as tag 1030."""
    return len(codec.encode_text(name)) <= E6_NAME_BYTES


def position_name(name: str) -> str:
    """The name as EB carries it: at most 128 bytes in the device code page (cut, not padded)."""
    raw = codec.encode_text(name)
    return name if len(raw) <= POSITION_NAME_MAX else codec.decode_text(raw[:POSITION_NAME_MAX])


def tlv(tag: int, value: bytes) -> bytes:
    """One FFD TLV record: ``tag(2 LE) len(2 LE) value`` (an STLV's parts, A4 46's data).

    [C] atol-real-device.md §9 (E8's `tag(2 LE) len(2 LE) value` in two production drivers) and
    §8 (A4 45 + A4 46 return the document as TLV); 1174's STLV of 1178/1179 in model.py.
    """
    return codec.encode_le(tag, 2) + codec.encode_le(len(value), 2) + bytes(value)


def tlv_records(data: bytes, *, whole: bool = False) -> Iterator[tuple[int, bytes]]:
    """The (tag, value) of each record :func:`tlv` writes, in order (Shtrih-M's FN TLVs too).

    ``whole``: the records must fill ``data`` exactly, else CodecError; otherwise a record cut
    off at the end (a document read in parts, A4 46) is dropped with what follows it.
    """
    pos, end = 0, len(data)
    while pos < end:
        if pos + 4 > end:
            if whole:
                raise codec.CodecError(f"{end - pos} bytes after the last TLV")
            return
        tag = int.from_bytes(data[pos:pos + 2], "little")
        size = int.from_bytes(data[pos + 2:pos + 4], "little")
        if pos + 4 + size > end:
            if whole:
                raise codec.CodecError(f"TLV {tag} does not fit")
            return
        yield tag, bytes(data[pos + 4:pos + 4 + size])
        pos += 4 + size


def parse_tlv(data: bytes, *, strict: bool = False) -> dict[int, bytes]:
    """TLV records → {tag: value}. ``strict``: every record must fit, fill ``data`` exactly and
    come once (an STLV written to the device); else a cut-off tail is dropped (A4 46 document
    data) and a repeated tag keeps its last value."""
    out: dict[int, bytes] = {}
    for tag, value in tlv_records(data, whole=strict):
        if strict and tag in out:
            raise codec.CodecError(f"TLV {tag} repeats")
        out[tag] = value
    return out


def correction_basis(date: dt.date, order_number: str = "") -> bytes:
    """Tag 1174's value: the STLV of 1178 and, when given, 1179 (model.py, correction receipts)."""
    value = tlv(model.TAG_CORRECTION_DATE, attribute_value(model.TAG_CORRECTION_DATE, date))
    if order_number:
        value += tlv(model.TAG_CORRECTION_ORDER, attribute_value(model.TAG_CORRECTION_ORDER, order_number))
    return value


def decode_correction_basis(raw: bytes) -> dict[str, str | int | dt.date]:
    """Inverse of :func:`correction_basis` (the emulator's side): {"1178": date, "1179": text}.
    CodecError unless it is well-formed STLV of 1174's tags with a 4-byte 1178 in it."""
    parts = parse_tlv(raw, strict=True)
    if not set(parts) <= model.CORRECTION_BASIS_TAGS or len(parts.get(model.TAG_CORRECTION_DATE, b"")) != 4:
        raise codec.CodecError(f"tag {model.TAG_CORRECTION_BASIS} needs 1178 (4 bytes) and only tags "
                               f"{sorted(model.CORRECTION_BASIS_TAGS)}")
    return {str(tag): decode_attribute_value(tag, value) for tag, value in parts.items()}


def attribute_value(tag: int, value: str | int | dt.date | bytes) -> bytes:
    """[U] E8 value bytes for a tag: text in the device codec, one byte, or UnixTime; bytes (an
    STLV such as :func:`correction_basis`) go as they are."""
    if isinstance(value, bytes):
        return value
    if tag in model.UNIXTIME_TAGS:
        if not isinstance(value, dt.date):
            raise codec.CodecError(f"tag {tag} needs a date")
        moment = dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
        return codec.encode_le(int(moment.timestamp()), 4)
    if tag in model.BYTE_TAGS or isinstance(value, int):
        return codec.encode_le(int(value), 1)
    return codec.encode_text(str(value))


def decode_attribute_value(tag: int, raw: bytes) -> str | int | dt.date | dict[str, str | int | dt.date]:
    """Inverse of :func:`attribute_value` (the emulator's side, wire traces); unknown tags and
    values that do not read as their tag's type stay text."""
    if tag == model.TAG_CORRECTION_BASIS:
        with contextlib.suppress(codec.CodecError):
            return decode_correction_basis(raw)
    if tag in model.UNIXTIME_TAGS and len(raw) == 4:
        return dt.datetime.fromtimestamp(codec.decode_le(raw), dt.timezone.utc).date()
    if tag in model.BYTE_TAGS and len(raw) == 1:
        return raw[0]
    return codec.decode_text(raw)

