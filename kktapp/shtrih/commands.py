"""Shtrih-M commands: one declarative definition each, shared by the driver and the emulator.

A command payload is ``code (1 byte, or FF nn) | password (4 LE, most commands) | data``; an
answer payload is ``code echo | error byte | data`` (shtrih-protocol.md §1.1) [C]. Each
:class:`Command` lists its request and answer fields with the source of the layout; the
generic code here encodes and decodes both directions:

* driver: ``cmd.encode(password, **params)``, ``cmd.decode_reply(payload)`` (DeviceError for a
  non-zero error byte);
* emulator: :func:`parse_request` → ``(cmd, password, params)``, ``cmd.encode_reply(**fields)``,
  ``cmd.encode_error(code)``.

Answers may be longer than the fields we know (later firmware) and a trailing run of fields
with defaults may be missing (open point 5 and 9): decoding tolerates both.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..atol.codec import CodecError, encode_plain
from ..atol.commands import _REQUIRED, LE, U8, Ascii, Field, Kind, Raw, _fields_encode, tlv_records
from ..atol.commands import tlv as tlv_record
from ..device import DeviceLimits
from ..domain import SETTLEMENT_REPORT_TITLE, TextLine
from . import model
from .errors import ErrorCode, device_error

__all__ = ["COMMANDS", "Command", "CodecError", "lookup", "parse_request", "get"]


def _encode_fields(fields: tuple[Field, ...], values: dict[str, Any], what: str) -> bytes:
    """ATOL's field encoder; it takes the names of the fields, which an ATOL command keeps."""
    return _fields_encode(fields, values, what, frozenset(f.name for f in fields))


# --------------------------------------------------------------------------- field kinds


class Money(LE):
    """[C] 5-byte little-endian kopecks (FF..FF is the "device computes" marker of FF46)."""

    def __init__(self) -> None:
        super().__init__(5)


class Signed(Kind):
    """Signed little-endian integer (the 0x85 discount)."""

    default = 0

    def __init__(self, size: int) -> None:
        self.size = size

    def encode(self, value: int) -> bytes:
        try:
            return int(value).to_bytes(self.size, "little", signed=True)
        except OverflowError:
            raise CodecError(f"{value} does not fit in {self.size} signed bytes") from None

    def decode(self, data: bytes) -> int:
        return int.from_bytes(data, "little", signed=True)


class Quantity(Kind):
    """Quantity as a little-endian integer of ``scale`` units: 0x80 ×1000 in 5 bytes, FF46
    ×10^6 in 6 bytes [C: opos Sale/FSSale2, javapos fsPrintRecItem2, e-kiosk]."""

    default = Decimal(1)

    def __init__(self, size: int, scale: int) -> None:
        self.size = size
        self.scale = scale

    def encode(self, value: Decimal) -> bytes:
        scaled = Decimal(value) * self.scale
        if scaled != scaled.to_integral_value() or scaled < 0:
            raise CodecError(f"quantity {value} is not a multiple of 1/{self.scale}")
        try:
            return int(scaled).to_bytes(self.size, "little")
        except OverflowError:
            raise CodecError(f"quantity {value} too large") from None

    def decode(self, data: bytes) -> Decimal:
        return Decimal(int.from_bytes(data, "little")) / self.scale


class Text(Kind):
    """cp1251 text, the rest of the payload: NUL-padded to ``min_size`` (classic commands pad to
    40 [C]), at most ``max_size`` bytes; trailing NULs are stripped when decoding."""

    default = ""
    size = None

    def __init__(self, min_size: int = 0, max_size: int = model.MAX_TLV_BYTES) -> None:
        self.min_size = min_size
        self.max_size = max_size

    def encode(self, value: str) -> bytes:
        raw = encode_text(value)
        if len(raw) > self.max_size:
            raise CodecError(f"text longer than {self.max_size} bytes")
        return raw.ljust(self.min_size, b"\x00")

    def decode(self, data: bytes) -> str:
        return data.rstrip(b"\x00").decode(model.ENCODING, errors="replace")


