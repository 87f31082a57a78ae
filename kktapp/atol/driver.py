"""ATOL driver: :class:`kktapp.device.Driver` over protocol v3, pipelined.

A receipt is one batch of tasks (Add, WaitAsyncData) written to the device in one write; the
answers (synchronous, or A6/A7 pushed later on packet ID 0xF0) are then collected. The device
stops the rest of a batch after a failing task (the Stopped rule in :mod:`.model`), so a
receipt never closes with a position missing. After a clean device error the driver aborts the
buffer, cancels the receipt it opened, and raises DeviceError naming the failing step. A lost
link in the middle is raised as LinkError: the outcome is unknown, and the service settles it
with :meth:`AtolDriver.last_document`.

Every layout comes from :mod:`.commands`; every unverified choice from :mod:`.model`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..device import DeviceInfo, DeviceStatus, FnStatus, LastDocument, ShiftStatus, Totals
from ..domain import FiscalResult, PaymentType, Position, Receipt, TextLine, position_amount
from ..errors import DeviceError, FrameError, KKTError, LinkError
from . import codec, commands, model, taskbuf
from .commands import COMMANDS, Command, ShortStatusFlags, StatusFlags
from .errors import ErrorCode, device_error
from .link import Link, LinkStats
from .model import Mode
from .taskbuf import Flags, Status

log = logging.getLogger(__name__)

#: Flags of every task: results are pushed when they come later; none is kept (no Ack needed).
TASK_FLAGS = Flags.WAIT_ASYNC_DATA
#: Most tasks in one write: the device's buffer must hold them all.
WINDOW = model.TASK_BUFFER_CAPACITY
#: Printer trouble in the 45 flags byte.
_PRINTER_TROUBLE = (ShortStatusFlags.PRINTER_OFFLINE | ShortStatusFlags.MECHANICAL_ERROR
                    | ShortStatusFlags.CUTTER_ERROR | ShortStatusFlags.PRINTER_ERROR)
#: How payments are named in step names ("оплата наличными").
_PAYMENT_WORDS = {
    PaymentType.CASH: "наличными", PaymentType.ELECTRONIC: "безналичными", PaymentType.PREPAID: "зачётом аванса",
    PaymentType.CREDIT: "в кредит", PaymentType.OTHER: "встречным предоставлением",
}
_SHIFT_STATES = {model.SHIFT_CLOSED: "closed", model.SHIFT_OPEN: "open", model.SHIFT_EXPIRED: "expired"}


@dataclass
class Step:
    """One task of a batch: a command, its parameters, and the step name errors show."""

    command: Command
    params: dict[str, Any] = field(default_factory=dict)
    title: str = ""
    tid: int = -1
    answer: taskbuf.Answer | None = None

    @property
    def name(self) -> str:
        """Russian step name for messages."""
        return self.title or self.command.title


def step(command: str, title: str = "", /, **params: Any) -> Step:
    """A step for the command called ``command`` (parameters as in its request fields)."""
    return Step(COMMANDS[command], params, title)


class BatchFailed(Exception):
    """A task of a batch ended with a device error (internal: carries the failing step)."""

    def __init__(self, failed: Step, error: DeviceError, steps: list[Step]) -> None:
        super().__init__(str(error))
        self.failed = failed
        self.error = error
        self.steps = steps


def _password(value: str | int) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError(f"password must be digits, got {value!r}") from None


class AtolDriver:
    """A connected ATOL cash register (protocol v3). Not thread-safe: one owner at a time."""

    def __init__(self, url: str, *, access_password: str = "0000", operator_password: str = "30",
                 baudrate: int = 115200, pipeline: bool = True, timeout: float = model.ANSWER_TIMEOUT) -> None:
        self.url = url
        self.access_password = _password(access_password)
        self.operator_password = _password(operator_password)
        self.pipeline = pipeline
        self.timeout = timeout
        self.stats = LinkStats()
        self._link = Link(url, baudrate=baudrate, stats=self.stats)
        self._next_tid = model.ID_MIN
        #: (mode, sub-mode) as last seen; None when unknown (read 3F before changing modes).
        self._mode: tuple[int, int] | None = None
        #: The 14-digit serial read from register 22 on this connection: None while not read,
        #: "" when the device refused it. Remembered so that status reads (frequent) show the
        #: full serial without reading the register every time.
        self._serial: str | None = None

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """True while the link is believed to be up."""
        return self._link.is_open

    def connect(self) -> None:
        """Open the link, clear stale tasks (Abort), leave any mode unless a receipt is open.

        Nothing is cancelled here: an open receipt is the service's recovery to decide.
        """
        self._link.open()
        try:
            self._abort()
            st = self.status()
            if not st.receipt_open and st.mode != Mode.SELECT:
                self._run(self._leave_steps())
                self._mode = (Mode.SELECT, 0)
        except KKTError:
            self._link.close()
            raise
        log.info("connected to %s: mode %d.%d, shift %s, receipt %s", self.url, st.mode, st.submode,
                 "open" if st.shift_open else "closed", st.receipt_state or "none")

    def close(self) -> None:
        """Close the link (idempotent)."""
        self._link.close()
        self._mode = None
        self._serial = None  # the next connection may reach another device

    def __enter__(self) -> AtolDriver:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ task engine

    def _take_tid(self) -> int:
        tid = self._next_tid
        self._next_tid = model.ID_MIN if tid >= model.ID_MAX else tid + 1
        return tid

    def _exchange(self, msg: taskbuf.Message, timeout: float | None = None) -> taskbuf.Answer:
        """Send one non-Add request and wait for its synchronous answer."""
        (pid,) = self._link.send([taskbuf.encode_request(msg)])
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            packet = self._link.receive(deadline)
            if packet.id == pid:
                return self._decode_answer(packet.data)
            log.debug("ignoring packet %02X while waiting for %02X", packet.id, pid)

    def _abort(self) -> None:
        """C4: cancel every task and clear the device's buffer (and its Stopped state)."""
        answer = self._exchange(taskbuf.Abort())
        if answer.status in taskbuf.REFUSED:
            raise LinkError(f"ККТ отклонила сброс буфера заданий (статус {answer.status:02X})")

    def _decode_answer(self, data: bytes) -> taskbuf.Answer:
        try:
            return taskbuf.decode_answer(data)
        except codec.CodecError as exc:
            self._link.close()
            raise FrameError(f"ошибка обмена с ККТ: {exc}") from exc

    def _run(self, steps: Sequence[Step]) -> list[dict[str, Any]]:
        """Execute steps in order; returns their decoded replies. Raises BatchFailed/LinkError."""
        steps = list(steps)
        size = WINDOW if self.pipeline else 1
        replies: list[dict[str, Any]] = []
        for start in range(0, len(steps), size):
            replies += self._batch(steps[start:start + size])
        return replies

    def _batch(self, steps: list[Step]) -> list[dict[str, Any]]:
        """One write of Adds, then collect every answer (or stop at the first failure)."""
        if not self._link.is_open:
            raise LinkError("нет связи с ККТ (не подключена)")
        payloads = []
        for s in steps:
            s.tid = self._take_tid()
            s.answer = None
            task = taskbuf.encode_task(self.access_password, s.command.encode(**s.params))
            payloads.append(taskbuf.encode_request(taskbuf.Add(s.tid, task, TASK_FLAGS)))
        ids = self._link.send(payloads)
        self.stats.tasks += len(steps)
        by_pid = dict(zip(ids, steps, strict=True))
        by_tid = {s.tid: s for s in steps}
        waiting_sync = set(ids)
        failed: Step | None = None

        def unresolved() -> list[Step]:
            return [s for s in steps if s.answer is None or not s.answer.final]

        deadline = time.monotonic() + self.timeout + max(s.command.timeout for s in steps)
        while waiting_sync or (failed is None and unresolved()):
            packet = self._link.receive(deadline)
            if packet.id == model.ASYNC_PACKET_ID:
                answer = self._decode_answer(packet.data)
                s = by_tid.get(answer.tid) if answer.tid is not None else None
                if s is None:
                    log.debug("stale async answer for task %s", answer.tid)
                    continue
            elif packet.id in waiting_sync:
                waiting_sync.discard(packet.id)
                s = by_pid[packet.id]
                answer = self._decode_answer(packet.data)
                if s.answer is not None and s.answer.final:
                    continue  # the async result came first
            else:
                log.debug("ignoring stale packet %02X", packet.id)
                continue
            if answer.status in taskbuf.REFUSED:
                # Never expected (Abort on connect, window ≤ buffer): the batch cannot be trusted.
                self._link.close()
                raise LinkError(f"ККТ отклонила задание «{s.name}» (статус {answer.status:02X})")
            s.answer = answer
            if answer.status in (Status.ERROR, Status.ASYNC_ERROR) and failed is None:
                failed = s
            # Progress: the next unfinished task gets its own full timeout.
            pending = unresolved()
            if pending:
                deadline = time.monotonic() + self.timeout + pending[0].command.timeout

        if failed is not None:
            error = self._step_error(failed)
            # Clear the device's Stopped state and whatever was left in its buffer.
            self._abort()
            raise BatchFailed(failed, error, steps)
        replies = []
        for s in steps:
            assert s.answer is not None
            if s.answer.status == Status.STOPPED:
                # Stopped without a failure in this batch: an earlier session left the device
                # stopped. Clear it; the caller sees a link-level error and may retry.
                self._abort()
                raise LinkError("ККТ остановила задания после прежней ошибки; буфер очищен, повторите")
            replies.append(self._decode_reply(s))
        return replies

    def _decode_reply(self, s: Step) -> dict[str, Any]:
        assert s.answer is not None
        try:
            return s.command.decode_reply(s.answer.reply, step=s.name)
        except codec.CodecError as exc:
            raise FrameError(f"непонятный ответ ККТ на «{s.name}»: {exc}") from exc

    def _step_error(self, s: Step) -> DeviceError:
        assert s.answer is not None
        try:
            s.command.decode_reply(s.answer.reply, step=s.name)
        except DeviceError as exc:
            return exc
        except codec.CodecError:
            pass
        err = commands.reply_error(s.answer.reply)
        code, ext = err if err else (0, 0)
        return device_error(code or ErrorCode.BAD_FORMAT, ext, step=s.name, command=s.command.code)

    def execute(self, steps: Sequence[Step]) -> list[dict[str, Any]]:
        """Run steps; a device error becomes DeviceError naming the step (mode cache dropped)."""
        try:
            return self._run(steps)
        except BatchFailed as exc:
            self._mode = None
            raise exc.error from None
        except LinkError:
            self._mode = None
            raise

    def command(self, command: str, /, **params: Any) -> dict[str, Any]:
        """Run one command by its name in :data:`kktapp.atol.commands.COMMANDS` (tools, tests)."""
        return self.execute([step(command, **params)])[0]

    # ------------------------------------------------------------------ modes

    def _current_mode(self) -> tuple[int, int]:
        if self._mode is None:
            reply = self.command("status")
            self._mode = commands.split_mode(reply["mode"])
        return self._mode

    def _leave_steps(self) -> list[Step]:
        mode, submode = self._current_mode()
        if mode == Mode.SELECT:
            return []
        return [step("leave_mode") for _ in range(2 if submode else 1)]

    def _mode_steps(self, target: int) -> list[Step]:
        """Steps that bring the device from its (cached) mode to ``target``."""
        mode, submode = self._current_mode()
        if mode == target and target != Mode.REGISTRATION:
            return []
        if mode == target and submode == 0:
            return []
        steps = self._leave_steps()
        if target != Mode.SELECT:
            steps.append(step("enter_mode", f"вход в режим {int(target)}", mode=int(target),
                              password=self.operator_password))
        return steps

    def _in_mode(self, target: int, steps: Sequence[Step]) -> list[dict[str, Any]]:
        """Run ``steps`` in ``target`` mode; returns the replies of ``steps`` only."""
        prefix = self._mode_steps(target)
        replies = self.execute([*prefix, *steps])
        self._mode = (target, 0)
        return replies[len(prefix):]

    # ------------------------------------------------------------------ queries

    def _with_serial(self, steps: list[Step], *, refresh: bool = False) -> list[dict[str, Any]]:
        """Run ``steps``, reading register 22 (the full serial) in the same batch when it is not
        known yet on this connection, or when ``refresh``. Returns the replies of ``steps``.

        A device that refuses the register (model.REGISTER_SERIAL is [U]) is remembered as such,
        so status reads fall back to 3F's 8 digits without asking again; the steps are then run
        once more on their own, since the failed batch was aborted.
        """
        if not refresh and self._serial is not None:
            return self.execute(steps)
        serial_step = step("serial_number")
        try:
            *replies, reg = self._run([*steps, serial_step])
        except BatchFailed as exc:
            if exc.failed is not serial_step:
                self._mode = None
                raise exc.error from None
            log.warning("%s: the device refused the serial number register (%s); showing the "
                        "8 digits of the status reply", self.url, exc.error.message)
            self._serial = ""
            return self.execute(steps)
        except LinkError:
            self._mode = None
            raise
        self._serial = reg["serial"]
        return replies

    def _full_serial(self, short: int) -> str:
        """The serial to show for 3F's 8 digits: the register-22 one when it matches them."""
        digits = f"{short:08d}"
        if self._serial and not self._serial.endswith(digits):
            # Another device answers on this address now: what was read is not its serial.
            log.warning("%s: serial %s does not end with the status reply's %s; reading it again",
                        self.url, self._serial, digits)
            self._serial = None
        return self._serial or digits

    def status(self) -> DeviceStatus:
        """Quick status (3F + 45 in one round trip; register 22 too while the serial is unknown)."""
        st, short = self._with_serial([step("status"), step("short_status")])
        mode, submode = commands.split_mode(st["mode"])
        self._mode = (mode, submode)
        flags = StatusFlags(st["flags"])
        short_flags = ShortStatusFlags(short["flags"])
        return DeviceStatus(
            datetime=st["datetime"] or dt.datetime.now().replace(microsecond=0),
            serial=self._full_serial(st["serial"]),
            model_code=st["model"],
            mode=mode,
            submode=submode,
            fiscal=bool(flags & StatusFlags.FISCAL),
            shift_open=bool(flags & StatusFlags.SHIFT_OPEN),
            shift_number=st["shift_number"],
            receipt_number=st["receipt_number"],
            receipt_state=st["receipt_state"],
            receipt_sum=st["receipt_sum"],
            paper_present=bool(flags & StatusFlags.PAPER_PRESENT) and not short_flags & ShortStatusFlags.NO_PAPER,
            cover_open=bool(flags & StatusFlags.COVER_OPEN),
            drawer_open=bool(flags & StatusFlags.DRAWER_OPEN),
            fn_active=bool(flags & StatusFlags.FN_ACTIVE),
            printer_error=bool(short_flags & _PRINTER_TROUBLE),
            paper_near_end=bool(short_flags & ShortStatusFlags.PAPER_NEAR_END),
        )

    def device_info(self) -> DeviceInfo:
        """Model, firmware, and the 14-digit serial (A5 + 3F + register 22, one round trip).

        Falls back to 3F's 8 digits, with a warning, when the device refuses register 22.
        """
        info, st = self._with_serial([step("device_type"), step("status")], refresh=True)
        self._mode = commands.split_mode(st["mode"])
        return DeviceInfo(
            model_code=info["model"],
            model_name=info["name"] or commands.MODEL_NAMES.get(info["model"], f"ATOL {info['model']}"),
            firmware=f"{info['fw_major']}.{info['fw_minor']}.{info['fw_patch']}.{info['fw_build']}",
            serial=self._full_serial(st["serial"]),
            protocol=info["protocol"],
        )

    def shift_status(self) -> ShiftStatus:
        """Shift state and opening time (register 18), number and receipts (A4 10)."""
        reg, fn = self.execute([step("shift_state"), step("fn_shift")])
        return ShiftStatus(
            state=_SHIFT_STATES.get(reg["state"], "closed"),
            number=fn["shift_number"],
            opened_at=reg["opened_at"],
            receipts=fn["receipt_number"],
        )

    def fn_status(self) -> FnStatus:
        """FN and OFD exchange state (A4 30, A4 20, A4 32)."""
        fn, ofd, validity = self.execute([step("fn_status"), step("ofd_status"), step("fn_validity")])
        return FnStatus(
            fn_number=fn["fn_serial"],
            last_fd_number=fn["last_fd_number"],
            unsent_count=ofd["unsent"],
            first_unsent_number=ofd["first_unsent_number"],
            first_unsent_at=ofd["first_unsent_at"],
            valid_until=validity["valid_until"],
            warnings=fn["warnings"],
            phase=fn["phase"],
        )

    def totals(self) -> Totals:
        """Cash in the drawer (4D), shift earnings (58) and the non-resettable sum (register 12).

        One round trip. Shift earnings ("выручка смены") = income − outcome of the open shift
        (sales net of returns and purchases; negative when more went out), 0 with the shift
        closed: a Z report ("гашение") ends what the shift earned, while 58 would still answer
        the shift just closed. The non-resettable sum ("необнуляемая сумма") = all income over
        the device's life, a counter that only grows. Meanings of the fields: model.py.
        """
        drawer, shift, grand, st = self.execute([
            step("cash_in_drawer"), step("last_shift_totals"), step("non_resettable_totals"), step("status"),
        ])
        self._mode = commands.split_mode(st["mode"])
        shift_open = bool(StatusFlags(st["flags"]) & StatusFlags.SHIFT_OPEN)
        return Totals(
            cash_in_drawer=drawer["amount"],
            shift_earnings=shift["income"] - shift["outcome"] if shift_open else 0,
            total_earnings=grand["income"],
        )

    def last_document(self) -> LastDocument:
        """Last FD number (A4 30), receipt state (3F), and the document rebuilt from A4 40."""
        fn, st = self.execute([step("fn_status"), step("status")])
        self._mode = commands.split_mode(st["mode"])
        fd = fn["last_fd_number"]
        result = None
        extra: dict[str, Any] = {"receipt_state": st["receipt_state"], "receipt_sum": st["receipt_sum"]}
        if fd:
            try:
                doc = self.command("fn_document", fd_number=fd)
            except DeviceError as exc:
                if exc.code != ErrorCode.FN_NO_DATA:
                    raise
                log.warning("FN has no data for its own last document %d", fd)
            else:
                result = self._result(doc, fn["fn_serial"])
                extra["doc_type"] = doc["doc_type"]
                extra["receipt_type"] = doc["receipt_type"]
        return LastDocument(fd_number=fd, receipt_open=st["receipt_state"] != 0, result=result, extra=extra)

    @staticmethod
    def _result(doc: dict[str, Any], fn_number: str, *, printed: bool = True) -> FiscalResult:
        return FiscalResult(
            fiscal_document_number=doc["fd_number"],
            fiscal_sign=str(doc["fiscal_sign"]),
            receipt_number=doc["receipt_number"] if doc["doc_type"] in (model.DocType.RECEIPT,
                                                                          model.DocType.CORRECTION) else 0,
            shift_number=doc["shift_number"],
            datetime=doc["datetime"] or dt.datetime.now().replace(second=0, microsecond=0),
            total=doc["total"],
            fn_number=fn_number,
            printed=printed,
        )

    def _document_result(self, fn: dict[str, Any], *, printed: bool = True) -> FiscalResult:
        doc = self.command("fn_document", fd_number=fn["last_fd_number"])
        return self._result(doc, fn["fn_serial"], printed=printed)

    # ------------------------------------------------------------------ shift and cash

    def _fiscal(self, mode: int, steps: list[Step]) -> FiscalResult:
        """Run a document-forming command, then read the document it formed."""
        replies = self._in_mode(mode, [*steps, step("fn_status")])
        return self._document_result(replies[-1])

    def _shift_document(self, mode: int, command: str, cashier_name: str, cashier_inn: str) -> FiscalResult:
        """A shift report with the cashier written just before it (model.DOCUMENT_TAGS).

        Should a device refuse E8 outside a receipt (the model is [U]), the batch stopped at
        that E8 and formed nothing, so the report is made again without the cashier: a shift
        that cannot be opened is far worse than a report without its cashier.
        """
        cashier = self._attribute_steps(self._cashier(cashier_name, cashier_inn))
        try:
            return self._fiscal(mode, [*cashier, step(command)])
        except DeviceError as exc:
            if not cashier or exc.command != COMMANDS["write_attribute"].code:
                raise
            log.warning("device refused the cashier for %s (%s); sending it without", command, exc.message)
            return self._fiscal(mode, [step(command)])

    def open_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """Open a shift (9A in registration mode), the cashier (1021, 1203) written first."""
        return self._shift_document(Mode.REGISTRATION, "open_shift", cashier_name, cashier_inn)

    def close_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """Z report (5A in mode 3), the cashier (1021, 1203) written first."""
        try:
            return self._shift_document(Mode.REPORT_Z, "close_shift", cashier_name, cashier_inn)
        finally:
            self._mode = None  # whether the device stays in mode 3 after Z is not known [U]

    def x_report(self) -> None:
        """X report (67 in mode 2)."""
        self._in_mode(Mode.REPORT_X, [step("x_report", report_type=1)])

    def cash_in(self, amount: int) -> FiscalResult:
        """Внесение (49)."""
        return self._fiscal(Mode.REGISTRATION, [step("cash_in", amount=amount)])

    def cash_out(self, amount: int) -> FiscalResult:
        """Выплата (4F)."""
        return self._fiscal(Mode.REGISTRATION, [step("cash_out", amount=amount)])

    # ------------------------------------------------------------------ receipts

    def cancel_receipt(self) -> None:
        """Cancel an open receipt (59); no-op when none is open."""
        st = self.status()
        if st.receipt_open:
            self.execute([step("cancel_receipt")])
            self._mode = (Mode.REGISTRATION, 0)

    def receipt_steps(self, receipt: Receipt) -> list[Step]:
        """The tasks of a receipt from opening to the footer (no mode change, no FN reads)."""
        flags = (0x01 if receipt.test_mode else 0) | (0x02 if receipt.electronic_only else 0)
        steps = [step("open_receipt", flags=flags, receipt_type=commands.RECEIPT_TYPES[receipt.type])]
        steps += self._text_steps(receipt.header, "заголовок чека")
        for i, pos in enumerate(receipt.positions, 1):
            steps += self._position_steps(i, pos)
        attrs = self._cashier(receipt.cashier_name, receipt.cashier_inn)
        if receipt.customer_contact:
            attrs.append((model.TAG_CUSTOMER_CONTACT, receipt.customer_contact, "телефон или e-mail покупателя"))
        if receipt.correction is not None:
            corr = receipt.correction
            attrs.append((model.TAG_CORRECTION_TYPE, 1 if corr.by_order else 0, "тип коррекции"))
            attrs.append((model.TAG_CORRECTION_DATE, corr.date, "дата исправляемого расчёта"))
            if corr.order_number:
                attrs.append((model.TAG_CORRECTION_ORDER, corr.order_number, "номер предписания"))
        steps += self._attribute_steps(attrs)
        # The last payment travels with the close command. Its sum is never 0: 4A with sum 0
        # would let the device pay "the rest" by itself, hiding a receipt that is underpaid.
        *payments, last = receipt.payments or (None,)
        for pay in payments:
            steps.append(step("payment", f"оплата {_PAYMENT_WORDS[pay.type]}",
                              payment_type=commands.PAYMENT_TYPES[pay.type], amount=pay.amount))
        if last is None or last.amount <= 0:
            raise ValueError("receipt without a positive last payment")
        steps.append(step("close_receipt", "закрытие чека",
                          payment_type=commands.PAYMENT_TYPES[last.type], amount=last.amount))
        steps += self._text_steps(receipt.footer, "подвал чека")
        return steps

    @staticmethod
    def _cashier(name: str, inn: str) -> list[tuple[int, Any, str]]:
        """The cashier's attributes (tag, value, what) that are set."""
        attrs: list[tuple[int, Any, str]] = []
        if name:
            attrs.append((model.TAG_CASHIER_NAME, name, "кассир"))
        if inn:
            attrs.append((model.TAG_CASHIER_INN, inn, "ИНН кассира"))
        return attrs

    @staticmethod
    def _attribute_steps(attrs: Sequence[tuple[int, Any, str]]) -> list[Step]:
        """One E8 per (tag, value, what)."""
        return [step("write_attribute", f"реквизит {tag} ({what})", tag=tag, value=commands.attribute_value(tag, value))
                for tag, value, what in attrs]

    @staticmethod
    def _position_steps(i: int, pos: Position) -> list[Step]:
        where = f"позиция {i}: «{pos.name}»"
        # The device computes price × quantity itself; any difference to the amount we were
        # given (a spread discount) is sent as the position's discount or markup (model.py).
        diff = position_amount(pos.price, pos.quantity) - pos.amount
        steps = [step("register_position", where, name=pos.name, price=pos.price, quantity=pos.quantity,
                      discount_sign=0 if diff >= 0 else 1, discount_sum=abs(diff), tax=pos.vat.tag1199,
                      section=pos.department)]
        if not commands.name_fits_position(pos.name):
            # E6 cut the name to its first bytes; the whole name follows at once as tag 1030
            # (model.LONG_NAME_BY_TAG1030), so the document carries it uncut.
            steps.append(step("write_attribute", f"{where}, реквизит {model.TAG_ITEM_NAME} (полное наименование)",
                              tag=model.TAG_ITEM_NAME, value=commands.attribute_value(model.TAG_ITEM_NAME, pos.name)))
        values = {model.TAG_PAYMENT_METHOD: int(pos.payment_method), model.TAG_PAYMENT_OBJECT: pos.payment_object,
                  model.TAG_UNIT: pos.unit}
        for tag, value in values.items():
            if value != model.POSITION_TAG_DEFAULTS[tag]:
                steps.append(step("write_attribute", f"{where}, реквизит {tag}",
                                  tag=tag, value=commands.attribute_value(tag, value)))
        return steps

    @staticmethod
    def _text_steps(lines: Sequence[TextLine], where: str) -> list[Step]:
        return [step("print_string", f"{where}, строка {i}", flags=commands.print_flags(line), text=line.text)
                for i, line in enumerate(lines, 1)]

    def sell(self, receipt: Receipt) -> FiscalResult:
        """Fiscalise a receipt of any settlement type in one pipelined batch.

        Batch: A4 30 (FD number before), mode change if needed, the receipt, A4 30 (after).
        Then A4 40 reads the new document's fiscal sign and time.
        """
        body = self.receipt_steps(receipt)
        prefix = [step("fn_status", "состояние ФН")] + self._mode_steps(Mode.REGISTRATION)
        steps = [*prefix, *body, step("fn_status", "состояние ФН")]
        try:
            replies = self._run(steps)
        except BatchFailed as exc:
            self._mode = None
            return self._after_failed_receipt(receipt, exc, prefix, body)
        except LinkError:
            self._mode = None
            raise
        self._mode = (Mode.REGISTRATION, 0)
        fn = replies[-1]
        if receipt.test_mode:
            return FiscalResult(
                fiscal_document_number=0, fiscal_sign="", receipt_number=0, shift_number=0,
                datetime=fn["datetime"] or dt.datetime.now().replace(second=0, microsecond=0),
                total=receipt.total, fn_number=fn["fn_serial"], test_mode=True,
            )
        if fn["last_fd_number"] == replies[0]["last_fd_number"]:
            raise LinkError("ККТ закрыла чек, но номер фискального документа не изменился")
        result = self._document_result(fn)
        if result.total != receipt.total:
            log.error("device total %d differs from receipt total %d (FD %d)", result.total, receipt.total,
                      result.fiscal_document_number)
        return result

    def _after_failed_receipt(self, receipt: Receipt, exc: BatchFailed, prefix: list[Step],
                              body: list[Step]) -> FiscalResult:
        """A task of the receipt failed: was the document formed anyway? If not, clean up."""
        opened = body[0].answer is not None and body[0].answer.status in (Status.RESULT, Status.ASYNC_RESULT)
        before = None
        if prefix[0].answer is not None and prefix[0].answer.status in (Status.RESULT, Status.ASYNC_RESULT):
            before = prefix[0].command.decode_reply(prefix[0].answer.reply)["last_fd_number"]
        if not opened:
            raise exc.error
        fn, st = self.execute([step("fn_status"), step("status")])
        self._mode = commands.split_mode(st["mode"])
        if before is not None and fn["last_fd_number"] > before and not receipt.test_mode:
            # The document was fiscalised and then something (paper) failed: it counts.
            log.warning("receipt fiscalised as FD %d but %s: %s", fn["last_fd_number"], exc.failed.name,
                        exc.error.message)
            return self._document_result(fn, printed=False)
        if st["receipt_state"]:
            try:
                self.execute([step("cancel_receipt")])
            except DeviceError as cancel_error:
                log.error("could not cancel the receipt after %s: %s", exc.error.message, cancel_error.message)
        raise exc.error

    # ------------------------------------------------------------------ printing and service

    def print_text(self, lines: Sequence[TextLine]) -> None:
        """Print a non-fiscal document: the lines, then a cut."""
        if not lines:
            return
        self.execute([*self._text_steps(lines, "печать текста"), step("cut")])

    def reprint_last(self) -> None:
        """Print the last document again (95)."""
        self.execute([step("reprint_last")])

    def reset_summary(self) -> None:
        """General clearing of the money counters (77, mode 3, shift closed)."""
        try:
            self._in_mode(Mode.REPORT_Z, [step("general_clearing")])
        finally:
            self._mode = None

    def tech_reset(self) -> None:
        """Technological reset (6B, select mode, shift closed)."""
        try:
            self.execute([*self._mode_steps(Mode.SELECT), step("tech_reset")])
        finally:
            self._mode = None
