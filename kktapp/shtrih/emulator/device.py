"""The emulated Shtrih-M: the Shtrih command set over the emulators' shared fiscal core.

What an FN holds (shift, counters, documents, cash, the open receipt, the clock) is
protocol-independent, so the fiscal core of the ATOL emulator (:class:`kktapp.atol.emulator.
device.Device`, with its state file and JSON-lines document log) serves here too: both
emulators write the same document log. This module is the Shtrih face of it: the mode byte,
the printing sub-mode (paper out, 0xB0), passwords, tax masks, TLVs, and the Shtrih error
codes, each command answered from :mod:`kktapp.shtrih.commands`.

The core checks ATOL's modes; a Shtrih device has none to enter, so each call here puts the
core in the mode that operation needs, and the core's refusals are mapped to Shtrih codes.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ...atol import model as core_model
from ...atol.emulator.device import Device as FiscalCore
from ...atol.emulator.device import DeviceFault
from ...atol.emulator.state import Store
from ...atol.errors import ErrorCode as CoreCode
from ...domain import SettlementType, position_amount
from .. import commands, model
from ..commands import CodecError, Command
from ..errors import ErrorCode
from ..model import Mode, Submode

log = logging.getLogger(__name__)

#: What the emulator says it is (0xFC): ШТРИХ-М-01Ф [U model code], protocol 1.
DEVICE_NAME = "ШТРИХ-М-01Ф"
MODEL_CODE = 19
PROTOCOL = (1, 2)
FIRMWARE = ("C.", 2000, dt.date(2025, 12, 1))
#: [U] FN life phase bits 0 and 1 (set up, fiscal mode open), §4.6.
FN_PHASE_FISCAL = 0x03
#: Flags word as real devices with paper answer it: 0x0090, decimal point and the receipt's
#: optical sensor (javapos #68 and fr_drv_ng #72 logs); the sensor bit clears without paper.
BASE_FLAGS = 0x0010
PAPER_FLAGS = model.FLAG_RECEIPT_OPTICAL

#: The core's refusals (ATOL codes) → the Shtrih code a device gives for the same thing.
CORE_CODES: dict[int, int] = {
    CoreCode.SHIFT_CLOSED: ErrorCode.SHIFT_CLOSED,
    CoreCode.ALREADY_CLOSED: ErrorCode.SHIFT_CLOSED,
    CoreCode.SHIFT_EXPIRED: ErrorCode.SHIFT_EXPIRED,
    CoreCode.SHIFT_OPEN: ErrorCode.SHIFT_OPEN,
    CoreCode.NO_PAPER: ErrorCode.NO_PAPER,
    CoreCode.RECEIPT_OPEN: ErrorCode.RECEIPT_OPEN,
    CoreCode.RECEIPT_CLOSED: ErrorCode.RECEIPT_CLOSED,
    CoreCode.NO_CASH: ErrorCode.NO_CASH,
    CoreCode.PAYMENTS_LESS_THAN_TOTAL: ErrorCode.PAYMENTS_LESS_THAN_TOTAL,
    CoreCode.FN_NO_DATA: ErrorCode.FN_NO_DATA,
    CoreCode.WRONG_MODE: ErrorCode.WRONG_MODE,
    CoreCode.NO_DOCUMENT: ErrorCode.WRONG_MODE,
    CoreCode.BAD_RECEIPT_TYPE: ErrorCode.BAD_PARAMETERS,
    CoreCode.BAD_PAYMENT_TYPE: ErrorCode.BAD_PARAMETERS,
}
#: 0x8D receipt type (0-3) → the core's receipt type (ATOL numbering), and back.
CORE_RECEIPT = {0: 1, 1: 4, 2: 2, 3: 5}
SHTRIH_RECEIPT = {v: k for k, v in CORE_RECEIPT.items()}
#: FF46 operation type (1054) → 0x8D type, for a receipt FF46 opens itself (javapos sends no 0x8D).
RECEIPT_BY_OPERATION = {1: 0, 2: 2, 3: 1, 4: 3}
#: A receipt becomes a correction when tag 1173 arrives: core type → its correction type.
CORRECTION_OF = {1: 7, 2: 8, 4: 9, 5: 10}
#: FF45 payment slots → the core's payment types (ATOL 99 codes: 1 cash, 2 electronic, 3
#: prepaid, 4 credit, 5 other); slots 2-13 are all electronic [C].
SLOT_PAYMENT = {1: 1, **{i: 2 for i in range(2, 14)}, 14: 3, 15: 4, 16: 5}
#: 0x85's four sums → the core's payment types [U: 2 electronic, 3 prepaid, 4 credit].
CLASSIC_PAYMENT = {"cash": 1, "pay2": 2, "pay3": 3, "pay4": 4}
#: Classic 0x80 tax group (table-6 row) → VAT name.
CLASSIC_TAX = {1: "vat20", 2: "vat10", 3: "vat0", 4: "none"}
#: Item tags the document log keeps per position only when they differ from the default.
ITEM_DEFAULTS = core_model.POSITION_TAG_DEFAULTS
#: FF4D tags bound to the last FF46 → the key in the document log's item.
ITEM_TAG_KEYS = {core_model.TAG_UNIT: "unit", core_model.TAG_PAYMENT_METHOD: "payment_method",
                 core_model.TAG_PAYMENT_OBJECT: "payment_object", core_model.TAG_ITEM_NAME: "name"}
#: Commands that print and therefore need paper before they change anything.
PRINTING = frozenset({"print_string", "print_string_font", "cut", "x_report", "open_shift", "z_report",
                      "settlement_report", "cash_in", "cash_out", "repeat_document"})
#: Commands that only the administrators (29, 30) may run [U; pyshtrih uses the admin password;
#: the settlement-state report: model.py].
ADMIN_ONLY = frozenset({"x_report", "z_report", "settlement_report"})


class Fault(Exception):
    """A Shtrih error answer."""

    def __init__(self, code: int) -> None:
        super().__init__(f"error 0x{code:02X}")
        self.code = code


Handler = Callable[["ShtrihDevice", dict[str, Any]], dict[str, Any]]
HANDLERS: dict[str, Handler] = {}


def handles(*names: str) -> Callable[[Handler], Handler]:
    """Register a handler for commands named in :data:`kktapp.shtrih.commands.COMMANDS`."""
    for name in names:
        commands.get(name)

    def register(fn: Handler) -> Handler:
        for name in names:
            HANDLERS[name] = fn
        return fn

    return register


class ShtrihDevice:
    """One emulated Shtrih-M: the fiscal core plus what the Shtrih protocol shows of it."""

    def __init__(self, store: Store, serial: str, *, clock_offset_hours: float | None = None,
                 cash_documents: bool = False) -> None:
        # Cash in/out form no FN document, as on a device (see cash_documents).
        self.core = FiscalCore(store, serial, clock_offset_hours=clock_offset_hours, cash_documents=cash_documents)
        self.lock = self.core.lock
        #: Operator of the last command (password 1..30).
        self.operator = model.SYSADMIN_PASSWORD
        #: Name of the command being executed (handlers shared by several commands read it).
        self.operation = ""

    @property
    def state(self) -> Any:
        """The core's persistent state (fd_number, shift_number, receipt, cash, …)."""
        return self.core.state

    @property
    def cash_documents(self) -> bool:
        """Cash in/out (0x50/0x51) form an FN document. Off by default: they form none and move
        only the operating document number, as model.DOC_CASH says a device does [S]; on, they
        form one as the shared core can (tests of that path turn it on). The core keeps the
        setting (Device.cash_documents)."""
        return self.core.cash_documents

    @cash_documents.setter
    def cash_documents(self, value: bool) -> None:
        self.core.cash_documents = bool(value)

    def document_number(self) -> int:
        """The operating document number (0x11, 0x50): FN documents and cash-only ones, both
        counted in the saved state, so a power cut or a restart never takes it back."""
        s = self.core.state
        return (s.fd_number + s.cash_only_documents) & 0xFFFF

    # ------------------------------------------------------------------ status bytes

    def mode_byte(self) -> int:
        """[C] Low nibble the mode, high nibble the receipt type while a receipt is open."""
        r = self.core.state.receipt
        if r is not None:
            base = r.type if r.type in SHTRIH_RECEIPT else {v: k for k, v in CORRECTION_OF.items()}[r.type]
            return Mode.RECEIPT_OPEN | SHTRIH_RECEIPT[base] << 4
        return {"closed": Mode.SHIFT_CLOSED, "open": Mode.SHIFT_OPEN, "expired": Mode.SHIFT_EXPIRED}[
            self.core.shift_state()]

    def submode(self) -> int:
        """[C] Printing sub-mode from the paper and a print left pending by paper-out."""
        pending = self.core.state.print_pending
        if not self.core.paper:
            return Submode.PAPER_OUT_ACTIVE if pending else Submode.PAPER_OUT_PASSIVE
        return Submode.AFTER_PAPER_OUT if pending else Submode.IDLE

    def flags(self) -> int:
        """[C] Flags word: the paper sensor bit while there is paper."""
        return BASE_FLAGS | (PAPER_FLAGS if self.core.paper else 0)

    # ------------------------------------------------------------------ execution

    def execute(self, payload: bytes, before: Callable[[str], None] | None = None) -> bytes:
        """One command payload → its answer payload (success or error)."""
        try:
            cmd, password, params = commands.parse_request(payload)
        except KeyError:
            log.info("emulator: unknown command %s", payload[:2].hex(" "))
            code = ErrorCode.NOT_SUPPORTED
            # [S] opos: a device that does not know an FF sub-command answers "FF err".
            return bytes((0xFF, code)) if payload[:1] == b"\xff" else payload[:1] + bytes((code,))
        except CodecError as exc:
            log.info("emulator: malformed command: %s", exc)
            cmd = commands.lookup(payload)
            assert cmd is not None
            return cmd.encode_error(ErrorCode.BAD_PARAMETERS)
        with self.lock:
            if before is not None:
                before(cmd.name)
            try:
                self._check_password(cmd, password)
                handler = HANDLERS.get(cmd.name)
                if handler is None:
                    raise Fault(ErrorCode.NOT_SUPPORTED)
                if cmd.name in PRINTING and not self.core.paper:
                    raise Fault(ErrorCode.NO_PAPER)
                self.operation = cmd.name
                fields = handler(self, params)
                return cmd.encode_reply(**fields)
            except DeviceFault as fault:
                code = CORE_CODES.get(fault.code, ErrorCode.BAD_PARAMETERS)
                log.debug("emulator: %s → core 0x%02X → 0x%02X", cmd.name, fault.code, code)
                return cmd.encode_error(code)
            except Fault as fault:
                log.debug("emulator: %s → 0x%02X", cmd.name, fault.code)
                return cmd.encode_error(fault.code)

    def _check_password(self, cmd: Command, password: int | None) -> None:
        """[C] Passwords 1..30 are operators; 30 is accepted for every command, as on the device."""
        if password is None:
            return
        if not 1 <= password <= model.SYSADMIN_PASSWORD:
            raise Fault(ErrorCode.WRONG_PASSWORD)
        if cmd.name in ADMIN_ONLY and password < model.ADMIN_PASSWORD:
            raise Fault(ErrorCode.WRONG_PASSWORD)
        self.operator = password

    def shift_needed(self) -> None:
        """[U] A closed shift refuses receipts and cash with 0x3D ("shift not open", in every
        error table, §7); whether an FN-era Shtrih opens the shift itself, as ATOL does, is not
        known, so the emulator takes the stricter reading (the driver opens shifts anyway)."""
        if self.core.shift_state() == "closed":
            raise Fault(ErrorCode.SHIFT_CLOSED)

    def in_mode(self, mode: int) -> FiscalCore:
        """The core, put in the ATOL mode its next call checks."""
        self.core.state.mode = mode
        return self.core

    def fiscal_document(self, fd: int) -> dict[str, Any]:
        """A document of the core by number (Fault 0x08 when the FN has none)."""
        try:
            return self.core.document(fd)
        except DeviceFault:
            raise Fault(ErrorCode.FN_NO_DATA) from None