class Date(Kind):
    """Binary date/time, one byte per part [C: opos TPrinterDate/BinToPrinterDateTime2]:
    classic ``DMY`` and ``hms``, FN ``YMD`` and ``YMDhm``. All zeros decode as None."""

    def __init__(self, parts: str) -> None:
        self.parts = parts
        self.size = len(parts)

    def encode(self, value: dt.datetime | dt.date | dt.time | None) -> bytes:
        if value is None:
            return bytes(self.size)
        get = {"Y": lambda v: v.year % 100, "M": lambda v: v.month, "D": lambda v: v.day,
               "h": lambda v: v.hour, "m": lambda v: v.minute, "s": lambda v: v.second}
        return bytes(get[p](value) for p in self.parts)

    def decode(self, data: bytes) -> Any:
        if not any(data):
            return None
        v = dict(zip(self.parts, data, strict=True))
        try:
            if "Y" not in v:
                return dt.time(v.get("h", 0), v.get("m", 0), v.get("s", 0))
            date = dt.date(2000 + v["Y"], v["M"], v["D"])
            if "h" not in v:
                return date
            return dt.datetime(date.year, date.month, date.day, v["h"], v.get("m", 0), v.get("s", 0))
        except (ValueError, KeyError) as exc:
            raise CodecError(f"bad date {data.hex(' ')}: {exc}") from None


def encode_text(text: str) -> bytes:
    """Text in the device codec (made plain as for ATOL); characters cp1251 still lacks become '?'."""
    return encode_plain(text, model.ENCODING)


def _f(name: str, kind: Kind, default: Any = _REQUIRED) -> Field:
    return Field(name, kind, default)


def _opt(name: str, kind: Kind) -> Field:
    return Field(name, kind, kind.default)


def _decode_fields(fields: tuple[Field, ...], data: bytes, what: str, *, strict: bool) -> dict[str, Any]:
    """Fields from ``data``. Not strict: extra bytes are ignored and missing trailing fields
    that have defaults take them (an answer shorter than the longest known form)."""
    result: dict[str, Any] = {}
    pos = 0
    for f in fields:
        size = f.kind.size
        if pos >= len(data) and not strict and not f.required:
            result[f.name] = f.default
            continue
        chunk = data[pos:] if size is None else data[pos:pos + size]
        if size is not None and len(chunk) != size:
            raise CodecError(f"{what}: message too short for field {f.name!r}")
        result[f.name] = f.kind.decode(chunk)
        pos += len(chunk)
    if strict and pos != len(data):
        raise CodecError(f"{what}: {len(data) - pos} bytes too many")
    return result


