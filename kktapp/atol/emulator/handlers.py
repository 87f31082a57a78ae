"""Glue between the protocol layer's command table and the device state machine.

A task body comes in (access password + command bytes); :func:`execute` parses it with
:func:`kktapp.atol.commands.parse_request`, calls the :class:`~.device.Device` method for that
command, and encodes the answer with ``cmd.encode_reply`` or ``commands.encode_error``. No
layout is defined here: field names are the ones :mod:`kktapp.atol.commands` declares.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from typing import Any

from ...domain import VAT_BY_TAG1199
from .. import codec, commands, model, taskbuf
from ..commands import Command, ShortStatusFlags, StatusFlags
from ..errors import ErrorCode
from .device import MODEL_CODE, Device, DeviceFault

log = logging.getLogger(__name__)

#: Firmware version the emulator reports (3F, A5): new enough for 22 % VAT (fiscal-rules.md §1).
FIRMWARE = (5, 17, 0, 7000)
DEVICE_NAME = commands.MODEL_NAMES[MODEL_CODE]
#: 3F port type: Ethernet.
PORT_ETHERNET = 6
#: A5 protocol version and device type (1 = KKT).
PROTOCOL_VERSION = 3
DEVICE_TYPE_KKT = 1
#: A4 30 FN phase "fiscal mode" (FN protocol phases: 1 ready, 3 fiscal, 7 post-fiscal, 15 archive).
FN_PHASE_FISCAL = 3
FLAG_TEST = commands.FLAG_TEST
FLAG_NO_PRINT = commands.FLAG_NO_PRINT
#: Commands a device answers while a report is in progress (model.REPORT_PROGRESS_MODES) [U].
QUERIES = frozenset({0x3F, 0x45, 0xA5, 0x91, 0xA4, 0x4D, 0x58, 0x9D})
#: [U] Registration data the emulator answers in A4 43: organisation INN (10 digits, padded
#: with spaces to 12 as C pads 1203); its tax systems are Device.tax_systems.
ORGANISATION_INN = "7700000001"
#: E6 discount type "sum in kopecks" (the only one the model uses).
DISCOUNT_SUM = 1

DOC_TYPES = {
    "open_shift": model.DocType.SHIFT_OPEN, "close_shift": model.DocType.SHIFT_CLOSE,
    "receipt": model.DocType.RECEIPT, "cash_in": model.DocType.CASH_IN, "cash_out": model.DocType.CASH_OUT,
    "settlement_report": model.DocType.CALCULATION_STATE,
}
TAG1054_BY_SETTLEMENT = {
    commands.SETTLEMENT_BY_RECEIPT_TYPE[code].value: tag for code, tag in commands.TAG1054_BY_RECEIPT_TYPE.items()
}

Handler = Callable[[Device, Command, dict[str, Any]], bytes]
HANDLERS: dict[str, Handler] = {}


def handles(name: str) -> Callable[[Handler], Handler]:
    """Register a handler for the command named ``name`` in :data:`commands.COMMANDS`."""
    commands.get(name)  # fail at import when the protocol layer renames a command

    def register(fn: Handler) -> Handler:
        HANDLERS[name] = fn
        return fn

    return register


def execute(device: Device, task: bytes, before: Callable[[str], None] | None = None) -> tuple[bytes, bool]:
    """Run one task body on the device; returns (reply bytes, failed).

    ``before`` is called with the command name (device lock held) just before it runs: the
    fault hooks use it to make the paper run out at a chosen command.
    """
    try:
        password, data = taskbuf.decode_task(task)
    except codec.CodecError:
        return commands.encode_error(model.BAD_LENGTH_ERROR), True
    try:
        cmd, params = commands.parse_request(data)
    except KeyError:
        log.info("emulator: unknown command %s", data[:2].hex(" "))
        return commands.encode_error(model.UNKNOWN_COMMAND_ERROR), True
    except codec.CodecError as exc:
        log.info("emulator: malformed request: %s", exc)
        return commands.encode_error(model.BAD_LENGTH_ERROR), True
    handler = HANDLERS.get(cmd.name)
    with device.lock:
        if before is not None:
            before(cmd.name)
        try:
            device.check_access(password)
            if handler is None:
                raise DeviceFault(model.UNKNOWN_COMMAND_ERROR)
            if cmd.code not in QUERIES and device.busy():
                raise DeviceFault(ErrorCode.WRONG_MODE)
            if cmd.mode is not None and device.state.mode != cmd.mode:
                raise DeviceFault(ErrorCode.WRONG_MODE)
            return handler(device, cmd, params), False
        except DeviceFault as fault:
            log.debug("emulator: %s → error 0x%02X", cmd.name, fault.code)
            return commands.encode_error(fault.code, fault.ext), True


def _serial_number(device: Device) -> int:
    # 3F carries 4 BCD bytes: the last 8 digits of the 14-digit serial.
    return int(device.state.serial[-8:])


# --------------------------------------------------------------------------- status and identity


@handles("status")
def _status(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    s = device.state
    flags = StatusFlags.FN_ACTIVE
    if s.fiscal:
        flags |= StatusFlags.FISCAL
    if s.shift_open:
        flags |= StatusFlags.SHIFT_OPEN
    if device.paper:
        flags |= StatusFlags.PAPER_PRESENT
    if device.drawer_openings:
        flags |= StatusFlags.DRAWER_OPEN
    r = s.receipt
    return cmd.encode_reply(
        cashier=s.operator if s.mode else 0, hall=1, datetime=device.now(), flags=int(flags),
        serial=_serial_number(device), model=MODEL_CODE, fw_major=FIRMWARE[0], fw_minor=FIRMWARE[1],
        mode=device.mode_byte(), receipt_number=s.receipt_number % 10000,
        # [S K] the last CLOSED shift, even while one is open.
        shift_number=(s.shift_number - (1 if s.shift_open else 0)) % 10000,
        receipt_state=r.type if r else 0, receipt_sum=max(0, r.total) if r else 0, decimal_point=2,
        port_type=PORT_ETHERNET,
    )


@handles("short_status")
def _short_status(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    flags = ShortStatusFlags(0) if device.paper else ShortStatusFlags.NO_PAPER
    if device.paper and device.paper_near_end:
        flags |= ShortStatusFlags.PAPER_NEAR_END
    return cmd.encode_reply(mode=device.mode_byte(), flags=int(flags))


@handles("serial_number")
def _serial(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    # Register 22 (model.REGISTER_SERIAL): the whole serial that 3F cuts to 8 digits.
    return cmd.encode_reply(serial=device.state.serial)


@handles("device_type")
def _device_type(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    return cmd.encode_reply(
        protocol=PROTOCOL_VERSION, type=DEVICE_TYPE_KKT, model=MODEL_CODE, device_mode=0,
        fw_major=FIRMWARE[0], fw_minor=FIRMWARE[1], fw_build=FIRMWARE[3], name=DEVICE_NAME,
    )


@handles("firmware_build")
def _firmware_build(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    # [S K] the build in the reply's last two bytes, BCD; [U] one reserved byte before it.
    return cmd.encode_reply(value=b"\x00" + codec.encode_bcd(FIRMWARE[3], 2))


# --------------------------------------------------------------------------- modes and shift


@handles("enter_mode")
def _enter_mode(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.enter_mode(p["mode"], p["password"])
    return cmd.encode_reply()


@handles("leave_mode")
def _leave_mode(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.exit_mode()
    return cmd.encode_reply()


@handles("open_shift")
def _open_shift(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.open_shift(test=bool(p["flags"] & FLAG_TEST))
    return cmd.encode_reply()


@handles("close_shift")
def _close_shift(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.close_shift()
    return cmd.encode_reply()


@handles("x_report")
def _x_report(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    if p["report_type"] == model.REPORT_SETTLEMENT_STATE:
        device.settlement_report()
    else:
        device.x_report()
    return cmd.encode_reply()


@handles("shift_state")
def _shift_state(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    state = {"closed": model.SHIFT_CLOSED, "open": model.SHIFT_OPEN, "expired": model.SHIFT_EXPIRED}
    return cmd.encode_reply(state=state[device.shift_state()], opened_at=device.shift_opened_at())


# --------------------------------------------------------------------------- receipt


@handles("open_receipt")
def _open_receipt(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    flags = p["flags"]
    device.open_receipt(p["receipt_type"], test=bool(flags & FLAG_TEST), no_print=bool(flags & FLAG_NO_PRINT))
    return cmd.encode_reply()


def _rate(device: Device, command: int, tax: int) -> str:
    rate = VAT_BY_TAG1199.get(tax)
    if rate is None:
        raise device.refuse_extended(command, model.EXT_BAD_TAX)
    return rate.value


@handles("begin_position")
def _begin_position(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    if device.ffd < model.FIRST_EA_EB_FFD:
        raise DeviceFault(model.UNKNOWN_COMMAND_ERROR)
    device.begin_position()
    return cmd.encode_reply()


@handles("end_position")
def _end_position(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    if device.ffd < model.FIRST_EA_EB_FFD:
        raise DeviceFault(model.UNKNOWN_COMMAND_ERROR)
    if device.position_tags is None:
        raise device.refuse_extended(cmd.code, model.EXT_NO_POSITION_STARTED)
    rate = _rate(device, cmd.code, p["tax"])
    if p["quantity"] <= 0:
        raise DeviceFault(ErrorCode.BAD_QUANTITY)
    if not p["name"]:
        raise DeviceFault(ErrorCode.BAD_FORMAT)
    device.end_position(p["name"], p["price"], p["quantity"], p["sum"], rate, discount=p["discount"],
                        section=p["section"], payment_object=p["payment_object"], payment_method=p["payment_method"],
                        check_cash=not p["flags"] & model.POSITION_NO_CASH_CHECK)
    return cmd.encode_reply()


@handles("register_position")
def _register_position(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    if device.ffd >= model.FIRST_EA_EB_FFD:
        raise DeviceFault(model.UNKNOWN_COMMAND_ERROR)  # [U] model.FIRST_EA_EB_FFD
    rate = VAT_BY_TAG1199.get(p["tax"])
    if rate is None:
        raise DeviceFault(ErrorCode.BAD_FORMAT)
    if p["quantity"] <= 0:
        raise DeviceFault(ErrorCode.BAD_QUANTITY)
    if p["discount_sum"] and p["discount_type"] != DISCOUNT_SUM:
        raise DeviceFault(ErrorCode.BAD_FORMAT)
    name = p["name"]
    if not name:
        raise DeviceFault(ErrorCode.BAD_FORMAT)
    # Model (E6_DISCOUNT_ADJUSTS_SUM): sum = price × quantity ∓ discSum.
    amount_before = p["price"] * p["quantity"]
    if not p["discount_sign"] and p["discount_sum"] > amount_before:
        raise DeviceFault(ErrorCode.BAD_PRICE)
    device.add_position(
        name, p["price"], p["quantity"], rate.value,
        discount=p["discount_sum"], markup=bool(p["discount_sign"]), section=p["section"],
    )
    return cmd.encode_reply()


@handles("write_attribute")
def _write_attribute(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    tag = p["tag"]
    if tag == model.TAG_CORRECTION_BASIS:
        # An STLV of 1178 (+ 1179), model.py: parsed and checked, kept as its parts.
        try:
            parts = commands.decode_correction_basis(p["value"])
        except codec.CodecError as exc:
            log.info("emulator: bad tag %d: %s", tag, exc)
            raise DeviceFault(ErrorCode.BAD_FORMAT) from exc
        value: Any = {k: v.isoformat() if isinstance(v, dt.date) else v for k, v in parts.items()}
    else:
        value = commands.decode_attribute_value(tag, p["value"])
        if isinstance(value, dt.date):
            value = value.isoformat()  # kept as JSON in the state and the log
    device.write_attribute(tag, value)
    return cmd.encode_reply()


@handles("receipt_discount")
def _receipt_discount(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    amount = p["amount"]
    device.receipt_discount(-amount if p["sign"] else amount)
    return cmd.encode_reply()


@handles("payment")
def _payment(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    remainder, change = device.payment(p["payment_type"], p["amount"])
    return cmd.encode_reply(remainder=remainder, change=change)


@handles("close_receipt")
def _close_receipt(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.close_receipt(p["payment_type"], p["amount"])
    return cmd.encode_reply()


@handles("cancel_receipt")
def _cancel_receipt(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.cancel_receipt()
    return cmd.encode_reply()


# --------------------------------------------------------------------------- cash


@handles("cash_in")
def _cash_in(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.cash_in(p["amount"])
    return cmd.encode_reply()


@handles("cash_out")
def _cash_out(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.cash_out(p["amount"])
    return cmd.encode_reply()


@handles("cash_in_drawer")
def _cash_in_drawer(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    return cmd.encode_reply(amount=max(0, device.state.cash))


@handles("cash_register")
def _cash_register(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    # [S K] Register 0x0A: the same drawer as 4D.
    return cmd.encode_reply(amount=max(0, device.state.cash))


@handles("last_shift_totals")
def _last_shift_totals(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    income, outcome = device.last_shift_totals()
    return cmd.encode_reply(income=income, outcome=outcome)


@handles("non_resettable_total")
def _non_resettable_total(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    # [S K] p1 = receipt type (1 sale).
    settlement = commands.SETTLEMENT_BY_RECEIPT_TYPE.get(p["p1"])
    if settlement is None:
        raise DeviceFault(ErrorCode.BAD_FORMAT)
    return cmd.encode_reply(total=device.state.grand_totals.get(settlement.value, 0))


# --------------------------------------------------------------------------- printing


@handles("print_string")
def _print_string(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.print_text(p["text"])
    return cmd.encode_reply()


@handles("print_field")
def _print_field(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.print_text(commands.text_line(p).text)
    return cmd.encode_reply()


@handles("cut")
def _cut(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    return cmd.encode_reply()


@handles("open_drawer")
def _open_drawer(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.drawer_openings += 1
    return cmd.encode_reply()


@handles("reprint_last")
def _reprint_last(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.reprint_last()
    return cmd.encode_reply()


# --------------------------------------------------------------------------- registers and FN


#: Registers answered by the generic 91 read (the shift-state register has its own layout).
REGISTER_DATETIME = 17


@handles("read_register")
def _read_register(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    if p["register"] == REGISTER_DATETIME:
        return cmd.encode_reply(value=codec.encode_bcd_datetime(device.now(), "YMDhms"))
    raise DeviceFault(ErrorCode.NOT_SUPPORTED)


def _doc_datetime(doc: dict[str, Any] | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(doc["datetime"]) if doc else None


@handles("fn_shift")
def _fn_shift(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    s = device.state
    return cmd.encode_reply(state=1 if s.shift_open else 0, shift_number=s.shift_number,
                            receipt_number=s.receipt_number)


@handles("ofd_status")
def _ofd_status(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    s = device.state
    first = device.first_unsent
    first_doc = None
    if first:
        try:
            first_doc = device.document(first)
        except DeviceFault:
            first_doc = None
    return cmd.encode_reply(status=1 if s.unsent else 0, reading=0, unsent=s.unsent, first_unsent_number=first,
                            first_unsent_at=_doc_datetime(first_doc) if first_doc else None)


@handles("fn_status")
def _fn_status(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    s = device.state
    docs = device.documents
    last = docs[-1] if docs else None
    return cmd.encode_reply(
        phase=FN_PHASE_FISCAL, document_type=0, document_data=0, shift_open=1 if s.shift_open else 0, warnings=0,
        datetime=_doc_datetime(last) or device.now(), fn_serial=s.fn_number, last_fd_number=s.fd_number,
    )


@handles("fn_serial")
def _fn_serial(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    return cmd.encode_reply(fn_serial=device.state.fn_number)


@handles("fn_validity")
def _fn_validity(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    # A 36-month FN registered today, every time: nothing in the project depends on it.
    until = device.now().date() + dt.timedelta(days=3 * 365)
    return cmd.encode_reply(valid_until=until, registrations_left=11, registrations_done=1)


@handles("fn_version")
def _fn_version(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    return cmd.encode_reply(version="fn-2 emulator")


@handles("last_sale")
def _last_sale(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    doc = device.last_sale()
    if doc is None:
        return cmd.encode_reply()
    return cmd.encode_reply(
        fd_number=doc["fd_number"], receipt_type=_receipt_type(doc), total=doc["total"],
        datetime=_doc_datetime(doc), fiscal_sign=int(doc["fiscal_sign"]),
    )


@handles("last_fd")
def _last_fd(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    return cmd.encode_reply(fd_number=device.state.fd_number)


@handles("shift_data")
def _shift_data(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    s = device.state
    return cmd.encode_reply(receipt_number=s.receipt_number, shift_number=s.shift_number)


@handles("ffd_versions")
def _ffd_versions(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    return cmd.encode_reply(kkt_ffd=device.ffd, fn_ffd=device.ffd)


@handles("extended_error")
def _extended_error(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    command, ext = device.ext_error
    return cmd.encode_reply(command=command, ext_code=ext)


@handles("registration")
def _registration(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    s = device.state
    first = device.documents[0] if device.documents else None
    return cmd.encode_reply(datetime=_doc_datetime(first), inn=ORGANISATION_INN.ljust(12),
                            rnm=s.reg_number.ljust(20), tax_systems=device.tax_systems, modes=0)


def _receipt_type(doc: dict[str, Any]) -> int:
    settlement = doc.get("receipt_type")
    return next((code for code, st in commands.SETTLEMENT_BY_RECEIPT_TYPE.items() if st.value == settlement), 0)


def document_tlv(doc: dict[str, Any]) -> bytes:
    """The TLVs of a document as A4 46 hands them out (tags and widths: model.py, [U])."""
    when = _doc_datetime(doc)
    unix = int(dt.datetime(when.year, when.month, when.day, when.hour, when.minute, when.second,
                           tzinfo=dt.timezone.utc).timestamp()) if when else 0
    total = int(doc.get("total", 0))
    items = [
        (model.TLV_FD_NUMBER, codec.encode_le(int(doc["fd_number"]), 4)),
        (model.TLV_DATETIME, codec.encode_le(unix, 4)),
        (model.TLV_SHIFT_NUMBER, codec.encode_le(int(doc.get("shift_number", 0)), 4)),
        (model.TLV_FISCAL_SIGN, bytes(2) + int(doc["fiscal_sign"]).to_bytes(4, "big")),
    ]
    if doc.get("type") == "receipt":
        sign = TAG1054_BY_SETTLEMENT.get(doc.get("receipt_type", ""), 0)
        items += [
            (model.TLV_RECEIPT_NUMBER, codec.encode_le(int(doc.get("receipt_number", 0)), 4)),
            (model.TLV_SIGN, bytes((sign,))),
        ]
    items.append((model.TLV_TOTAL, total.to_bytes(max(1, (total.bit_length() + 7) // 8), "little")))
    return b"".join(commands.tlv(tag, v) for tag, v in items)


@handles("document_open")
def _document_open(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    doc = device.document(p["fd_number"])
    data = document_tlv(doc)
    device.reading = (data, 0)
    return cmd.encode_reply(doc_type=int(DOC_TYPES[doc["type"]]), size=len(data))


@handles("document_read")
def _document_read(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    if device.reading is None or device.reading[1] >= len(device.reading[0]):
        raise DeviceFault(ErrorCode.FN_NO_DATA)
    data, pos = device.reading
    chunk = data[pos:pos + model.DOCUMENT_CHUNK]
    device.reading = (data, pos + len(chunk))
    return cmd.encode_reply(data=chunk)


# --------------------------------------------------------------------------- service


@handles("tech_reset")
def _tech_reset(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.service_reset(clear_totals=False)
    return cmd.encode_reply()


@handles("init_tables")
def _init_tables(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.service_reset(clear_totals=False)
    return cmd.encode_reply()


@handles("general_clearing")
def _general_clearing(device: Device, cmd: Command, p: dict[str, Any]) -> bytes:
    device.service_reset(clear_totals=True)
    return cmd.encode_reply()