# --------------------------------------------------------------------------- handlers

_REG = core_model.Mode.REGISTRATION


@handles("short_status")
def _short_status(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    r = dev.state.receipt
    items = len(r.items) if r is not None else 0
    return {"operator": dev.operator, "flags": dev.flags(), "mode": dev.mode_byte(), "submode": dev.submode(),
            "items_low": items & 0xFF, "items_high": items >> 8, "battery": 0x9A, "voltage": 0xC8}


@handles("full_status")
def _full_status(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    s = dev.state
    now = dev.core.now()
    version, build, date = FIRMWARE
    return {
        "operator": dev.operator, "fw_version": version, "fw_build": build, "fw_date": date, "hall": 1,
        "document_number": dev.document_number(), "flags": dev.flags(), "mode": dev.mode_byte(),
        "submode": dev.submode(), "port": 0, "fp_version": version, "fp_build": build, "fp_date": date,
        "date": now.date(), "time": now.time(), "serial": int(s.serial) & 0xFFFFFFFF,
        "last_shift": s.shift_number - (1 if s.shift_open else 0), "free_records": 2000,
        "reregistrations": 1, "reregistrations_left": 29, "inn": 7700000000,
    }


@handles("device_type")
def _device_type(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    return {"type": 0, "subtype": 0, "protocol": PROTOCOL[0], "protocol_sub": PROTOCOL[1], "model": MODEL_CODE,
            "language": 0, "name": DEVICE_NAME}


@handles("money_register")
def _money_register(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    if p["register"] != model.REGISTER_CASH:
        return {"operator": dev.operator, "value": 0}
    return {"operator": dev.operator, "value": dev.state.cash}


@handles("print_string", "print_string_font", "cut")
def _print(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    if dev.state.print_pending:
        raise Fault(ErrorCode.WAITING_CONTINUE)
    dev.core.print_text(p.get("text", ""))
    return {"operator": dev.operator}


@handles("open_drawer")
def _open_drawer(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    if p["drawer"] > 1:
        raise Fault(ErrorCode.BAD_PARAMETERS)
    dev.core.drawer_openings += 1
    return {"operator": dev.operator}


@handles("continue_print")
def _continue(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    if not dev.state.print_pending:
        raise Fault(ErrorCode.WRONG_SUBMODE)
    dev.core.continue_print()
    return {"operator": dev.operator}


@handles("repeat_document")
def _repeat(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    dev.core.reprint_last()
    return {"operator": dev.operator}


@handles("begin_open_shift", "begin_close_shift", "begin_settlement_report")
def _begin_shift(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    if dev.state.receipt is not None:
        raise Fault(ErrorCode.RECEIPT_OPEN)
    return {}


@handles("open_shift")
def _open_shift(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    dev.in_mode(_REG).open_shift()
    return {"operator": dev.operator}


@handles("z_report")
def _z_report(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    dev.in_mode(core_model.Mode.REPORT_Z).close_shift()
    return {"operator": dev.operator}


@handles("x_report")
def _x_report(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    if dev.state.receipt is not None:
        raise Fault(ErrorCode.RECEIPT_OPEN)
    dev.in_mode(core_model.Mode.REPORT_X).x_report()
    return {"operator": dev.operator}


@handles("settlement_report")
def _settlement_report(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    """FF38: the core's settlement-state report (an FN document), open or closed shift alike."""
    if dev.state.receipt is not None:
        raise Fault(ErrorCode.RECEIPT_OPEN)
    doc = dev.in_mode(core_model.Mode.REPORT_X).settlement_report()
    first = dev.core.first_unsent
    when = dt.date.fromisoformat(dev.fiscal_document(first)["datetime"][:10]) if first else None
    return {"fd_number": doc["fd_number"], "fiscal_sign": int(doc["fiscal_sign"]), "unsent": dev.state.unsent,
            "first_unsent_date": when}


@handles("cash_in", "cash_out")
def _cash(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    dev.shift_needed()
    core = dev.in_mode(_REG)
    cash = core.cash_in if dev.operation == "cash_in" else core.cash_out
    cash(p["amount"])  # without an FN document the core counts it (state.cash_only_documents)
    return {"operator": dev.operator, "document_number": dev.document_number()}


@handles("open_receipt")
def _open_receipt(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    if p["receipt_type"] not in CORE_RECEIPT:
        raise Fault(ErrorCode.BAD_PARAMETERS)
    dev.shift_needed()
    dev.in_mode(_REG).open_receipt(CORE_RECEIPT[p["receipt_type"]])
    return {"operator": dev.operator}


def _add_item(dev: ShtrihDevice, name: str, price: int, quantity: Decimal, amount: int, vat: str,
              department: int, **tags: Any) -> None:
    if quantity <= 0 or department > model.MAX_DEPARTMENT:
        raise Fault(ErrorCode.BAD_PARAMETERS)
    computed = position_amount(price, quantity)
    diff = computed - amount
    extra = {key: value for key, value in tags.items() if value != ITEM_DEFAULTS.get(_TAG_OF[key])}
    dev.in_mode(_REG).add_position(name, price, quantity, vat, discount=abs(diff), markup=diff < 0,
                                   section=department, **extra)


_TAG_OF = {"payment_method": core_model.TAG_PAYMENT_METHOD, "payment_object": core_model.TAG_PAYMENT_OBJECT}


@handles("operation")
def _operation(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    vat = model.VAT_BY_TAX_CODE.get(p["tax"])
    if vat is None or p["operation_type"] not in RECEIPT_BY_OPERATION or not p["name"]:
        raise Fault(ErrorCode.BAD_PARAMETERS)
    amount = p["amount"]
    if amount == model.AUTO_SUM:
        amount = position_amount(p["price"], p["quantity"])
    elif abs(amount - position_amount(p["price"], p["quantity"])) > 1:
        # [C] the amount must be price × quantity within a kopeck (§4.5).
        raise Fault(ErrorCode.BAD_PARAMETERS)
    if dev.state.receipt is None:
        dev.shift_needed()
        dev.in_mode(_REG).open_receipt(CORE_RECEIPT[RECEIPT_BY_OPERATION[p["operation_type"]]])
    _add_item(dev, p["name"], p["price"], p["quantity"], amount, vat.value, p["department"],
              payment_method=p["payment_method"], payment_object=p["payment_object"])
    return {}


@handles("sale", "buy", "sale_return", "buy_return")
def _classic_item(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    op_type = {"sale": 1, "sale_return": 2, "buy": 3, "buy_return": 4}[dev.operation]
    vat = CLASSIC_TAX.get(p["tax1"], "none")
    if dev.state.receipt is None:
        dev.shift_needed()
        dev.in_mode(_REG).open_receipt(CORE_RECEIPT[RECEIPT_BY_OPERATION[op_type]])
    amount = position_amount(p["price"], p["quantity"])
    _add_item(dev, p["text"] or "Товар", p["price"], p["quantity"], amount, vat, p["department"])
    return {"operator": dev.operator}


def _write_tlvs(dev: ShtrihDevice, data: bytes, *, operation: bool) -> None:
    try:
        items = commands.parse_tlv(data)
    except CodecError:
        raise Fault(ErrorCode.FN_BAD_PARAMETER) from None
    core = dev.in_mode(_REG)
    r = dev.state.receipt
    for tag, value in items:
        if isinstance(value, dict):
            # A composite tag (1174: 1178 + 1179) is kept whole, as the shared core keeps the
            # ATOL E8 1174 (kktapp/atol/model.py): the core refuses its parts written alone.
            core.write_attribute(tag, {str(inner): _jsonable(v) for inner, v in value.items()})
            continue
        if tag == model.TAG_CORRECTION_TYPE and r is not None and r.type in CORRECTION_OF:
            r.type = CORRECTION_OF[r.type]
        if operation:
            # FF4D: bound to the last FF46 (§4.5).
            if r is None or not r.items:
                raise Fault(ErrorCode.RECEIPT_CLOSED)
            r.items[-1][ITEM_TAG_KEYS.get(tag, str(tag))] = _jsonable(value)
            continue
        if r is None and tag not in core_model.DOCUMENT_TAGS:
            raise Fault(ErrorCode.RECEIPT_CLOSED)
        core.write_attribute(tag, _jsonable(value))


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.date) else value


@handles("write_tlv")
def _write_tlv(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    _write_tlvs(dev, p["tlv"], operation=False)
    return {}


@handles("write_tlv_operation")
def _write_tlv_operation(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    _write_tlvs(dev, p["tlv"], operation=True)
    return {}


def _close(dev: ShtrihDevice, payments: dict[int, int]) -> dict[str, Any] | None:
    """Close with the given payments (core payment type → sum); a document formed while the
    paper ran out stays fiscalised with its print pending (submode 2)."""
    core = dev.in_mode(_REG)
    r = dev.state.receipt
    if r is None:
        raise Fault(ErrorCode.RECEIPT_CLOSED)
    if r.total == 0 and not r.test:
        raise Fault(ErrorCode.ZERO_TOTAL)
    if sum(payments.values()) < r.total:
        raise Fault(ErrorCode.PAYMENTS_LESS_THAN_TOTAL)
    *first, (last_type, last_amount) = list(payments.items()) or [(1, 0)]
    for pay_type, amount in first:
        core.payment(pay_type, amount)
    try:
        return core.close_receipt(last_type, last_amount)
    except DeviceFault as fault:
        if fault.committed:
            return core.document(dev.state.fd_number)
        r.payments.clear()  # refused: the receipt stays open without the payments
        raise


@handles("close_receipt_ext")
def _close_receipt_ext(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    payments: dict[int, int] = {}
    for slot in range(1, model.PAYMENT_SLOT_COUNT + 1):
        amount = p[f"payment{slot}"]
        if amount:
            payments[SLOT_PAYMENT[slot]] = payments.get(SLOT_PAYMENT[slot], 0) + amount
    if p["taxation"] and dev.state.receipt is not None:
        dev.state.receipt.attributes["1055"] = p["taxation"]
    doc = _close(dev, payments)
    change = doc.get("change", 0) if doc else 0
    return {"change": change or 0, "fd_number": doc["fd_number"] if doc else 0,
            "fiscal_sign": int(doc["fiscal_sign"]) if doc else 0,
            "datetime": dt.datetime.fromisoformat(doc["datetime"]) if doc else None}


@handles("close_receipt")
def _close_classic(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    payments = {CLASSIC_PAYMENT[k]: p[k] for k in CLASSIC_PAYMENT if p[k]}
    doc = _close(dev, payments)
    return {"operator": dev.operator, "change": (doc.get("change") or 0) if doc else 0}


@handles("cancel_receipt")
def _cancel(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    dev.in_mode(_REG).cancel_receipt()
    return {"operator": dev.operator}


@handles("fn_cancel_document")
def _fn_cancel(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    if dev.state.receipt is None:
        raise Fault(ErrorCode.FN_STATE)
    dev.in_mode(_REG).cancel_receipt()
    return {}


@handles("subtotal")
def _subtotal(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    r = dev.state.receipt
    if r is None:
        raise Fault(ErrorCode.RECEIPT_CLOSED)
    return {"operator": dev.operator, "subtotal": r.total}


@handles("fn_status")
def _fn_status(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    s = dev.state
    return {"phase": FN_PHASE_FISCAL, "document_type": 0x04 if s.receipt is not None else 0,
            "document_data": 0, "shift_open": int(s.shift_open), "warnings": 0,
            "datetime": dev.core.now(), "fn_number": s.fn_number, "last_fd_number": s.fd_number}


@handles("fn_expiry")
def _fn_expiry(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    return {"valid_until": dev.core.now().date() + dt.timedelta(days=365 * 3 // 2),
            "registrations_left": 29, "registrations_done": 1}


@handles("fn_shift")
def _fn_shift(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    s = dev.state
    return {"shift_open": int(s.shift_open), "shift_number": s.shift_number, "receipt_number": s.receipt_number}


@handles("ofd_status")
def _ofd_status(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    first = dev.core.first_unsent
    when = dt.datetime.fromisoformat(dev.fiscal_document(first)["datetime"]) if first else None
    return {"status": 0, "reading": 0, "unsent": dev.state.unsent, "first_unsent_number": first,
            "first_unsent_at": when}


#: Document log type → FF0A document type.
DOC_TYPES = {"open_shift": model.DOC_SHIFT_OPEN, "close_shift": model.DOC_SHIFT_CLOSE,
             "cash_in": model.DOC_CASH, "cash_out": model.DOC_CASH,
             "settlement_report": model.DOC_SETTLEMENT_REPORT}
#: FF0A operation type (1054) of a receipt by its settlement type.
OPERATION_OF = {t.value: model.OPERATION_TYPES[t] for t in SettlementType}


@handles("find_document")
def _find_document(dev: ShtrihDevice, p: dict[str, Any]) -> dict[str, Any]:
    doc = dev.fiscal_document(p["fd_number"])
    when = dt.datetime.fromisoformat(doc["datetime"])
    common = {"datetime": when, "fd_number": doc["fd_number"], "fiscal_sign": int(doc["fiscal_sign"])}
    if doc["type"] == "receipt":
        rtype = doc.get("receipt_type", "sell")
        doc_type = model.DOC_CORRECTION if "correction" in rtype else model.DOC_RECEIPT
        data = commands.encode_document(doc_type, **common, operation_type=OPERATION_OF[rtype], total=doc["total"])
    elif doc["type"] in ("cash_in", "cash_out"):
        doc_type = model.DOC_CASH
        data = commands.encode_document(doc_type, **common, operation_type=0, total=doc["total"])
    elif doc["type"] == "settlement_report":
        doc_type = model.DOC_SETTLEMENT_REPORT
        first = doc.get("first_unsent") or 0
        first_at = dt.datetime.fromisoformat(dev.fiscal_document(first)["datetime"]) if first else None
        data = commands.encode_document(doc_type, **common, unsent=doc.get("unsent", 0), first_unsent_at=first_at)
    else:
        doc_type = DOC_TYPES[doc["type"]]
        data = commands.encode_document(doc_type, **common, shift_number=doc["shift_number"])
    return {"doc_type": doc_type, "ticket": int(dev.state.unsent == 0), "data": data}