# --------------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """One command: code (0x10 or 0xFF46), fields both ways, timeout, whether resending is safe."""

    code: int
    name: str
    #: Russian name of the step, for error messages.
    title: str
    request: tuple[Field, ...] = ()
    reply: tuple[Field, ...] = ()
    #: Most commands start with the 4-byte password; 0xFC does not [S pyshtrih].
    password: bool = True
    #: [S] opos CanRepeatCommand: safe to send again blindly after a lost answer.
    repeatable: bool = False
    timeout: float = field(default=0.0)

    @property
    def prefix(self) -> bytes:
        """The command code as sent: one byte, or ``FF nn`` high byte first [C]."""
        return self.code.to_bytes(2 if self.code > 0xFF else 1, "big")

    @property
    def answer_timeout(self) -> float:
        """Seconds to wait for the answer (opos GetCommandTimeout, model.TIMEOUTS)."""
        if self.timeout:
            return self.timeout
        if self.code > 0xFF:
            return model.FN_COMMAND_TIMEOUT
        return model.TIMEOUTS.get(self.code, model.DEFAULT_TIMEOUT)

    def encode(self, password: int | None = None, **params: Any) -> bytes:
        """Command payload (code, password, data)."""
        head = self.prefix
        if self.password:
            if password is None:
                raise TypeError(f"{self.name}: password required")
            head += int(password).to_bytes(4, "little")
        return head + _encode_fields(self.request, params, self.name)

    def decode_request(self, payload: bytes) -> tuple[int | None, dict[str, Any]]:
        """(password, params) of a payload made by :meth:`encode` (the emulator's side)."""
        if not payload.startswith(self.prefix):
            raise CodecError(f"{self.name}: payload does not start with {self.prefix.hex()}")
        data = payload[len(self.prefix):]
        password = None
        if self.password:
            if len(data) < 4:
                raise CodecError(f"{self.name}: no password")
            password, data = int.from_bytes(data[:4], "little"), data[4:]
        return password, _decode_fields(self.request, data, self.name, strict=True)

    def encode_reply(self, **fields: Any) -> bytes:
        """A successful answer (the emulator's side)."""
        return self.prefix + b"\x00" + _encode_fields(self.reply, fields, self.name + " reply")

    def encode_error(self, code: int) -> bytes:
        """An error answer: the echo and the error byte (the emulator's side)."""
        if not 0 < code <= 0xFF:
            raise ValueError(f"bad error code {code}")
        return self.prefix + bytes((code,))

    def error_code(self, payload: bytes) -> int:
        """The error byte of an answer to this command (CodecError when it is not one).

        An FF command's error is byte 3; a device that does not know the sub-command answers
        ``FF err``, so when byte 2 is not our sub-code it is the error [S: opos SendCommand].
        """
        prefix = self.prefix
        if len(prefix) == 2 and len(payload) >= 2 and payload[0] == 0xFF and payload[1] != prefix[1]:
            return payload[1] or ErrorCode.NOT_SUPPORTED
        if not payload.startswith(prefix) or len(payload) <= len(prefix):
            raise CodecError(f"{self.name}: answer {payload[:4].hex(' ')} is not for {prefix.hex(' ')}")
        return payload[len(prefix)]

    def decode_reply(self, payload: bytes, *, step: str = "") -> dict[str, Any]:
        """Answer fields as a dict; a non-zero error byte raises DeviceError."""
        code = self.error_code(payload)
        if code:
            raise device_error(code, step=step or self.title, command=self.code)
        return _decode_fields(self.reply, payload[len(self.prefix) + 1:], self.name + " reply", strict=False)


_OP = _opt("operator", U8())
_T = model.TIMEOUTS

#: Fields of a classic sale (0x80-0x84) [C: opos Sale; pyshtrih sale]: qty ×1000 in 5 bytes.
_SALE_FIELDS = (
    _f("quantity", Quantity(5, 1000)), _f("price", Money()), _opt("department", U8()),
    _opt("tax1", U8()), _opt("tax2", U8()), _opt("tax3", U8()), _opt("tax4", U8()),
    _opt("text", Text(model.MIN_TEXT_BYTES)),
)

