"""Shtrih-M driver: :class:`kktapp.device.Driver` over protocol v1, one command at a time.

A receipt is 0x8D (open, as opos does), FF46 per position (FF4D for its unit), FF0C for the
cashier, the buyer's contact and correction tags, FF45 to close; the classic 0x80-0x83/0x85
path is used only when the device answers FF46 with 0x37, as javapos does (§4.5). After
printing commands and the Z report the driver polls 0x10 as the vendor drivers do (§6):
submode 3 gets 0xB0, submode 1/2 is "no paper".

Exactly once: a lost answer raises LinkError and the service settles the outcome with
:meth:`ShtrihDriver.last_document`: FF01 (last FD number) and FF0A (that document), with the
answer the device kept (re-read with ENQ on reconnect, :attr:`Link.kept`) as a cross-check.
FF45/FF46/0x8D/0x50/0x51 are never resent blindly (opos CanRepeatCommand).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from ..atol.link import LinkStats
from ..device import DeviceInfo, DeviceStatus, FnStatus, LastDocument, QuickStatus, ShiftStatus, Totals
from ..domain import FiscalResult, PaymentType, Position, Receipt, TextLine, VatRate, position_amount
from ..errors import CashOutcomeUnknown, DeviceError, FrameError, KKTError, LinkError, NotThisReceipt, drawer_after
from . import commands, model
from .commands import CodecError
from .errors import ErrorCode, device_error
from .link import Link
from .model import Mode, Submode

log = logging.getLogger(__name__)

#: [C] Classic 0x80 tax groups are table-6 rows 1-4 (opos, pyshtrih).
_CLASSIC_TAX = {VatRate.VAT20: 1, VatRate.VAT10: 2, VatRate.VAT0: 3, VatRate.NONE: 4}
#: Classic item command per FF46 operation type (1054).
_CLASSIC_ITEM = {1: "sale", 2: "sale_return", 3: "buy", 4: "buy_return"}
#: [C] 0x85 has four payment sums: cash, then types 2-4 [U: electronic in the second].
_CLASSIC_PAY = {PaymentType.CASH: "cash", PaymentType.ELECTRONIC: "pay2", PaymentType.PREPAID: "pay3",
                PaymentType.CREDIT: "pay4", PaymentType.OTHER: "pay4"}
#: Mode-8 receipt type (high nibble) → the DeviceStatus receipt_state (ATOL numbering:
#: 1 sell, 2 sell return, 4 buy, 5 buy return) so the service reads both families alike.
_RECEIPT_STATE = {0: 1, 1: 4, 2: 2, 3: 5}
#: The operating document number (0x11, 0x50) is 2 bytes [C]: it counts modulo this.
DOCUMENT_NUMBERS = 0x10000


class CashBefore(NamedTuple):
    """What a lost cash in/out answer is judged against: 0x11's operating document number and
    the cash in the drawer (0x1A, model.REGISTER_CASH) read before the job was sent.

    The owner keeps one integer per job (the journal's ``fd_before``), so both travel packed:
    ``drawer << 17 | 1 << 16 | number``. Bit 16 marks a value with the drawer; a "before"
    written by a version that kept the number alone (below 0x10000) decodes with ``drawer``
    None and is settled by the number alone, as it was. A drawer too large for the journal's
    64-bit integer (over 2**46 kopecks, no real till) is left out the same way.
    """

    number: int
    drawer: int | None

    def encode(self) -> int:
        if self.drawer is None or not 0 <= self.drawer < 1 << 46:
            return self.number % DOCUMENT_NUMBERS
        return self.drawer << 17 | _WITH_DRAWER | self.number % DOCUMENT_NUMBERS

    @classmethod
    def decode(cls, value: int) -> CashBefore:
        return cls(value % DOCUMENT_NUMBERS, value >> 17 if value & _WITH_DRAWER else None)


_WITH_DRAWER = 1 << 16


def _password(value: str | int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"password must be digits, got {value!r}") from None


class ShtrihDriver:
    """A connected Shtrih-M cash register. Not thread-safe: one owner at a time."""

    #: What a document may hold (every value fits the commands): checked before journalling.
    limits = commands.LIMITS

    def __init__(self, url: str, *, password: str | int = model.SYSADMIN_PASSWORD,
                 admin_password: str | int = model.SYSADMIN_PASSWORD, baudrate: int = 115200,
                 timeout: float | None = None) -> None:
        self.url = url
        self.password = _password(password)
        self.admin_password = _password(admin_password)
        #: Cap on every answer timeout (tests with a fault-injecting emulator use a short one).
        self.timeout = timeout
        self.stats = LinkStats()
        self._link = Link(url, baudrate=baudrate, stats=self.stats)
        #: FF46 refused with 0x37 on this connection: items go by 0x80-0x83 and 0x85.
        self._classic = False
        #: Last FD number and FN number seen on this connection (see _fn_last).
        self._fn: dict[str, Any] | None = None
        self._info: DeviceInfo | None = None

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """True while the link is believed to be up."""
        return self._link.is_open

    def connect(self) -> None:
        """Open the link and take any answer the device kept (ENQ); an open receipt is left
        for the service's recovery to decide."""
        self._fn = None
        self.open_link()
        try:
            st = self.status()
        except KKTError:
            self._link.close()
            raise
        log.info("connected to %s: mode %d.%d, shift %s, receipt %s", self.url, st.mode, st.submode,
                 "open" if st.shift_open else "closed", st.receipt_state or "none")

    def open_link(self) -> None:
        """Open the link and do the ENQ handshake only (the probe: nothing else is sent)."""
        self._link.open()
        try:
            self._link.ready()
        except KKTError:
            self._link.close()
            raise

    def close(self) -> None:
        """Close the link (idempotent)."""
        self._link.close()
        self._info = None
        self._classic = False
        self._fn = None

    def __enter__(self) -> ShtrihDriver:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ commands

    def command(self, name: str, /, *, step: str = "", admin: bool = False, **params: Any) -> dict[str, Any]:
        """Run one command by its name in :data:`.commands.COMMANDS`; DeviceError names ``step``.

        0x50 ("printing the previous command") and 0x58 ("waiting for 0xB0") mean the device
        did not execute it: wait, or send 0xB0, and send it again (e-kiosk processAnswer) [C].
        """
        cmd = commands.get(name)
        if not self._link.is_open:
            raise LinkError("нет связи с ККТ (не подключена)")
        password = self.admin_password if admin else self.password
        try:
            payload = cmd.encode(password if cmd.password else None, **params)
        except CodecError as exc:
            raise ValueError(f"{step or cmd.title}: {exc}") from exc
        timeout = cmd.answer_timeout if self.timeout is None else min(self.timeout, cmd.answer_timeout)
        for _ in range(model.BUSY_RETRIES):
            answer = self._link.exchange(payload, timeout, cmd.name)
            try:
                code = cmd.error_code(answer)
                if code == ErrorCode.PRINTING_PREVIOUS:
                    time.sleep(model.BUSY_RETRY_PAUSE)
                    continue
                if code == ErrorCode.WAITING_CONTINUE and name != "continue_print":
                    self.command("continue_print", admin=True)
                    continue
                return cmd.decode_reply(answer, step=step)
            except CodecError as exc:
                self._link.close()
                raise FrameError(f"непонятный ответ ККТ на «{step or cmd.title}»: {exc}") from exc
        raise device_error(ErrorCode.PRINTING_PREVIOUS, step=step or cmd.title, command=cmd.code)

    def _short(self) -> dict[str, Any]:
        return self.command("short_status")

    def wait_printing(self, *, report: bool = False, step: str = "печать") -> None:
        """Poll 0x10 until the printer is idle (opos WaitForPrinting, pyshtrih wait_printing) [C].

        Submode 1/2 raise "no paper"; submode 3 gets 0xB0 (at most 3 times); 4/5, and the
        report modes, keep waiting. ``report``: a Z report, where mode 1/11/12 mean busy too.
        """
        deadline = time.monotonic() + (model.Z_WAIT if report else model.PRINT_WAIT)
        continued = 0
        while True:
            st = self._short()
            mode, submode = st["mode"] & 0x0F, st["submode"]
            if submode in (Submode.PAPER_OUT_PASSIVE, Submode.PAPER_OUT_ACTIVE):
                raise device_error(ErrorCode.NO_PAPER, step=step)
            if submode == Submode.AFTER_PAPER_OUT:
                if continued >= model.CONTINUE_ATTEMPTS:
                    raise device_error(ErrorCode.WAITING_CONTINUE, step=step)
                continued += 1
                self.command("continue_print", admin=True)
                continue
            busy = submode in (Submode.PRINTING_REPORT, Submode.PRINTING) or mode in model.REPORT_MODES
            if report and mode == Mode.DUMP:
                busy = True
            if not busy:
                return
            if time.monotonic() > deadline:
                raise LinkError(f"ККТ не закончила печать ({step})")
            time.sleep(model.PRINT_POLL)

    # ------------------------------------------------------------------ queries

    def quick_status(self) -> QuickStatus:
        """The status itself: 0x11 is already one command."""
        return QuickStatus.of(self.status())

    def status(self) -> DeviceStatus:
        """0x11 (and 0x89 for the sum while a receipt is open)."""
        st = self.command("full_status")
        mode, submode = st["mode"] & 0x0F, st["submode"]
        receipt_state = _RECEIPT_STATE.get(st["mode"] >> 4, 1) if mode == Mode.RECEIPT_OPEN else 0
        receipt_sum = self.command("subtotal")["subtotal"] if receipt_state else 0
        date, time_ = st["date"], st["time"]
        when = (dt.datetime.combine(date, time_ or dt.time()) if date
                else dt.datetime.now().replace(microsecond=0))
        flags = st["flags"]
        shift_open = mode in (Mode.SHIFT_OPEN, Mode.SHIFT_EXPIRED, Mode.RECEIPT_OPEN)
        return DeviceStatus(
            datetime=when,
            serial=str(st["serial"]),
            model_code=self._info.model_code if self._info else 0,
            mode=mode,
            submode=submode,
            # [U] 0x11 has no "fiscal" flag we trust; the FN phase says it (fn_status).
            fiscal=True,
            shift_open=shift_open,
            shift_number=st["last_shift"] + (1 if shift_open else 0),
            receipt_number=st["document_number"],
            receipt_state=receipt_state,
            receipt_sum=receipt_sum,
            # [C] paper: the submode. Not the roll bit: real devices with paper answer flags
            # 0x0090 (javapos #68, fr_drv_ng #72 logs), bit 1 clear.
            paper_present=submode not in (Submode.PAPER_OUT_PASSIVE, Submode.PAPER_OUT_ACTIVE),
            cover_open=bool(flags & model.FLAG_COVER_OPEN),
            drawer_open=bool(flags & model.FLAG_DRAWER_OPEN),
            fn_active=True,
            printer_error=False,
        )

    def device_info(self) -> DeviceInfo:
        """0xFC (type, model, name) and 0x11 (firmware, serial)."""
        info = self.command("device_type")
        st = self.command("full_status")
        self._info = DeviceInfo(
            model_code=info["model"],
            model_name=info["name"] or f"Штрих-М {info['model']}",
            firmware=f"{st['fw_version']} build {st['fw_build']}",
            serial=str(st["serial"]),
            protocol=info["protocol"],
        )
        return self._info

    def shift_status(self) -> ShiftStatus:
        """FF40 (number, receipts) and the mode byte (3 = over 24 h)."""
        fn = self.command("fn_shift", admin=True)
        mode = self._short()["mode"] & 0x0F
        if not fn["shift_open"]:
            state = "closed"
        else:
            state = "expired" if mode == Mode.SHIFT_EXPIRED else "open"
        return ShiftStatus(state=state, number=fn["shift_number"], receipts=fn["receipt_number"])

    def fn_status(self) -> FnStatus:
        """FF01, FF39, FF03."""
        fn = self.command("fn_status", admin=True)
        ofd = self.command("ofd_status", admin=True)
        expiry = self.command("fn_expiry", admin=True)
        return FnStatus(
            fn_number=fn["fn_number"],
            last_fd_number=fn["last_fd_number"],
            unsent_count=ofd["unsent"],
            first_unsent_number=ofd["first_unsent_number"],
            first_unsent_at=ofd["first_unsent_at"],
            valid_until=expiry["valid_until"],
            warnings=fn["warnings"],
            phase=fn["phase"],
        )

    def totals(self) -> Totals:
        """Cash in the drawer (0x1A, model.REGISTER_CASH); earnings are not read on Shtrih-M."""
        cash = self.command("money_register", register=model.REGISTER_CASH)["value"]
        return Totals(cash_in_drawer=cash)

    def _document(self, fd: int, fn_number: str, *, printed: bool = True) -> tuple[FiscalResult, int, int]:
        """(result, document type, operation type) of FD ``fd`` from FF0A and FF40."""
        found = self.command("find_document", admin=True, fd_number=fd)
        doc_type = found["doc_type"]
        try:
            doc = commands.decode_document(doc_type, found["data"])
        except CodecError as exc:
            raise FrameError(f"непонятный документ ФН {fd}: {exc}") from exc
        shift = self.command("fn_shift", admin=True)
        is_receipt = doc_type in (*model.RECEIPT_DOC_TYPES,)
        result = FiscalResult(
            fiscal_document_number=doc["fd_number"] or fd,
            fiscal_sign=str(doc["fiscal_sign"]),
            # [U] FF40 counts receipts of the current shift: the last one is this receipt.
            receipt_number=shift["receipt_number"] if is_receipt else 0,
            shift_number=doc.get("shift_number") or shift["shift_number"],
            datetime=doc["datetime"] or dt.datetime.now().replace(second=0, microsecond=0),
            total=doc.get("total", 0),
            fn_number=fn_number,
            printed=printed,
        )
        return result, doc_type, doc.get("operation_type", 0)

    def last_document(self) -> LastDocument:
        """FF01 (last FD), 0x10 and FF0A of that document.

        A receipt is open when the mode is 8 or the FN has a document open (FF01's "current
        document" byte, opos FSReadState): which of the two a device shows right after 0x8D is
        not known, so either counts.
        """
        fn = self._fn_last()
        mode = self._short()["mode"]
        fd = fn["last_fd_number"]
        extra: dict[str, Any] = {"mode": mode, "fn_document": fn["document_type"]}
        result = None
        if fd:
            try:
                result, doc_type, op = self._document(fd, fn["fn_number"])
            except DeviceError as exc:
                if exc.code != ErrorCode.FN_NO_DATA:
                    raise
                log.warning("FN has no data for its own last document %d", fd)
            else:
                extra.update(doc_type=doc_type, operation_type=op)
                self._check_kept(result)
        receipt_open = mode & 0x0F == Mode.RECEIPT_OPEN or fn["document_type"] != 0
        return LastDocument(fd_number=fd, receipt_open=receipt_open, result=result, extra=extra)

    def receipt_document(self, fd_number: int, receipt: Receipt) -> FiscalResult:
        """FD ``fd_number`` read from the FN (FF0A) when it is ``receipt``'s document: a receipt of
        the same operation type (1054) and total. FF0A keeps no receipt or shift number, and FF40
        counts only the current shift's receipts, so both are 0 unless the document is the FN's
        last (the numbers :meth:`_document` takes for it everywhere else).

        Raises NotThisReceipt saying why when the FN has no such document or it is another one.
        """
        fn = self._fn_last()
        last = fn["last_fd_number"]
        if fd_number > last:
            raise NotThisReceipt.missing(fd_number, last)
        try:
            result, doc_type, op = self._document(fd_number, fn["fn_number"])
        except DeviceError as exc:
            if exc.code != ErrorCode.FN_NO_DATA:
                raise
            raise NotThisReceipt.unreadable(fd_number, exc.message) from None
        if doc_type not in model.RECEIPT_DOC_TYPES:
            raise NotThisReceipt.not_a_receipt(fd_number, doc_type)
        sign = model.OPERATION_TYPES[receipt.type]
        if (op, result.total) != (sign, receipt.total):
            raise NotThisReceipt.another(fd_number, result.total, op, receipt.total, sign)
        if fd_number != last:
            result = dataclasses.replace(result, receipt_number=0, shift_number=0)
        return result

    def _check_kept(self, result: FiscalResult) -> None:
        """Compare an FF45 answer the device kept (re-read by ENQ) with the FN's document."""
        close = commands.get("close_receipt_ext")
        while self._link.kept:
            answer = self._link.kept.pop(0)
            if not answer.startswith(close.prefix):
                continue
            try:
                kept = close.decode_reply(answer)
            except (DeviceError, CodecError):
                continue
            if kept["fd_number"] == result.fiscal_document_number:
                if str(kept["fiscal_sign"]) != result.fiscal_sign:
                    log.error("kept FF45 answer for FD %d has fiscal sign %s, the FN says %s",
                              kept["fd_number"], kept["fiscal_sign"], result.fiscal_sign)
                else:
                    log.info("the kept FF45 answer confirms FD %d", kept["fd_number"])

    # ------------------------------------------------------------------ shift and cash

    def _fn_last(self) -> dict[str, Any]:
        """FF01, remembered: while this driver holds the only link, the FD number moves only
        by the documents it forms, so a receipt needs no FF01 of its own (fewer round trips)."""
        fn = self.command("fn_status", admin=True)
        self._fn = {"last_fd_number": fn["last_fd_number"], "fn_number": fn["fn_number"],
                    "datetime": fn["datetime"]}
        return fn

    def _fn_before(self) -> dict[str, Any]:
        return dict(self._fn) if self._fn is not None else self._fn_last()

    def _after_document(self, before: dict[str, Any], *, printed: bool = True) -> FiscalResult:
        """The result of the document a command just formed (FF01 + FF0A)."""
        fn = self._fn_last()
        if fn["last_fd_number"] == before["last_fd_number"]:
            raise LinkError("ККТ выполнила команду, но номер фискального документа не изменился")
        return self._document(fn["last_fd_number"], fn["fn_number"], printed=printed)[0]

    def _tlv_steps(self, attrs: Sequence[tuple[int, Any, str]], *, operation: bool = False) -> None:
        name = "write_tlv_operation" if operation else "write_tlv"
        for tag, value, what in attrs:
            self.command(name, step=f"реквизит {tag} ({what})", admin=True, tlv=commands.tlv(tag, value))

    @staticmethod
    def _cashier(name: str, inn: str) -> list[tuple[int, Any, str]]:
        attrs: list[tuple[int, Any, str]] = []
        if name:
            attrs.append((model.TAG_CASHIER_NAME, name, "кассир"))
        if inn:
            attrs.append((model.TAG_CASHIER_INN, inn, "ИНН кассира"))
        return attrs

    def _shift_document(self, begin: str, command: str, cashier_name: str, cashier_inn: str) -> FiscalResult:
        """FF41/FF42 (FF37), the cashier by FF0C, then 0xE0/0x41 (FF38) (opos
        OpenFiscalDay/BeginZReport) [S].

        A device that refuses the "begin" command (0x37) gets the report without the cashier:
        a shift that cannot be opened is far worse than a report without its cashier.
        """
        before = self._fn_before()
        cashier = self._cashier(cashier_name, cashier_inn)
        if cashier:
            try:
                self.command(begin, admin=True)
                self._tlv_steps(cashier)
            except DeviceError as exc:
                if exc.code not in (ErrorCode.NOT_SUPPORTED, ErrorCode.FN_UNKNOWN_COMMAND):
                    raise
                log.warning("device refused the cashier for %s (%s); sending it without", command, exc.message)
        self.command(command, admin=True)
        printed = True
        try:
            self.wait_printing(report=command == "z_report", step=commands.get(command).title)
        except DeviceError as exc:
            if exc.code not in (ErrorCode.NO_PAPER, ErrorCode.WAITING_CONTINUE):
                raise
            printed = False
        return self._after_document(before, printed=printed)

    def open_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """Open a shift (0xE0), the cashier (1021, 1203) written first."""
        return self._shift_document("begin_open_shift", "open_shift", cashier_name, cashier_inn)

    def close_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """Z report (0x41), the cashier written first; waits as for a long report."""
        return self._shift_document("begin_close_shift", "z_report", cashier_name, cashier_inn)

    def x_report(self) -> None:
        """X report (0x40), then wait for the printer."""
        self.command("x_report", admin=True)
        self.wait_printing(report=True, step="X-отчёт")

    def settlement_report(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """«Отчёт о текущем состоянии расчётов» (FF38; with a cashier FF37 and FF0C first,
        model.py), an FN document read back like the shift reports (FF01 + FF0A)."""
        return self._shift_document("begin_settlement_report", "settlement_report", cashier_name, cashier_inn)

    def _cash(self, name: str, amount: int) -> FiscalResult:
        before = self._fn_before()
        reply = self.command(name, amount=amount)
        printed = True
        try:
            self.wait_printing(step=commands.get(name).title)
        except DeviceError as exc:
            if exc.code != ErrorCode.NO_PAPER:
                raise
            printed = False
        return self._cash_result(before["last_fd_number"], reply["document_number"], amount, printed=printed)

    def _cash_result(self, fd_before: int, document_number: int, amount: int, *, printed: bool) -> FiscalResult:
        """A cash document's result: the FN's document when the FD number moved, else (a device
        that forms none, model.DOC_CASH) FD 0 and the operating document number."""
        fn = self._fn_last()
        if fn["last_fd_number"] != fd_before:
            return self._document(fn["last_fd_number"], fn["fn_number"], printed=printed)[0]
        shift = self.command("fn_shift", admin=True)
        return FiscalResult(
            fiscal_document_number=0, fiscal_sign="", receipt_number=document_number,
            shift_number=shift["shift_number"], datetime=fn["datetime"] or dt.datetime.now().replace(second=0),
            total=amount, fn_number=fn["fn_number"], printed=printed,
        )

    #: Jobs whose document the FN may not number (model.DOC_CASH): an owner settles a lost
    #: answer of these by :meth:`document_counter` and :meth:`counted_result`, not by FF01.
    counted_kinds = frozenset({"cash_in", "cash_out"})

    def document_counter(self) -> int:
        """A cash job's "before" for :meth:`counted_result`: 0x11's operating document number,
        which every document moves, cash-only ones too, and the cash in the drawer
        (:class:`CashBefore`, encoded)."""
        return CashBefore(self.operating_number(), self.totals().cash_in_drawer).encode()

    def operating_number(self) -> int:
        """0x11's operating document number."""
        return self.command("full_status")["document_number"]

    def counted_result(self, before: int, amount: int, *, kind: str) -> FiscalResult | None:
        """Whether the cash job ``kind`` of ``amount`` ran since :meth:`document_counter` gave
        ``before``. The owner held the link since then and sent only that job (its queue held),
        so, the number counted modulo 0x10000:

        * not moved: None, certainly not done;
        * moved by one, and the drawer moved by exactly the amount (0x50 adds, 0x51 takes):
          that one document is the job's [S: 0x50 answers the number], its result (an FN that
          holds a cash document as its last one, as the emulator's core can, gives its FD);
        * moved by one while the drawer did not move so: OutcomeUnknown. The one document was
          formed at the device by someone else (a cash-out at the keyboard, say) and nothing
          shows whether the job's ran; the number alone would have taken it for the job's;
        * moved by more: OutcomeUnknown. Other documents were formed besides it, and the
          number cannot tell whether the job's was among them.

        The operator decides an unknown one; the operation is never sent again on a guess. A
        "before" without the drawer (journalled by an earlier version) is settled by the number.
        """
        start = CashBefore.decode(before)
        number = self.operating_number()
        moved = (number - start.number) % DOCUMENT_NUMBERS
        if moved == 0:
            return None
        if moved != 1:
            change = (f"сдвинулся на {_documents(moved)} вместо одного (на ККТ формировались и другие "
                      "документы)" if moved < DOCUMENT_NUMBERS // 2 else "стал меньше, чем был")
            raise CashOutcomeUnknown(
                kind, amount, f"номер документа ККТ был {start.number}, а сейчас {number} — {change}")
        if start.drawer is not None:
            drawer = self.totals().cash_in_drawer
            if drawer != drawer_after(kind, start.drawer, amount):
                raise CashOutcomeUnknown.drawer(
                    kind, amount, start.drawer, drawer, "документ сформировала другая операция",
                    lead="номер документа ККТ сдвинулся на один, но ")
        fn = self._fn_last()
        if fn["last_fd_number"]:
            result, doc_type, _ = self._document(fn["last_fd_number"], fn["fn_number"])
            if doc_type == model.DOC_CASH:
                return result
        return self._cash_result(fn["last_fd_number"], number, amount, printed=True)

    def cash_in(self, amount: int) -> FiscalResult:
        """Внесение (0x50)."""
        return self._cash("cash_in", amount)

    def cash_out(self, amount: int) -> FiscalResult:
        """Выплата (0x51)."""
        return self._cash("cash_out", amount)

    # ------------------------------------------------------------------ receipts

    def cancel_receipt(self) -> None:
        """Cancel an open receipt (0x88); an FN document left open without mode 8 gets FF08, as
        opos CancelReceipt does [S]; no-op when nothing is open."""
        if self._short()["mode"] & 0x0F != Mode.RECEIPT_OPEN:
            if self._fn_last()["document_type"]:
                self.command("fn_cancel_document", admin=True)
            return
        try:
            self.command("cancel_receipt")
        except DeviceError as exc:
            if exc.code in (ErrorCode.WRONG_MODE, ErrorCode.RECEIPT_CLOSED):
                return  # e-kiosk isNotError: already closed
            raise
        self._wait_quietly("отмена чека")

    def _wait_quietly(self, step: str) -> None:
        """Wait for the printer where running out of paper changes nothing fiscal."""
        try:
            self.wait_printing(step=step)
        except DeviceError as exc:
            log.warning("%s: %s", step, exc.message)

    def _print_lines(self, lines: Sequence[TextLine], where: str) -> None:
        for i, line in enumerate(lines, 1):
            self.command("print_string", step=f"{where}, строка {i}", text=commands.print_text_of(line))

    @staticmethod
    def _item_price(pos: Position) -> int:
        """The FF46 price for a position whose amount carries a spread discount.

        FF46 takes an amount within ±1 kopeck of price × quantity (§4.5) and has no discount
        field, so the price is the amount over the quantity, rounded [U].
        """
        if abs(position_amount(pos.price, pos.quantity) - pos.amount) <= 1:
            return pos.price
        return int((Decimal(pos.amount) / pos.quantity).quantize(Decimal(1)))

    def _position(self, i: int, pos: Position, op_type: int) -> None:
        where = f"позиция {i}: «{pos.name}»"
        if not self._classic:
            try:
                self.command(
                    "operation", step=where, operation_type=op_type, quantity=pos.quantity,
                    price=self._item_price(pos), amount=pos.amount, tax_amount=model.AUTO_SUM,
                    tax=model.TAX_CODES[pos.vat], department=pos.department, payment_method=int(pos.payment_method),
                    payment_object=pos.payment_object, name=_cut(pos.name, model.ITEM_NAME_BYTES),
                )
            except DeviceError as exc:
                if exc.code != ErrorCode.NOT_SUPPORTED:
                    raise
                log.warning("%s: FF46 not supported; using the classic commands", self.url)
                self._classic = True
            else:
                if pos.unit:
                    self._tlv_steps([(model.TAG_UNIT, pos.unit, "мера количества")], operation=True)
                return
        if pos.vat not in _CLASSIC_TAX:
            raise device_error(ErrorCode.BAD_PARAMETERS, step=f"{where}: ставка {pos.vat.title} без FF46")
        self.command(_CLASSIC_ITEM[op_type], step=where, quantity=pos.quantity, price=self._item_price(pos),
                     department=pos.department, tax1=_CLASSIC_TAX[pos.vat], text=_cut(pos.name, model.LINE_WIDTH))

    def _receipt_attributes(self, receipt: Receipt) -> list[tuple[int, Any, str]]:
        attrs = self._cashier(receipt.cashier_name, receipt.cashier_inn)
        if receipt.customer_contact:
            attrs.append((model.TAG_CUSTOMER_CONTACT, receipt.customer_contact, "телефон или e-mail покупателя"))
        if receipt.settlement_place:
            attrs.append((model.TAG_SETTLEMENT_PLACE, receipt.settlement_place, "место расчётов"))
        if receipt.internet:
            # Only when set: firmware older than the tag may refuse it (model.py).
            attrs.append((model.TAG_INTERNET, model.INTERNET_SETTLEMENT, "признак расчёта в интернете"))
        if receipt.correction is not None:
            corr = receipt.correction
            # [U] FFD 1.2 correction: 1173 and 1174 (1178 date, 1179 order) mark the receipt.
            attrs.append((model.TAG_CORRECTION_TYPE, 1 if corr.by_order else 0, "тип коррекции"))
            basis = commands.tlv(model.TAG_CORRECTION_DATE, corr.date)
            if corr.order_number:
                basis += commands.tlv(model.TAG_CORRECTION_ORDER, corr.order_number)
            attrs.append((model.TAG_CORRECTION_BASIS, basis, "основание для коррекции"))
        return attrs

    def _close(self, receipt: Receipt) -> dict[str, Any]:
        # opos reads the subtotal (0x89) just before FF45 [C: opos; javapos #33 log]; here it
        # also stops a receipt whose device total is not the caller's from being fiscalised.
        subtotal = self.command("subtotal", step="подытог чека")["subtotal"]
        if subtotal != receipt.total:
            raise device_error(ErrorCode.BAD_PARAMETERS,
                               step=f"итог чека в ККТ {subtotal} коп. не равен итогу документа {receipt.total} коп.")
        if self._classic:
            sums: dict[str, int] = {}
            for pay in receipt.payments:
                slot = _CLASSIC_PAY[pay.type]
                sums[slot] = sums.get(slot, 0) + pay.amount
            self.command("close_receipt", step="закрытие чека", **sums)
            return {}
        sums = {}
        for pay in receipt.payments:
            slot = f"payment{model.PAYMENT_SLOTS[pay.type]}"
            sums[slot] = sums.get(slot, 0) + pay.amount
        return self.command("close_receipt_ext", step="закрытие чека", taxation=int(receipt.taxation or 0), **sums)

    def sell(self, receipt: Receipt) -> FiscalResult:
        """Fiscalise a receipt of any settlement type (test mode: everything but the close,
        then 0x88, so the device checks it and forms nothing) [U for the test mode].

        The result comes from the FF45 answer (FD, fiscal sign, date) and FF40 (shift, receipt
        number); the classic 0x85 answer has no FD, so that path reads FF01 and FF0A.
        """
        before = self._fn_before()
        op_type = model.OPERATION_TYPES[receipt.type]
        try:
            self.command("open_receipt", step="открытие чека", receipt_type=model.RECEIPT_TYPES[receipt.type])
            self._print_lines(receipt.header, "заголовок чека")
            for i, pos in enumerate(receipt.positions, 1):
                self._position(i, pos, op_type)
            self._tlv_steps(self._receipt_attributes(receipt))
            if receipt.test_mode:
                self.command("cancel_receipt", step="отмена чека (тестовый режим)")
                self._wait_quietly("отмена чека")
                return FiscalResult(
                    fiscal_document_number=0, fiscal_sign="", receipt_number=0, shift_number=0,
                    datetime=before["datetime"] or dt.datetime.now().replace(second=0, microsecond=0),
                    total=receipt.total, fn_number=before["fn_number"], test_mode=True,
                )
            closed = self._close(receipt)
        except DeviceError as exc:
            return self._after_failed_receipt(exc, before)
        printed = True
        try:
            self.wait_printing(step="печать чека")
            self._print_lines(receipt.footer, "подвал чека")
            if receipt.footer:
                self.wait_printing(step="печать подвала")
        except DeviceError as exc:
            if exc.code not in (ErrorCode.NO_PAPER, ErrorCode.WAITING_CONTINUE):
                raise
            log.warning("receipt fiscalised but not printed: %s", exc.message)
            printed = False
        if not closed.get("fd_number"):
            return self._after_document(before, printed=printed)
        if closed["fd_number"] <= before["last_fd_number"]:
            raise LinkError(f"ККТ закрыла чек, но номер ФД {closed['fd_number']} не больше прежнего")
        shift = self.command("fn_shift", admin=True)
        when = closed["datetime"]
        if when is None:
            # [C] FF45 answers carry the date on some firmware only (opos reads it otherwise).
            return self._after_document(before, printed=printed)
        self._fn = {**before, "last_fd_number": closed["fd_number"]}
        return FiscalResult(
            fiscal_document_number=closed["fd_number"], fiscal_sign=str(closed["fiscal_sign"]),
            receipt_number=shift["receipt_number"], shift_number=shift["shift_number"], datetime=when,
            total=receipt.total, fn_number=before["fn_number"], printed=printed,
        )

    def _after_failed_receipt(self, exc: DeviceError, before: dict[str, Any]) -> FiscalResult:
        """A step failed: was the document formed anyway (paper ran out while printing it)?
        If not, cancel the receipt and raise the error."""
        fn = self._fn_last()
        if fn["last_fd_number"] > before["last_fd_number"]:
            log.warning("receipt fiscalised as FD %d but %s", fn["last_fd_number"], exc.message)
            return self._document(fn["last_fd_number"], fn["fn_number"], printed=False)[0]
        try:
            self.cancel_receipt()
        except DeviceError as cancel_error:
            log.error("could not cancel the receipt after %s: %s", exc.message, cancel_error.message)
        raise exc

    # ------------------------------------------------------------------ printing and service

    def print_text(self, lines: Sequence[TextLine]) -> None:
        """Print a non-fiscal document: the lines (0x17), a cut (0x25), wait for the printer."""
        if not lines:
            return
        self._print_lines(lines, "печать текста")
        self.command("cut", cut_type=0)
        self.wait_printing(step="печать текста")

    def reprint_last(self) -> None:
        """After paper ran out: 0xB0 continues the interrupted document; otherwise 0x8C prints
        the last document again [S pyshtrih repeat]."""
        st = self._short()
        if st["submode"] == Submode.AFTER_PAPER_OUT:
            self.command("continue_print", admin=True)
        elif st["submode"] in (Submode.PAPER_OUT_PASSIVE, Submode.PAPER_OUT_ACTIVE):
            raise device_error(ErrorCode.NO_PAPER, step="повтор документа")
        else:
            self.command("repeat_document")
        self.wait_printing(step="повтор документа")

    def open_drawer(self) -> None:
        """Open the cash drawer (0x28, drawer 0)."""
        self.command("open_drawer", drawer=0)

    def reset_summary(self) -> None:
        """Not on Shtrih-M: no source gives a general-clearing command for FN devices."""
        raise device_error(ErrorCode.NOT_SUPPORTED, step="общее гашение")

    def tech_reset(self) -> None:
        """Not on Shtrih-M: the technological reset is done on the device itself."""
        raise device_error(ErrorCode.NOT_SUPPORTED, step="технологическое обнуление")


def _documents(n: int) -> str:
    """«1 документ», «2 документа», «5 документов»: the count with the noun's Russian form."""
    if n % 10 == 1 and n % 100 != 11:
        word = "документ"
    elif 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        word = "документа"
    else:
        word = "документов"
    return f"{n} {word}"


def _cut(text: str, size: int) -> str:
    """The longest prefix of ``text`` whose cp1251 form fits in ``size`` bytes."""
    raw = commands.encode_text(text)
    return text if len(raw) <= size else text[:size]
