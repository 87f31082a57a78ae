"""The emulated ATOL 55Ф itself: modes, passwords, shift, receipt and fiscal storage.

Pure state machine, no bytes and no sockets: the server decodes a command with the protocol
layer and calls one method here with plain values (kopecks, Decimal quantities, VatRate names);
a refused operation raises :class:`DeviceFault` with the device's error code, and the server
encodes it as the ``55 err ext`` reply. All methods must be called with :attr:`Device.lock` held
(the server executes one task at a time, the test API may poke at the same time).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ...domain import PaymentType, SettlementType, TaxationSystem, position_amount
from .. import commands, model
from ..errors import ErrorCode
from ..model import Mode
from .state import OpenReceipt, Store

log = logging.getLogger(__name__)

#: ATOL model code of the 55Ф (libfptr10 model list).
MODEL_CODE = 62
#: [U] The systems the emulated register is registered for (A4 43, 1055 bits): every current
#: one (ОСН, УСН доход, УСН доход − расход, ЕСХН, патент), as a registration may hold several,
#: so that any receipt's 1055 is taken unless a test narrows Device.tax_systems.
REGISTERED_TAX_SYSTEMS = sum(int(system) for system in TaxationSystem)
SHIFT_HOURS = 24
#: Operator number the system administrator works as (3F "cashier" byte); cashiers are 1..28.
ADMIN_OPERATOR = 29

#: Position attributes (model: E8 applies them to the last E6 position) → key in the log.
#: 1030 replaces the name E6 had to cut (model.LONG_NAME_BY_TAG1030).
POSITION_TAG_KEYS = {
    model.TAG_ITEM_NAME: "name",
    model.TAG_PAYMENT_OBJECT: "payment_object", model.TAG_PAYMENT_METHOD: "payment_method", model.TAG_UNIT: "unit",
}
#: Receipt type byte (92) → settlement type; payment type byte (99 / 4A) → payment type.
RECEIPT_TYPES = commands.SETTLEMENT_BY_RECEIPT_TYPE
PAYMENT_TYPES = commands.PAYMENT_TYPE_BY_CODE
#: Settlement types that bring money in (model.INCOME_SIGNS): their cash goes into the drawer
#: and their totals count as income in 58 and the non-resettable register; the others pay out.
CASH_INCOMING = frozenset(
    RECEIPT_TYPES[code] for code, sign in commands.TAG1054_BY_RECEIPT_TYPE.items() if sign in model.INCOME_SIGNS
)
#: Sub-mode of registration once a payment has been entered ("1.4", atol-protocol.md §2.1).
SUBMODE_PAYMENT = 4


class DeviceFault(Exception):
    """The device refuses (or half-completes) a command: ``code`` goes into ``55 code ext``.

    ``committed`` is true when the fiscal document was nevertheless formed (paper ran out while
    printing it), so recovery by last document number must find it.
    """

    def __init__(self, code: int, ext: int = 0, *, committed: bool = False) -> None:
        super().__init__(f"device error 0x{code:02X}")
        self.code = code
        self.ext = ext
        self.committed = committed


def fiscal_sign(serial: str, fd_number: int, when: str, total: int) -> str:
    """Deterministic stand-in for the FN's fiscal sign (ФПД): a 32-bit number, as the FN's is."""
    digest = hashlib.sha256(f"{serial}|{fd_number}|{when}|{total}".encode()).digest()
    return str(int.from_bytes(digest[:4], "big"))


def _quantity_text(qty: Decimal) -> str:
    """1, 0.5, 2.125 — no exponent, no trailing zeros (Decimal.normalize gives 1E+1 for 10)."""
    if qty == qty.to_integral_value():
        return str(int(qty))
    return format(qty.normalize(), "f")


class Device:
    """One ATOL 55Ф: state, paper, clock. Thread-safe only under :attr:`lock`."""

    def __init__(self, store: Store, serial: str, *, clock_offset_hours: float | None = None,
                 ffd: int = model.FFD_1_2, cash_documents: bool = False) -> None:
        self.lock = threading.RLock()
        #: Cash in/out (49/4F) form an FN document. Off as on an ATOL: the FN has no document type
        #: for them ([C] model.DocType.CASH_IN), so they move the drawer only. Off on the Shtrih
        #: emulator too (a Shtrih-M forms none either: kktapp/shtrih/model.py DOC_CASH); tests of
        #: the document path turn it on there (kktapp/shtrih/emulator/device.py).
        self.cash_documents = cash_documents
        #: Cash in/out run without an FN document, oldest first: what the device printed on its
        #: slip, kept in memory only so that tests can count them (documents() holds no such).
        self.cash_operations: list[dict[str, Any]] = []
        #: FFD version of the firmware and the FN (register 0x36): decides E6 or EA/EB.
        self.ffd = ffd
        #: A position begun with EA and not yet ended with EB: its E8 tags (model.py).
        self.position_tags: dict[str, Any] | None = None
        #: (command code, extended code) of the last 0xEE refusal (register 0x37).
        self.ext_error: tuple[int, int] = (0, 0)
        #: Report progress: (mode byte, monotonic end) phases after 5A / 67 (model.py).
        self.progress: list[tuple[int, float]] = []
        #: Seconds each report phase lasts (tests may shorten them).
        self.z_print_seconds = 0.15
        self.z_fn_seconds = 0.1
        self.x_print_seconds = 0.1
        #: TLVs of the document opened with A4 45 and how far A4 46 has read them.
        self.reading: tuple[bytes, int] | None = None
        self.store = store
        self.state, self._docs = store.load(serial)
        if not self.state.fn_number:
            # Derived from the serial so that two emulators never share an FN number.
            self.state.fn_number = ("9999" + serial[-12:]).rjust(16, "0")
            self.state.reg_number = ("00000" + serial[-11:]).rjust(16, "0")
        if clock_offset_hours is not None:
            self.state.clock_offset = float(clock_offset_hours) * 3600
            self.save()
        self.paper = True
        #: Times command 80 opened the cash drawer (tests read it; the flag in 3F follows it).
        self.drawer_openings = 0
        #: The paper-near-end sensor (45 flag 0x80); printing still works.
        self.paper_near_end = False
        #: Cashier tags written with no receipt open, for the next document (model.DOCUMENT_TAGS).
        self.pending_attributes: dict[str, Any] = {}
        #: The registration's taxation systems (A4 43); a receipt's 1055 must be one of them.
        self.tax_systems = REGISTERED_TAX_SYSTEMS
        #: Called with every fiscal document (the --log file and the in-memory list).
        self.on_document: Callable[[dict[str, Any]], None] | None = None
        self.power_cycle()
        if self.state.receipt is not None:
            # Restored from a clean stop: running again, the file must not keep it (see save).
            self.save()

    # ------------------------------------------------------------------ clock and state

    def now(self) -> dt.datetime:
        """Device clock: host clock plus the offset tests moved it by, to the second."""
        return (dt.datetime.now() + dt.timedelta(seconds=self.state.clock_offset)).replace(microsecond=0)

    def advance_clock(self, hours: float) -> None:
        """Move the device clock forward (or back) by ``hours``."""
        self.state.clock_offset += hours * 3600
        self.save()

    def shift_state(self) -> str:
        """"closed", "open" or "expired" (open for more than 24 hours of device time)."""
        s = self.state
        if not s.shift_open:
            return "closed"
        if s.shift_opened_at is not None:
            opened = dt.datetime.fromisoformat(s.shift_opened_at)
            if self.now() - opened > dt.timedelta(hours=SHIFT_HOURS):
                return "expired"
        return "open"

    def shift_opened_at(self) -> dt.datetime | None:
        """When the current shift was opened (device time), None when closed."""
        at = self.state.shift_opened_at
        return dt.datetime.fromisoformat(at) if at and self.state.shift_open else None

    def save(self) -> None:
        """Checkpoint the state while the device runs: everything but the open receipt.

        Called after every fiscal document and every change to cash, counters, clock or a
        pending print, but not after the commands that build an open receipt (92, E6, E8, 99,
        43, B8, 59), nor after mode changes: rewriting the file per position made a
        100-position receipt take ~15x longer than in memory and distorted every benchmark.
        So a *kill* of the emulator process loses the open receipt (and the mode and operator,
        which a restart resets anyway) and nothing else: the device comes back with the
        counters, cash and documents of its last document and no receipt, which is what the
        host's recovery sees as "receipt not fiscalised". The checkpoint never holds the open
        receipt, so it cannot bring back a stale copy of one either. A clean stop or power-off
        (:meth:`save_all`) keeps the receipt, as a real device keeps it in non-volatile memory.
        """
        self.store.save(dataclasses.replace(self.state, receipt=None, submode=0))

    def save_all(self) -> None:
        """Persist everything, the open receipt included (clean stop, power-off)."""
        self.store.save(self.state)

    def power_cycle(self) -> None:
        """What a restart keeps and loses.

        Model choice: the open receipt survives (a real ATOL keeps it in non-volatile memory and
        the host must cancel or finish it; recovery in atol-protocol.md §2.1 expects exactly
        that), so the device comes back in registration mode with it; otherwise it comes back
        in select mode. The print buffer is lost with the power, so a pending print stays
        pending until the host asks for it again.
        """
        s = self.state
        self.pending_attributes = {}
        self.position_tags = None
        self.progress = []
        self.reading = None
        if s.receipt is not None:
            s.mode, s.submode = Mode.REGISTRATION, (SUBMODE_PAYMENT if s.receipt.payments else 0)
        else:
            s.mode, s.submode, s.operator = 0, 0, 0

    @property
    def documents(self) -> list[dict[str, Any]]:
        """All fiscal documents in the FN, oldest first (a copy of the list)."""
        return list(self._docs)

    def document(self, fd_number: int) -> dict[str, Any]:
        """A past fiscal document by its number; 0xDA (no such data) when there is none."""
        if 1 <= fd_number <= len(self._docs) and self._docs[fd_number - 1].get("fd_number") == fd_number:
            return self._docs[fd_number - 1]
        for doc in self._docs:
            if doc.get("fd_number") == fd_number:
                return doc
        raise DeviceFault(ErrorCode.FN_NO_DATA)

    # ------------------------------------------------------------------ checks

    def check_access(self, password: int) -> None:
        """Every task starts with the access password (factory 0000)."""
        if password != model.ACCESS_PASSWORD:
            raise DeviceFault(ErrorCode.WRONG_PASSWORD)

    def _mode(self, *modes: int) -> None:
        if self.state.mode not in modes:
            raise DeviceFault(ErrorCode.WRONG_MODE)

    def _paper(self) -> None:
        if not self.paper:
            raise DeviceFault(ErrorCode.NO_PAPER)

    def _shift_usable(self) -> None:
        if self.shift_state() == "expired":
            raise DeviceFault(ErrorCode.SHIFT_EXPIRED)

    def _open_shift_if_closed(self) -> None:
        """92 and 4F open a closed shift themselves, forming the FN's shift-open report first
        ([S K] AtolFRBase names 92 and 4F "operations that open a shift";
        atol-real-device.md §6). [U] 49 does the same: K never sends 49 and no other source
        says; an ATOL host that opened no shift still gets its cash in."""
        if self.shift_state() == "closed":
            self._paper()
            self._start_shift()

    def refuse_extended(self, command: int, ext: int) -> DeviceFault:
        """Error 0xEE with ``ext`` kept for register 0x37 ([S K])."""
        self.ext_error = (command, ext)
        return DeviceFault(ErrorCode.FN_SEE_REGISTER_55)

    # ------------------------------------------------------------------ report progress

    def mode_byte(self) -> int:
        """3F/45 mode byte: a report's progress mode while one runs, else sub-mode << 4 | mode."""
        now = time.monotonic()
        while self.progress and self.progress[0][1] <= now:
            self.progress.pop(0)
        if self.progress:
            return self.progress[0][0]
        s = self.state
        return (s.submode & 0x0F) << 4 | (s.mode & 0x0F)

    def busy(self) -> bool:
        """A report is still printing or in the FN: only queries are answered ([C C,Z] poll)."""
        return self.mode_byte() in model.REPORT_PROGRESS_MODES

    def _report_progress(self, *phases: tuple[int, float]) -> None:
        end = time.monotonic()
        self.progress = []
        for mode, seconds in phases:
            end += seconds
            self.progress.append((mode, end))

    def _receipt(self) -> OpenReceipt:
        if self.state.receipt is None:
            raise DeviceFault(ErrorCode.RECEIPT_CLOSED)
        return self.state.receipt

    def _no_receipt(self) -> None:
        if self.state.receipt is not None:
            raise DeviceFault(ErrorCode.RECEIPT_OPEN)

    # ------------------------------------------------------------------ modes

    def enter_mode(self, mode: int, password: int) -> None:
        """Command 56: from select mode only; the password decides who is working."""
        if self.state.mode != 0:
            raise DeviceFault(ErrorCode.WRONG_MODE)
        if mode not in {m.value for m in Mode} or mode == Mode.SELECT:
            raise DeviceFault(ErrorCode.WRONG_MODE)
        if password in (model.SYSADMIN_PASSWORD, model.ADMIN_PASSWORD):
            operator = ADMIN_OPERATOR if password == model.SYSADMIN_PASSWORD else model.ADMIN_PASSWORD
        elif password in model.CASHIER_PASSWORDS and mode in model.CASHIER_MODES:
            operator = password
        else:
            raise DeviceFault(ErrorCode.WRONG_PASSWORD)
        if mode == Mode.REGISTRATION and self.shift_state() == "expired":
            # [S Z] entering the sale mode with a shift over 24 h is refused with 0x88.
            raise DeviceFault(ErrorCode.SHIFT_EXPIRED)
        s = self.state
        s.mode, s.submode, s.operator = mode, 0, operator

    def exit_mode(self) -> None:
        """Command 48: one level up (sub-mode → mode → select); not with a receipt open."""
        s = self.state
        self._no_receipt()
        if s.submode:
            s.submode = 0
        elif s.mode:
            s.mode, s.operator = 0, 0
        self.pending_attributes = {}

    # ------------------------------------------------------------------ fiscal documents

    def _commit(self, kind: str, total: int = 0, **extra: Any) -> dict[str, Any]:
        """Form one fiscal document: next FD number, fiscal sign, log line, state saved."""
        s = self.state
        s.fd_number += 1
        when = self.now().isoformat()
        doc: dict[str, Any] = {
            "fd_number": s.fd_number,
            "fiscal_sign": fiscal_sign(s.serial, s.fd_number, when, total),
            "type": kind,
        }
        doc.update({k: v for k, v in extra.items() if k == "receipt_type"})
        doc.update({
            "shift_number": s.shift_number,
            "receipt_number": s.receipt_number,
            "datetime": when,
            "total": total,
        })
        if self.pending_attributes:
            # The cashier written before a shift report or cash document (model.DOCUMENT_TAGS).
            extra["attributes"] = {**self.pending_attributes, **(extra.get("attributes") or {})}
            self.pending_attributes = {}
        doc.update({k: v for k, v in extra.items() if k != "receipt_type" and v not in (None, "")})
        s.last_document = s.fd_number
        self._docs.append(doc)
        # Document first, then the state that counts it (see state.py).
        self.store.append_document(doc)
        self.save()
        if self.on_document is not None:
            self.on_document(doc)
        log.info("emulator %s: FD %d %s total %d", s.serial, s.fd_number, kind, total)
        return doc

    def open_shift(self, test: bool = False) -> dict[str, Any] | None:
        """Command 9A (registration mode): report on opening the shift."""
        self._mode(Mode.REGISTRATION)
        self._no_receipt()
        if self.state.shift_open:
            raise DeviceFault(ErrorCode.SHIFT_OPEN)
        self._paper()
        if test:
            return None
        return self._start_shift()

    def _start_shift(self) -> dict[str, Any]:
        s = self.state
        s.shift_open = True
        s.shift_number += 1
        s.shift_opened_at = self.now().isoformat()
        s.receipt_number = 0
        s.shift_totals = {}
        return self._commit("open_shift", 0)

    def close_shift(self) -> dict[str, Any]:
        """Command 5A (Z mode): report on closing the shift; allowed for an expired shift."""
        self._mode(Mode.REPORT_Z)
        self._no_receipt()
        if not self.state.shift_open:
            raise DeviceFault(ErrorCode.ALREADY_CLOSED)
        self._paper()
        s = self.state
        s.shift_open = False
        s.shift_opened_at = None
        doc = self._commit("close_shift", 0, cash=s.cash)
        self._report_progress((model.Z_PRINTING_MODE, self.z_print_seconds), (model.Z_FN_MODE, self.z_fn_seconds))
        return doc

    def x_report(self) -> None:
        """Command 67 1 (X mode): prints only; no fiscal document."""
        self._mode(Mode.REPORT_X)
        self._paper()
        self._report_progress((model.X_PRINTING_MODE, self.x_print_seconds))

    def settlement_report(self) -> dict[str, Any]:
        """Command 67 9 (X mode): the FN's settlement-state report, a fiscal document
        ([S A] model.REPORT_SETTLEMENT_STATE), open or closed shift alike; printed like an X
        report ([U] its progress mode). It carries the documents the OFD has not confirmed."""
        self._mode(Mode.REPORT_X)
        self._paper()
        s = self.state
        doc = self._commit("settlement_report", 0, unsent=s.unsent, first_unsent=self.first_unsent)
        self._report_progress((model.X_PRINTING_MODE, self.x_print_seconds))
        return doc

    def open_receipt(self, receipt_type: int, test: bool = False, no_print: bool = False) -> None:
        """Command 92 (registration mode)."""
        self._mode(Mode.REGISTRATION)
        self._no_receipt()
        if receipt_type not in RECEIPT_TYPES:
            raise DeviceFault(ErrorCode.BAD_RECEIPT_TYPE)
        self._shift_usable()
        if not no_print:
            self._paper()
        if not test:
            self._open_shift_if_closed()  # [U] a test-mode receipt opens no shift
        self.position_tags = None
        self.state.receipt = OpenReceipt(type=receipt_type, test=test, no_print=no_print,
                                         attributes=self.pending_attributes)
        self.pending_attributes = {}
        self.state.submode = 0

    def add_position(
        self,
        name: str,
        price: int,
        quantity: Decimal,
        tax: str,
        *,
        discount: int = 0,
        markup: bool = False,
        section: int = 0,
        total: int | None = None,
        **attributes: Any,
    ) -> int:
        """Command E6: one position; returns its amount, kopecks: price × quantity ± discount
        (model.E6_DISCOUNT_ADJUSTS_SUM), or ``total`` when given (EB's sum).

        Paper running out here leaves the receipt open and the position unregistered. Like
        every command that builds the open receipt, it does not save (see :meth:`save`).
        """
        self._mode(Mode.REGISTRATION)
        r = self._receipt()
        if r.payments:
            # Positions after the first payment are not allowed (sub-mode 1.4 is payment entry).
            raise DeviceFault(ErrorCode.WRONG_MODE)
        self._shift_usable()
        if not r.no_print:
            self._paper()
        amount = position_amount(price, quantity)
        if total is None:
            amount = amount + discount if markup else amount - discount
        else:
            amount = total
        item: dict[str, Any] = {
            "name": name,
            "price": price,
            "quantity": _quantity_text(quantity),
            "amount": amount,
            "tax": tax,
        }
        if section:
            item["section"] = section
        item.update({k: v for k, v in attributes.items() if v not in (None, "")})
        r.items.append(item)
        return amount

    def write_attribute(self, tag: int, value: Any) -> None:
        """Command E8: an FFD attribute for the open receipt or the position being formed.

        FFD 1.05+ ([S K]): position tags only between EA and EB (else 0xEE/0x0207), receipt
        tags only outside (else 0xEE/0x0208), a receipt tag twice 0xEE/0x0201. FFD 1.0: a
        position tag applies to the last E6 position. With no receipt open, only the cashier
        (1021, 1203) is taken, in mode 1 or 3, for the next document (model.DOCUMENT_TAGS).
        """
        self._mode(*model.ATTRIBUTE_MODES)
        r = self.state.receipt
        if r is None:
            if tag not in model.DOCUMENT_TAGS:
                raise DeviceFault(ErrorCode.RECEIPT_CLOSED)
            self.pending_attributes[str(tag)] = value
            return
        if tag in model.CORRECTION_BASIS_TAGS:
            # [U] 1177..1179 exist only inside 1174 (model.py, correction receipts).
            raise DeviceFault(ErrorCode.BAD_FORMAT)
        if tag == model.TAG_TAXATION and not self._registered_taxation(value):
            # [U] K's "Некорректная СНО" for a system outside the registration (model.py).
            raise self.refuse_extended(0xE8, model.EXT_BAD_TAXATION)
        position = tag in model.POSITION_TAGS
        if self.ffd >= model.FIRST_EA_EB_FFD:
            if position and self.position_tags is None:
                raise self.refuse_extended(0xE8, model.EXT_NO_POSITION_STARTED)
            if not position and self.position_tags is not None:
                raise self.refuse_extended(0xE8, model.EXT_POSITION_STARTED)
            if position:
                assert self.position_tags is not None
                self.position_tags[POSITION_TAG_KEYS[tag]] = value
                return
            if str(tag) in r.attributes:
                raise self.refuse_extended(0xE8, model.EXT_ATTRIBUTE_REPEATED)
            r.attributes[str(tag)] = value
            return
        if position and r.items:
            if tag == model.TAG_ITEM_NAME:
                log.info("emulator %s: position %d full name (1030): %s", self.state.serial, len(r.items), value)
            r.items[-1][POSITION_TAG_KEYS[tag]] = value
        else:
            r.attributes[str(tag)] = value

    def _registered_taxation(self, value: Any) -> bool:
        """1055 is one bit, and a bit of the registration (A4 43)."""
        return isinstance(value, int) and value > 0 and value & (value - 1) == 0 and bool(value & self.tax_systems)

    def begin_position(self) -> None:
        """Command EA (FFD 1.05+): start a position; its tags follow, EB ends it."""
        self._mode(Mode.REGISTRATION)
        r = self._receipt()
        if r.payments:
            raise DeviceFault(ErrorCode.WRONG_MODE)
        self.position_tags = {}

    def end_position(self, name: str, price: int, quantity: Decimal, total: int, tax: str, *,
                     discount: int = 0, section: int = 0, payment_object: int = 1, payment_method: int = 4,
                     check_cash: bool = False) -> int:
        """Command EB (FFD 1.05+): the position begun with EA; returns its amount.

        The position total is ``total``, EB's sum ([C C,K,Z], model.EB_SUM_IS_POSITION_TOTAL);
        its difference to price × quantity is printed as a discount (below) or a markup
        (above, [U]). ``discount`` is EB's "информация о скидке", print-only, and taken only with
        sum = price × quantity, as C sends it. ``check_cash`` (EB without flag 0x02, [S C]): on
        a receipt that pays out, the receipt with this position may not exceed the drawer.
        """
        if self.position_tags is None:
            raise self.refuse_extended(0xEB, model.EXT_NO_POSITION_STARTED)
        tags = self.position_tags
        gross = position_amount(price, quantity)
        if discount and total != gross:
            raise DeviceFault(ErrorCode.BAD_PRICE)
        r = self._receipt()
        if check_cash and RECEIPT_TYPES[r.type] not in CASH_INCOMING and r.total + total > self.state.cash:
            raise DeviceFault(ErrorCode.NO_CASH)
        printed = {"discount": gross - total} if total < gross else {"markup": total - gross} if total > gross else {}
        amount = self.add_position(name, price, quantity, tax, section=section, total=total, **tags)
        item = self._receipt().items[-1]
        item.update(printed)
        if payment_object != model.POSITION_TAG_DEFAULTS[model.TAG_PAYMENT_OBJECT]:
            item["payment_object"] = payment_object
        if payment_method != model.POSITION_TAG_DEFAULTS[model.TAG_PAYMENT_METHOD]:
            item["payment_method"] = payment_method
        self.position_tags = None
        return amount

    def receipt_discount(self, amount: int) -> None:
        """Command 43: discount on the whole receipt (kopecks)."""
        self._mode(Mode.REGISTRATION)
        r = self._receipt()
        r.discount += amount

    def receipt_tax(self, tax: str, amount: int) -> None:
        """Command B8: receipt-level tax sum, recorded as given."""
        self._mode(Mode.REGISTRATION)
        r = self._receipt()
        r.taxes.append({"tax": tax, "amount": amount})

    def payment(self, pay_type: int, amount: int) -> tuple[int, int]:
        """Command 99: returns (remainder still due, change), kopecks."""
        self._mode(Mode.REGISTRATION)
        r = self._receipt()
        if pay_type not in PAYMENT_TYPES:
            raise DeviceFault(ErrorCode.BAD_PAYMENT_TYPE)
        r.payments.append({"type": PAYMENT_TYPES[pay_type].value, "amount": amount})
        self.state.submode = SUBMODE_PAYMENT
        return max(0, r.total - r.paid), max(0, r.paid - r.total)

    def storno_payment(self, pay_type: int, amount: int) -> tuple[int, int]:
        """Command 9B: take back (part of) a payment of this type."""
        self._mode(Mode.REGISTRATION)
        r = self._receipt()
        if pay_type not in PAYMENT_TYPES:
            raise DeviceFault(ErrorCode.BAD_PAYMENT_TYPE)
        name = PAYMENT_TYPES[pay_type].value
        if sum(p["amount"] for p in r.payments if p["type"] == name) < amount:
            raise DeviceFault(ErrorCode.PAYMENTS_LESS_THAN_TOTAL)
        r.payments.append({"type": name, "amount": -amount})
        return max(0, r.total - r.paid), max(0, r.paid - r.total)

    def close_receipt(self, pay_type: int = 1, amount: int = 0) -> dict[str, Any] | None:
        """Command 4A: optional last payment (0 = the rest by ``pay_type``), then the document.

        Paper-out model: the document IS fiscalised, then printing fails, so the reply is 0x67
        with the print pending (DeviceFault with ``committed``). Test-mode receipts check
        everything and fiscalise nothing. Returns the document (None in test mode).
        """
        self._mode(Mode.REGISTRATION)
        r = self._receipt()
        self._shift_usable()
        if pay_type not in PAYMENT_TYPES:
            raise DeviceFault(ErrorCode.BAD_PAYMENT_TYPE)
        if r.type in commands.CORRECTION_RECEIPT_TYPES and not {
                str(model.TAG_CORRECTION_TYPE), str(model.TAG_CORRECTION_BASIS)} <= set(r.attributes):
            # [U] a correction receipt needs its type (1173) and basis (1174), model.py.
            raise DeviceFault(ErrorCode.BAD_FORMAT)
        total = r.total
        payments = [dict(p) for p in r.payments]
        if amount:
            payments.append({"type": PAYMENT_TYPES[pay_type].value, "amount": amount})
        elif sum(p["amount"] for p in payments) < total:
            rest = total - sum(p["amount"] for p in payments)
            payments.append({"type": PAYMENT_TYPES[pay_type].value, "amount": rest})
        paid = sum(p["amount"] for p in payments)
        if paid < total:
            raise DeviceFault(ErrorCode.PAYMENTS_LESS_THAN_TOTAL)
        s = self.state
        rtype = RECEIPT_TYPES[r.type]
        merged: dict[str, int] = {}
        for p in payments:
            merged[p["type"]] = merged.get(p["type"], 0) + p["amount"]
        payments = [{"type": t, "amount": a} for t, a in merged.items() if a]
        change = paid - total
        cash_net = merged.get(PaymentType.CASH.value, 0) - change
        if rtype not in CASH_INCOMING and cash_net > s.cash:
            # Cash control, as the device does: a cash return or purchase cannot pay out more
            # than the drawer holds (error 0x98). The receipt stays open.
            raise DeviceFault(ErrorCode.NO_CASH)
        s.receipt = None
        s.submode = 0
        if r.test:
            return None
        s.cash += cash_net if rtype in CASH_INCOMING else -cash_net
        s.receipt_number += 1
        s.shift_totals[rtype.value] = s.shift_totals.get(rtype.value, 0) + total
        s.grand_totals[rtype.value] = s.grand_totals.get(rtype.value, 0) + total
        contact_key = str(model.TAG_CUSTOMER_CONTACT)
        contact = r.attributes.get(contact_key, "")
        extra_attrs = {k: v for k, v in r.attributes.items() if k != contact_key}
        doc = self._commit(
            "receipt", total, receipt_type=rtype.value, items=r.items, payments=payments,
            change=change or None, customer_contact=contact, attributes=extra_attrs or None,
            electronic=True if r.no_print else None,
        )
        if not r.no_print and not self.paper:
            s.print_pending = True
            self.save()
            raise DeviceFault(ErrorCode.NO_PAPER, committed=True)
        return doc

    def cancel_receipt(self) -> None:
        """Command 59: annul the open receipt; nothing is fiscalised."""
        self._mode(Mode.REGISTRATION)
        self._receipt()
        self.state.receipt = None
        self.state.submode = 0
        self.position_tags = None

    # ------------------------------------------------------------------ earnings

    @staticmethod
    def _income_outcome(totals: dict[str, int]) -> tuple[int, int]:
        income = sum(v for k, v in totals.items() if SettlementType(k) in CASH_INCOMING)
        return income, sum(totals.values()) - income

    def last_shift_totals(self) -> tuple[int, int]:
        """Command 58: (income, outcome) of the open shift, or of the last one when closed.

        The shift counters are cleared when a shift opens, not by the Z report, so after
        closing they still hold the shift just closed (model.py, "earnings").
        """
        return self._income_outcome(self.state.shift_totals)

    def non_resettable_totals(self) -> tuple[int, int]:
        """Register 12: (income, outcome) over the device's life; nothing clears them."""
        return self._income_outcome(self.state.grand_totals)

    def cash_in(self, amount: int) -> dict[str, Any] | None:
        """Command 49 (registration mode): внесение. Returns the FN document, or None when cash
        operations form none (:attr:`cash_documents`, off on an ATOL)."""
        self._mode(Mode.REGISTRATION)
        self._no_receipt()
        self._shift_usable()
        self._paper()
        self._open_shift_if_closed()
        self.state.cash += amount
        return self._cash_operation("cash_in", amount)

    def cash_out(self, amount: int) -> dict[str, Any] | None:
        """Command 4F (registration mode): выплата; refused beyond the cash in the drawer."""
        self._mode(Mode.REGISTRATION)
        self._no_receipt()
        self._shift_usable()
        if amount > self.state.cash:
            raise DeviceFault(ErrorCode.NO_CASH)
        self._paper()
        self._open_shift_if_closed()
        self.state.cash -= amount
        return self._cash_operation("cash_out", amount)

    def _cash_operation(self, kind: str, amount: int) -> dict[str, Any] | None:
        """After the drawer moved: the FN document when this device forms one, else only the
        drawer, saved, with no FD number, no entry in the FN's documents (A4 45/46, 0x33) and
        none in the document log ([C] model.DocType.CASH_IN)."""
        if self.cash_documents:
            return self._commit(kind, amount)
        s = self.state
        # [U] The cashier written before 49/4F (model.DOCUMENT_TAGS) belongs to this operation's
        # slip; it must not land on a later shift report.
        self.pending_attributes = {}
        self.cash_operations.append({"type": kind, "total": amount, "shift_number": s.shift_number,
                                     "datetime": self.now().isoformat()})
        s.cash_only_documents += 1  # saved in the same write as the drawer
        self.save()
        log.info("emulator %s: %s %d, no FN document, drawer %d", s.serial, kind, amount, s.cash)
        return None

    def last_sale(self) -> dict[str, Any] | None:
        """The last receipt document in the FN (register 0x33), None before the first."""
        for doc in reversed(self._docs):
            if doc.get("type") == "receipt":
                return doc
        return None

    # ------------------------------------------------------------------ printing

    def print_text(self, text: str = "") -> None:
        """Print a line of text (non-fiscal); only needs paper."""
        self._paper()

    def reprint_last(self) -> dict[str, Any]:
        """Command 95: print the last document again (also finishes a print left pending)."""
        if not self.state.last_document:
            raise DeviceFault(ErrorCode.NO_DOCUMENT)
        self._paper()
        self.state.print_pending = False
        self.save()
        return self.document(self.state.last_document)

    def clear_last(self) -> None:
        """Command 97: empty the last-document buffer."""
        self.state.last_document = 0
        self.save()

    def continue_print(self) -> None:
        """Finish printing a document interrupted by paper-out (no-op when nothing pends)."""
        if self.state.print_pending:
            self._paper()
            self.state.print_pending = False
            self.save()

    def service_reset(self, clear_totals: bool) -> None:
        """Service commands (6B, 71, 77; the mode is checked by the caller): only with the
        shift closed; general clearing (77) also zeroes the cash and the shift counters, but
        not the non-resettable totals: that they survive it is what their name says."""
        self._no_receipt()
        if self.state.shift_open:
            raise DeviceFault(ErrorCode.SHIFT_OPEN)
        s = self.state
        s.print_pending = False
        if clear_totals:
            s.cash = 0
            s.shift_totals = {}
        self.save()

    # ------------------------------------------------------------------ test hooks

    def set_unsent(self, count: int) -> None:
        """Pretend ``count`` documents wait for the OFD."""
        self.state.unsent = max(0, int(count))
        self.save()

    @property
    def first_unsent(self) -> int:
        """Number of the oldest document the OFD has not confirmed (0 when none)."""
        s = self.state
        return max(1, s.fd_number - s.unsent + 1) if s.unsent else 0