COMMANDS_LIST: tuple[Command, ...] = (
    # ---- status and identity (§4.1)
    # [C] pyshtrih handlers 0x10; opos TShortPrinterStatus: 14 bytes.
    Command(0x10, "short_status", "короткий запрос состояния", reply=(
        _OP, _opt("flags", LE(2)), _opt("mode", U8()), _opt("submode", U8()), _opt("items_low", U8()),
        _opt("battery", U8()), _opt("voltage", U8()), _opt("fp_error", U8()), _opt("eklz_error", U8()),
        _opt("items_high", U8()), _opt("reserved", Raw(3)),
    ), repeatable=True),
    # [C] opos TLongStatusCommand.Decode; pyshtrih 0x11: 46 bytes.
    Command(0x11, "full_status", "запрос состояния", reply=(
        _OP, _opt("fw_version", Ascii(2)), _opt("fw_build", LE(2)), _f("fw_date", Date("DMY"), None),
        _opt("hall", U8()), _opt("document_number", LE(2)), _opt("flags", LE(2)), _opt("mode", U8()),
        _opt("submode", U8()), _opt("port", U8()), _opt("fp_version", Ascii(2)), _opt("fp_build", LE(2)),
        _f("fp_date", Date("DMY"), None), _f("date", Date("DMY"), None), _f("time", Date("hms"), None),
        _opt("fp_flags", U8()), _opt("serial", LE(4)), _opt("last_shift", LE(2)), _opt("free_records", LE(2)),
        _opt("reregistrations", U8()), _opt("reregistrations_left", U8()), _opt("inn", LE(6)),
    ), repeatable=True),
    # [S] pyshtrih 0xFC: no password, no operator byte; the name is the rest of the frame.
    Command(0xFC, "device_type", "запрос типа устройства", password=False, reply=(
        _opt("type", U8()), _opt("subtype", U8()), _opt("protocol", U8()), _opt("protocol_sub", U8()),
        _opt("model", U8()), _opt("language", U8()), _opt("name", Text()),
    ), repeatable=True),
    # [S] pyshtrih request_monetary_register: op, value(6); register numbers in model.py.
    Command(0x1A, "money_register", "запрос денежного регистра", request=(_f("register", U8()),),
            reply=(_OP, _opt("value", LE(6))), repeatable=True),
    # ---- printing and service (§4.2)
    # [C] opos PrintString; pyshtrih print_string; flags bit 1 = receipt roll (e-kiosk 0x02).
    Command(0x17, "print_string", "печать строки", request=(
        _f("flags", U8(), 0x02), _opt("text", Text(model.MIN_TEXT_BYTES)),
    ), reply=(_OP,), repeatable=True),
    # [S] pyshtrih open_drawer; opos gives 0x28 a 10 s timeout (§6): drawer number 0 or 1.
    Command(0x28, "open_drawer", "открытие денежного ящика", request=(_opt("drawer", U8()),), reply=(_OP,)),
    # [S] e-kiosk Commands::PrintString: flags, font, text.
    Command(0x2F, "print_string_font", "печать строки шрифтом", request=(
        _f("flags", U8(), 0x02), _f("font", U8(), 1), _opt("text", Text(model.MIN_TEXT_BYTES)),
    ), reply=(_OP,)),
    # [C] opos PRINTER_CUTTYPE_*; pyshtrih cut: 0 full, 1 partial.
    Command(0x25, "cut", "отрезка чека", request=(_opt("cut_type", U8()),), reply=(_OP,), repeatable=True),
    # [C] continue printing after paper was replaced (submode 3).
    Command(0xB0, "continue_print", "продолжение печати", reply=(_OP,), repeatable=True),
    # [S] pyshtrih repeat: print the last document again.
    Command(0x8C, "repeat_document", "повтор документа", reply=(_OP,)),
    # ---- shift and reports (§4.3)
    # [C] opos OpenDay; pyshtrih open_shift reads the error only, opos says op (open point 9).
    Command(0xE0, "open_shift", "открытие смены", reply=(_OP,)),
    # [S] opos OpenFiscalDay: start opening, then FF0C tags, then 0xE0.
    Command(0xFF41, "begin_open_shift", "начало открытия смены"),
    # [C] opos PrintXReport; pyshtrih x_report.
    Command(0x40, "x_report", "X-отчёт", reply=(_OP,)),
    # [C] opos PrintZReport; [C] FF42 starts closing so tags can go first (opos BeginZReport).
    Command(0x41, "z_report", "закрытие смены (Z-отчёт)", reply=(_OP,)),
    Command(0xFF42, "begin_close_shift", "начало закрытия смены"),
    # [C] javapos FSStartCalcReport; opos: start the settlement-state report (model.py).
    Command(0xFF37, "begin_settlement_report", "начало отчёта о текущем состоянии расчётов"),
    # [C] opos/javapos FSPrintCalcReport; pyshtrih 0xFF38: FD, sign, unconfirmed count, its date.
    Command(0xFF38, "settlement_report", SETTLEMENT_REPORT_TITLE, reply=(
        _opt("fd_number", LE(4)), _opt("fiscal_sign", LE(4)), _opt("unsent", LE(4)),
        _f("first_unsent_date", Date("YMD"), None),
    )),
    # [C] opos TCashInCommand comment; pyshtrih 0x50/0x51: op, document number(2).
    Command(0x50, "cash_in", "внесение наличных", request=(_f("amount", Money()),),
            reply=(_OP, _opt("document_number", LE(2)))),
    Command(0x51, "cash_out", "выплата наличных", request=(_f("amount", Money()),),
            reply=(_OP, _opt("document_number", LE(2)))),
    # ---- receipts, classic (§4.4)
    # [C] opos OpenReceipt; pyshtrih open_check: 0 sale, 1 buy, 2 sale return, 3 buy return.
    Command(0x8D, "open_receipt", "открытие чека", request=(_f("receipt_type", U8()),), reply=(_OP,)),
    Command(0x80, "sale", "продажа", request=_SALE_FIELDS, reply=(_OP,)),
    Command(0x81, "buy", "покупка", request=_SALE_FIELDS, reply=(_OP,)),
    Command(0x82, "sale_return", "возврат продажи", request=_SALE_FIELDS, reply=(_OP,)),
    Command(0x83, "buy_return", "возврат покупки", request=_SALE_FIELDS, reply=(_OP,)),
    # [C] opos ReceiptClose; pyshtrih close_check.
    Command(0x85, "close_receipt", "закрытие чека", request=(
        _opt("cash", Money()), _opt("pay2", Money()), _opt("pay3", Money()), _opt("pay4", Money()),
        _opt("discount", Signed(2)), _opt("tax1", U8()), _opt("tax2", U8()), _opt("tax3", U8()),
        _opt("tax4", U8()), _opt("text", Text(model.MIN_TEXT_BYTES)),
    ), reply=(_OP, _opt("change", Money()))),
    # [C] cancel receipt.
    Command(0x88, "cancel_receipt", "отмена чека", reply=(_OP,)),
    # [C] opos; javapos #33 log (02 05 89 01 00 00 00 8D).
    Command(0x89, "subtotal", "подытог чека", reply=(_OP, _opt("subtotal", Money())), repeatable=True),
    # ---- receipts, FN (§4.5)
    # [C] opos FSSale2; javapos FSPrintRecItem; e-kiosk sale. The answer is the error only.
    Command(0xFF46, "operation", "регистрация позиции", request=(
        _f("operation_type", U8()), _f("quantity", Quantity(6, 1_000_000)), _f("price", Money()),
        _f("amount", Money(), model.AUTO_SUM), _f("tax_amount", Money(), model.AUTO_SUM), _f("tax", U8()),
        _opt("department", U8()), _f("payment_method", U8(), 4), _f("payment_object", U8(), 1),
        # [S] javapos pads the name with NULs to 40 bytes (javapos #58/#59 logs: LEN 0x48).
        _opt("name", Text(model.MIN_TEXT_BYTES, model.ITEM_NAME_BYTES)),
    )),
    # [C] opos ReceiptClose2; javapos FSCloseReceipt; e-kiosk closeDocument. 6 tax sums (the
    # 202-byte form with 10 is commented out in opos and not sent by javapos).
    Command(0xFF45, "close_receipt_ext", "закрытие чека", request=(
        *(_opt(f"payment{i}", Money()) for i in range(1, model.PAYMENT_SLOT_COUNT + 1)),
        _opt("rounding", U8()),
        *(_opt(f"tax_sum{i}", Money()) for i in range(1, model.TAX_SUM_COUNT + 1)),
        _opt("taxation", U8()), _opt("text", Text(0, model.CLOSE_TEXT_BYTES)),
    ), reply=(
        _opt("change", Money()), _opt("fd_number", LE(4)), _opt("fiscal_sign", LE(4)),
        _f("datetime", Date("YMDhm"), None),
    )),
    # [C] opos FSWriteTLV; pyshtrih send_tlv_struct: TLV to the document (≤ 250 bytes a call).
    Command(0xFF0C, "write_tlv", "передача реквизита", request=(_opt("tlv", Raw()),)),
    # [C] opos FSWriteTLVOperation; e-kiosk SetOFDParameterLinked: TLV bound to the last FF46.
    Command(0xFF4D, "write_tlv_operation", "реквизит позиции", request=(_opt("tlv", Raw()),)),
    # ---- FN information (§4.6)
    # [C] opos FSReadState; pyshtrih 0xFF01; e-kiosk reads the FD number at offset 29..32.
    Command(0xFF01, "fn_status", "запрос состояния ФН", reply=(
        _opt("phase", U8()), _opt("document_type", U8()), _opt("document_data", U8()),
        _opt("shift_open", U8()), _opt("warnings", U8()), _f("datetime", Date("YMDhm"), None),
        _opt("fn_number", Ascii(16)), _opt("last_fd_number", LE(4)),
    ), repeatable=True),
    # [C] opos, pyshtrih: expiry date, re-registrations left and done.
    Command(0xFF03, "fn_expiry", "запрос срока действия ФН", reply=(
        _f("valid_until", Date("YMD"), None), _opt("registrations_left", U8()), _opt("registrations_done", U8()),
    ), repeatable=True),
    # [C] pyshtrih; javapos commands.xml; e-kiosk reads bytes 4-5.
    Command(0xFF40, "fn_shift", "запрос параметров смены", reply=(
        _opt("shift_open", U8()), _opt("shift_number", LE(2)), _opt("receipt_number", LE(2)),
    ), repeatable=True),
    # [C] opos FSReadCommStatus; pyshtrih.
    Command(0xFF39, "ofd_status", "запрос состояния обмена с ОФД", reply=(
        _opt("status", U8()), _opt("reading", U8()), _opt("unsent", LE(2)), _opt("first_unsent_number", LE(4)),
        _f("first_unsent_at", Date("YMDhm"), None),
    ), repeatable=True),
    # [C] opos FSFindDocument; pyshtrih; javapos. The data depends on the type (decode_document).
    Command(0xFF0A, "find_document", "поиск документа по номеру", request=(_f("fd_number", LE(4)),), reply=(
        _opt("doc_type", U8()), _opt("ticket", U8()), _opt("data", Raw()),
    ), repeatable=True),
    # [C] cancel the FN document (opos CancelReceipt's fallback).
    Command(0xFF08, "fn_cancel_document", "отмена документа в ФН"),
)

#: Largest 5-byte sum; FF..FF itself is FF46's "device computes" marker, so one less.
_MONEY_MAX = model.AUTO_SUM - 1
#: What a document may hold so that every value fits these commands (kktapp.device.DeviceLimits).
LIMITS = DeviceLimits(
    max_price=_MONEY_MAX,
    # FF46: 6 bytes of millionths (0x80's 5 bytes of thousandths hold more).
    max_quantity=Decimal(2**48 - 1) / 1_000_000,
    max_position_sum=_MONEY_MAX,
    max_payment=_MONEY_MAX,
    max_cash=_MONEY_MAX,
    name_bytes=model.ITEM_NAME_BYTES,
    # 0x17: the 255-byte payload less the code, the password and the flags.
    text_line_bytes=255 - 1 - 4 - 1,
    max_positions=model.MAX_POSITIONS,
    max_department=model.MAX_DEPARTMENT,
    encode=encode_text,
)

#: Registry by name and by code.
COMMANDS: dict[str, Command] = {c.name: c for c in COMMANDS_LIST}
BY_CODE: dict[int, Command] = {c.code: c for c in COMMANDS_LIST}
assert len(COMMANDS) == len(BY_CODE) == len(COMMANDS_LIST), "duplicate command name or code"

#: Layouts of the FF0A data by document type [C: opos FSFindDocument, pyshtrih]: receipts
#: (3; 4 and 31 alike) and, for the emulator's cash documents, type 0 (model.DOC_CASH).
_RECEIPT_DOC = (
    _f("datetime", Date("YMDhm"), None), _opt("fd_number", LE(4)), _opt("fiscal_sign", LE(4)),
    _opt("operation_type", U8()), _opt("total", Money()),
)
_SHIFT_DOC = (
    _f("datetime", Date("YMDhm"), None), _opt("fd_number", LE(4)), _opt("fiscal_sign", LE(4)),
    _opt("shift_number", LE(2)),
)
#: [S] opos FSFindDocument type 21 (model.DOC_SETTLEMENT_REPORT; the count's width is [U]).
_SETTLEMENT_DOC = (
    _f("datetime", Date("YMDhm"), None), _opt("fd_number", LE(4)), _opt("fiscal_sign", LE(4)),
    _opt("unsent", LE(2)), _f("first_unsent_at", Date("YMDhm"), None),
)
DOCUMENT_LAYOUTS: dict[int, tuple[Field, ...]] = {
    **{t: _RECEIPT_DOC for t in (*model.RECEIPT_DOC_TYPES, model.DOC_CASH)},
    **{t: _SHIFT_DOC for t in model.SHIFT_DOC_TYPES},
    model.DOC_SETTLEMENT_REPORT: _SETTLEMENT_DOC,
}


def decode_document(doc_type: int, data: bytes) -> dict[str, Any]:
    """FF0A data of a known type as a dict (CodecError for an unknown type)."""
    layout = DOCUMENT_LAYOUTS.get(doc_type)
    if layout is None:
        raise CodecError(f"FF0A: document type {doc_type} not decoded")
    return _decode_fields(layout, data, f"FF0A type {doc_type}", strict=False)


def encode_document(doc_type: int, **values: Any) -> bytes:
    """FF0A data for a document (the emulator's side)."""
    return _encode_fields(DOCUMENT_LAYOUTS[doc_type], values, f"FF0A type {doc_type}")


def get(name: str) -> Command:
    """Command by name (KeyError for an unknown one)."""
    return COMMANDS[name]


def lookup(payload: bytes) -> Command | None:
    """The command a payload belongs to, None if unknown."""
    if not payload:
        return None
    if payload[0] == 0xFF:
        return BY_CODE.get(int.from_bytes(payload[:2], "big")) if len(payload) >= 2 else None
    return BY_CODE.get(payload[0])


def parse_request(payload: bytes) -> tuple[Command, int | None, dict[str, Any]]:
    """Payload → (command, password, params). KeyError for an unknown code, CodecError for a
    malformed one."""
    cmd = lookup(payload)
    if cmd is None:
        raise KeyError(f"unknown command {payload[:2].hex(' ')}")
    password, params = cmd.decode_request(payload)
    return cmd, password, params


# --------------------------------------------------------------------------- TLV (FF0C, FF4D)

#: Tags whose value is a 1-byte integer (1173 correction type, 2108 unit, [U] 1125 internet).
BYTE_TAGS = frozenset({model.TAG_CORRECTION_TYPE, model.TAG_UNIT, model.TAG_INTERNET})
#: Tags whose value is UnixTime (1178 correction date).
UNIXTIME_TAGS = frozenset({model.TAG_CORRECTION_DATE})
#: Tags holding other TLVs (1174 correction basis).
STLV_TAGS = frozenset({model.TAG_CORRECTION_BASIS})


def tlv(tag: int, value: str | int | dt.date | bytes) -> bytes:
    """One TLV: tag(2 LE), length(2 LE), value; text in cp1251 [C: opos FSWriteTLV]."""
    if isinstance(value, bytes):
        raw = value
    elif tag in UNIXTIME_TAGS:
        if not isinstance(value, dt.date):
            raise CodecError(f"tag {tag} needs a date")
        moment = dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
        raw = int(moment.timestamp()).to_bytes(4, "little")
    elif tag in BYTE_TAGS or isinstance(value, int):
        raw = int(value).to_bytes(1, "little")
    else:
        raw = encode_text(str(value))
    if len(raw) + 4 > model.MAX_TLV_BYTES:
        raise CodecError(f"tag {tag}: value of {len(raw)} bytes too long")
    return tlv_record(tag, raw)


def parse_tlv(data: bytes) -> list[tuple[int, Any]]:
    """TLVs → [(tag, value)]; values decoded by the tag (nested for STLV tags)."""
    out: list[tuple[int, Any]] = []
    for tag, raw in tlv_records(data, whole=True):
        value: Any
        if tag in STLV_TAGS:
            value = dict(parse_tlv(raw))
        elif tag in UNIXTIME_TAGS and len(raw) == 4:
            value = dt.datetime.fromtimestamp(int.from_bytes(raw, "little"), dt.timezone.utc).date()
        elif tag in BYTE_TAGS and len(raw) == 1:
            value = raw[0]
        else:
            value = raw.decode(model.ENCODING, errors="replace")
        out.append((tag, value))
    return out


def print_text_of(line: TextLine, width: int = model.LINE_WIDTH) -> str:
    """A text line aligned within the printer width with spaces (0x17 has no alignment flag)
    [U]; a longer line is sent whole and wraps on paper."""
    if line.align == "center":
        return line.text.center(width).rstrip()
    if line.align == "right":
        return line.text.rjust(width)
    return line.text
