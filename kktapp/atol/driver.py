"""ATOL driver: :class:`kktapp.device.Driver` over protocol v3, pipelined.

A receipt is one batch of tasks written to the device in one write; the answers (synchronous
on each Add's packet ID, or A6/A7 pushed later on packet ID 0xF0) are then collected. As the
production drivers do (atol-real-device.md §1), a task whose result the host needs carries
NeedResult and is Acked once read; the others go with flags 0 and report only a failure (A7).
Silence makes the driver ask with Req (C3). The device stops the rest of a batch after a
failing task, so a receipt never closes with a position missing; after any device error the
driver clears the buffer with Abort (C4), cancels the receipt it opened, and raises DeviceError
naming the failing step (with the extended code of register 0x37 behind 0xEE). A lost link in
the middle is raised as LinkError: the outcome is unknown, and the service settles it from the
FN and the number it kept before sending: :meth:`AtolDriver.receipt_since` for a receipt,
:meth:`AtolDriver.last_document` for a shift report (A4 30, register 0x33, A4 45/46).

Positions go as EA → position tags (E8) → EB on FFD 1.05/1.2 firmware and as E6 on FFD 1.0,
chosen from register 0x36 when connecting. Every layout comes from :mod:`.commands`; every
unverified choice from :mod:`.model`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..device import DeviceInfo, DeviceStatus, FnStatus, LastDocument, QuickStatus, ShiftStatus, Totals
from ..domain import (
    SETTLEMENT_REPORT_TITLE,
    TAXATION_TITLES,
    FiscalResult,
    PaymentType,
    Position,
    Receipt,
    TextLine,
    format_rub,
    position_amount,
    taxation_titles,
)
from ..errors import (
    CashOutcomeUnknown,
    DeviceError,
    FrameError,
    KKTError,
    LinkError,
    NotSent,
    NotThisReceipt,
    OutcomeUnknown,
    ReturnCorrectionNotInFfd,
    TaxationNotRegistered,
    drawer_after,
)
from . import codec, commands, model, taskbuf
from .commands import COMMANDS, Command, ShortStatusFlags, StatusFlags
from .errors import ErrorCode, device_error
from .link import Link, LinkStats
from .model import Mode
from .taskbuf import Flags, Status

log = logging.getLogger(__name__)

#: Flags of a task whose result the host waits for ([C C,A,K]); the others go with flags 0.
RESULT_FLAGS = Flags.NEED_RESULT
QUIET_FLAGS = Flags.NONE
#: Most tasks in one write: the device's buffer must hold them all.
WINDOW = model.TASK_BUFFER_CAPACITY
#: Seconds to let the answers to a batch's Adds gather before reading them, while more than one
#: is still to come. The device answers each Add on its own packet ID ([C Z,K] in model.py), one
#: after another as it takes them; read as they came, each answer cost the owner thread a
#: wake-up, a poll and a recv (about 20 µs of CPU each): bench/bench_protocol.py, 10-position
#: receipt, 22 reads and 1.14–1.18 ms of driver CPU before, 3–4 reads and 0.73–0.76 ms with this.
#: Only reads before the last Add answer wait, and the device is busy with the tasks meanwhile,
#: so the receipt ends at most a few ms later.
GATHER_ANSWERS = 0.001
#: Printer trouble in the 45 flags byte.
_PRINTER_TROUBLE = (ShortStatusFlags.PRINTER_OFFLINE | ShortStatusFlags.MECHANICAL_ERROR
                    | ShortStatusFlags.CUTTER_ERROR | ShortStatusFlags.HEAD_OVERHEAT
                    | ShortStatusFlags.PRINTER_ERROR)
_OK = (Status.RESULT, Status.ASYNC_RESULT)
_FAILED = (Status.ERROR, Status.ASYNC_ERROR)
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
    #: The task body (password + command bytes), encoded before anything of a batch is sent.
    task: bytes = b""
    #: Sent with NeedResult: the batch waits for this task's own result.
    need_result: bool = True

    @property
    def name(self) -> str:
        """Russian step name for messages."""
        return self.title or self.command.title

    @property
    def ok(self) -> bool:
        """The task's own result says it was done."""
        return self.answer is not None and self.answer.status in _OK


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


@dataclass
class Registration:
    """What the FN says about the registration (A4 43): organisation INN, RNM, tax systems."""

    inn: str
    rnm: str
    #: Tag 1055 bits: 1 ОСН, 2 УСН доход, 4 УСН доход − расход, 16 ЕСХН, 32 патент.
    tax_systems: int
    modes: int
    registered_at: dt.datetime | None = None


#: Devices (by URL and FN serial) that refused register 0x33 (Z alone has it): their receipts are
#: read from the FN documents. Only which reads to send hangs on it, never what a document is:
#: a new process asks the register once more and learns it again.
_NO_LAST_SALE: set[str] = set()
#: How many documents back a device without register 0x33 is searched for its last receipt.
DOCUMENTS_BACK = 5
#: Most documents :meth:`AtolDriver.receipt_since` reads after a receipt's "before" number. The
#: receipt is the first or, when its 92 opened the shift ([C K]), the second; more documents were
#: made at the device itself meanwhile, and the operator looks at them.
DOCUMENTS_AFTER = 10
#: FFD document types of a receipt (A4 45's docType): a receipt, a correction receipt.
RECEIPT_DOCUMENTS = frozenset({model.DocType.RECEIPT, model.DocType.CORRECTION})


def _settlement_sign(receipt: Receipt) -> int:
    """Tag 1054 of ``receipt`` as the FN stores it."""
    return commands.TAG1054_BY_RECEIPT_TYPE[commands.RECEIPT_TYPES[receipt.type]]


def _document_sign(tlv: dict[int, bytes]) -> int:
    """Tag 1054 of an FN document read by A4 45/46 (its ``tlv``; 0 when it has none)."""
    return codec.decode_le(tlv.get(model.TLV_SIGN, b""))


def _is_receipt_of(tlv: dict[int, bytes], found: FiscalResult, receipt: Receipt) -> bool:
    """A receipt document (its ``tlv``, read as ``found``) is ``receipt``'s: the same settlement
    sign (1054) and total (1020). Nothing else of it is kept in the FN's short form."""
    return _document_sign(tlv) == _settlement_sign(receipt) and found.total == receipt.total


def ffd_version(reply: dict[str, Any]) -> int:
    """The FFD a receipt is formed in, from register 0x36: the lower of the KKT's and the FN's."""
    return min(reply["kkt_ffd"], reply["fn_ffd"]) if reply["fn_ffd"] else reply["kkt_ffd"]


class AtolDriver:
    """A connected ATOL cash register (protocol v3). Not thread-safe: one owner at a time."""

    #: Derived from the command layouts; the contracts validate against it.
    limits = commands.LIMITS

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
        #: FFD version of the firmware (register 0x36), read when connecting.
        self.ffd: int = model.FFD_1_2
        #: TIds whose kept results (NeedResult) are read: Acked in the next write.
        self._acks: list[int] = []
        #: Serial of the FN (A4 31), read when connecting: the key of what is known about its documents.
        self._fn = ""
        #: The registration's taxation systems (A4 43, tag 1055 bits), read at the first receipt
        #: that names one; 0 when the device would not say (then nothing is checked).
        self._tax_systems: int | None = None

    # ------------------------------------------------------------------ connection

    @property
    def connected(self) -> bool:
        """True while the link is believed to be up."""
        return self._link.is_open

    def connect(self, *, read_only: bool = False) -> None:
        """Open the link, clear stale tasks (Abort), read the FFD version (register 0x36), leave
        any mode unless a receipt is open (or ``read_only``: the probe changes nothing).

        Nothing is cancelled here: an open receipt is the service's recovery to decide.
        """
        self._link.open()
        try:
            self._abort()
            self.ffd = self._read_ffd()
            st = self.status()
            if not read_only and not st.receipt_open and st.mode != Mode.SELECT:
                self._run(self._leave_steps())
                self._mode = (Mode.SELECT, 0)
        except KKTError:
            self._link.close()
            raise
        log.info("connected to %s: FFD %s, mode %d.%d, shift %s, receipt %s", self.url,
                 model.FFD_NAMES.get(self.ffd, self.ffd), st.mode, st.submode,
                 "open" if st.shift_open else "closed", st.receipt_state or "none")

    def _read_ffd(self) -> int:
        """FFD of the firmware and FN (register 0x36), and the FN serial (A4 31, the key of what
        is known about its documents). A device without register 0x36 gets EA/EB, the path of
        every current firmware ([C Z,C,K]); E6 only when the device says FFD 1.0."""
        try:
            self._fn = self.command("fn_serial")["fn_serial"]
        except DeviceError as exc:
            log.warning("%s: no FN serial (%s)", self.url, exc.message)
        try:
            reply = self.command("ffd_versions")
        except DeviceError as exc:
            log.warning("%s: no FFD versions register (%s); positions go as EA/EB (FFD 1.05)", self.url,
                        exc.message)
            return model.FFD_1_05
        return ffd_version(reply)

    # ------------------------------------------------------------------ document numbers

    @property
    def _key(self) -> str:
        # The FN serial is unique per FN; the URL keeps two devices (or two emulators) with the
        # same serial apart.
        return f"{self.url}|{self._fn}"

    def close(self) -> None:
        """Close the link (idempotent)."""
        self._link.close()
        self._mode = None
        self._serial = None  # the next connection may reach another device
        self._tax_systems = None  # ... or a register registered anew
        self._acks.clear()

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
        self._acks.clear()  # Abort releases every kept result too
        answer = self._exchange(taskbuf.Abort())
        if answer.status in taskbuf.REFUSED:
            raise LinkError(f"ККТ отклонила сброс буфера заданий (статус {answer.status:02X})")

    def _decode_answer(self, data: bytes) -> taskbuf.Answer:
        try:
            return taskbuf.decode_answer(data)
        except codec.CodecError as exc:
            self._link.close()
            raise FrameError(f"ошибка обмена с ККТ: {exc}") from exc

    def _prepare(self, steps: Sequence[Step]) -> None:
        """Encode every task before the first byte goes out: a value that does not fit its field
        refuses the whole document (NotSent) instead of failing halfway through it."""
        for s in steps:
            try:
                s.task = taskbuf.encode_task(self.access_password, s.command.encode(**s.params))
            except (codec.CodecError, TypeError, ValueError) as exc:
                raise NotSent(f"{NotSent.message} (шаг «{s.name}»: {exc})") from exc
            if len(s.task) > taskbuf.MAX_TASK:
                raise NotSent(f"{NotSent.message} (шаг «{s.name}»: команда длиннее пакета)")

    def _run(self, steps: Sequence[Step]) -> list[dict[str, Any]]:
        """Execute steps in order; returns their decoded replies. Raises BatchFailed/LinkError/NotSent."""
        steps = list(steps)
        self._prepare(steps)
        size = WINDOW if self.pipeline else 1
        replies: list[dict[str, Any]] = []
        for start in range(0, len(steps), size):
            replies += self._batch(steps[start:start + size])
        return replies

    def _batch(self, steps: list[Step]) -> list[dict[str, Any]]:
        """One write of Adds (after the pending Acks), then collect every answer needed."""
        if not self._link.is_open:
            raise LinkError("нет связи с ККТ (не подключена)")
        payloads = [taskbuf.encode_request(taskbuf.Ack(tid)) for tid in self._acks]
        self._acks.clear()
        acks = len(payloads)
        for i, s in enumerate(steps):
            s.tid = self._take_tid()
            s.answer = None
            # The last task always reports: its end proves the quiet ones before it ran.
            s.need_result = s.command.wants_result or i == len(steps) - 1
            flags = RESULT_FLAGS if s.need_result else QUIET_FLAGS
            payloads.append(taskbuf.encode_add(s.tid, s.task, flags))
        ids = self._link.send(payloads)[acks:]
        self.stats.tasks += len(steps)
        by_pid = dict(zip(ids, steps, strict=True))
        by_tid = {s.tid: s for s in steps}
        waiting_sync = set(ids)
        reqs: dict[int, Step] = {}
        failed: Step | None = None
        stopped = False

        first = 0

        def unresolved() -> Step | None:
            """The first step still waiting for its own result. A final answer is never replaced,
            so this only moves forward: no rescan of the batch per packet."""
            nonlocal first
            while first < len(steps) and not (steps[first].need_result and (
                    steps[first].answer is None or not steps[first].answer.final)):
                first += 1
            return steps[first] if first < len(steps) else None

        deadline = time.monotonic() + self.timeout + max(s.command.timeout for s in steps)
        wake = time.monotonic() + model.REQ_AFTER_SILENCE
        while waiting_sync or (failed is None and not stopped and unresolved() is not None):
            packet = self._link.poll(wake, deadline, GATHER_ANSWERS if len(waiting_sync) > 1 else 0.0)
            if packet is None:
                # Silence: ask the first unfinished task that keeps its result (C's fallback).
                wake = time.monotonic() + model.REQ_AFTER_SILENCE
                pending = unresolved()
                if pending is not None and not waiting_sync:
                    (pid,) = self._link.send([taskbuf.encode_request(taskbuf.Req(pending.tid))])
                    reqs[pid] = pending
                continue
            wake = time.monotonic() + model.REQ_AFTER_SILENCE
            answer = self._decode_answer(packet.data)
            if packet.id == model.ASYNC_PACKET_ID:
                s = by_tid.get(answer.tid) if answer.tid is not None else None
                if s is None:
                    log.debug("stale async answer for task %s", answer.tid)
                    continue
            elif packet.id in waiting_sync:
                waiting_sync.discard(packet.id)
                s = by_pid[packet.id]
            elif packet.id in reqs:
                s = reqs.pop(packet.id)
                if answer.status == Status.NOT_FOUND:
                    # The device no longer knows a task it took: its outcome is unknown.
                    self._link.close()
                    raise LinkError(f"ККТ потеряла задание «{s.name}»")
            else:
                log.debug("ignoring stale packet %02X", packet.id)
                continue
            if s.answer is not None and s.answer.final:
                continue  # already known (the async result came before the Add answer)
            if answer.status in taskbuf.REFUSED:
                # Never expected (Abort on connect, window ≤ buffer): the batch cannot be trusted.
                self._link.close()
                raise LinkError(f"ККТ отклонила задание «{s.name}» (статус {answer.status:02X})")
            s.answer = answer
            if answer.status in _FAILED and failed is None:
                failed = s
            elif answer.status == Status.STOPPED:
                stopped = True
            # Progress: the next unfinished task gets its own full timeout.
            pending = unresolved()
            if pending is not None:
                deadline = time.monotonic() + self.timeout + pending.command.timeout

        if failed is not None:
            error = self._step_error(failed)
            # Clear the device's Stopped state and whatever was left in its buffer.
            self._abort()
            raise BatchFailed(failed, self._extended(error), steps)
        if stopped:
            # Stopped without a failure seen in this batch: an earlier session left the device
            # stopped. Clear it; the caller sees a link-level error and may retry.
            self._abort()
            raise LinkError("ККТ остановила задания после прежней ошибки; буфер очищен, повторите")
        replies = []
        for s in steps:
            if s.need_result:
                self._acks.append(s.tid)
            replies.append(self._decode_reply(s) if s.ok else {})
        return replies

    def _decode_reply(self, s: Step) -> dict[str, Any]:
        assert s.answer is not None
        try:
            return s.command.decode_reply(s.answer.reply, step=s.name)
        except codec.CodecError as exc:
            if not s.command.reply_needed:
                # The task succeeded and nothing in its reply is used (model.py, "99 reply"):
                # failing here would report a receipt that 4A already closed as a lost link.
                log.warning("%s: unreadable reply to %s (%s), not used: %s", self.url, s.command.name,
                            s.answer.reply.hex(" "), exc)
                return {}
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

    def _extended(self, error: DeviceError) -> DeviceError:
        """For 0xEE, the extended code from register 0x37 ([S K]) in the error and its text."""
        if error.code != ErrorCode.FN_SEE_REGISTER_55:
            return error
        try:
            reg = self._run([step("extended_error")])[0]
        except (BatchFailed, FrameError):
            return error
        if reg["command"] and reg["command"] != error.command:
            return error
        return device_error(error.code, reg["ext_code"], step=error.step, command=error.command)

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

    def _wait_report(self, command: str) -> None:
        """Poll 45 while the report ``command`` made prints or works in the FN ([C C,Z];
        model.REPORT_PROGRESS_MODES), for up to its model.REPORT_WAIT.

        A poll the device leaves unanswered does not end the wait: K polls on through them until
        its limit, so the link is opened again (Abort first, as on connecting) and polling goes
        on. Only a report still running at the limit is given up as a link error.
        """
        deadline = time.monotonic() + model.REPORT_WAIT[COMMANDS[command].code]
        while True:
            try:
                if not self._link.is_open:
                    self._link.open()
                    self._abort()
                mode = self.command("short_status")["mode"]
            except LinkError as exc:
                if time.monotonic() > deadline:
                    raise
                log.warning("%s: no answer while the report is made (%s); polling again", self.url, exc.message)
            else:
                if mode not in model.REPORT_PROGRESS_MODES:
                    self._mode = commands.split_mode(mode)
                    return
                if time.monotonic() > deadline:
                    raise LinkError("ККТ слишком долго печатает отчёт")
            time.sleep(model.REPORT_POLL)

    # ------------------------------------------------------------------ queries

    def _with_serial(self, steps: list[Step], *, refresh: bool = False) -> list[dict[str, Any]]:
        """Run ``steps``, reading register 22 (the full serial) in the same batch when it is not
        known yet on this connection, or when ``refresh``. Returns the replies of ``steps``.

        A device that refuses the register is remembered as such, so status reads fall back to
        3F's 8 digits without asking again; the steps are then run once more on their own,
        since the failed batch was aborted.
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
        """Full status: 3F + 45 + A4 10 (the current shift) in one round trip."""
        st, short, shift = self._with_serial([step("status"), step("short_status"), step("fn_shift")])
        mode, submode = commands.split_mode(st["mode"])
        self._mode = (mode, submode)
        quick = self._quick_from(st)
        flags = StatusFlags(st["flags"])
        short_flags = ShortStatusFlags(short["flags"])
        return DeviceStatus(
            datetime=quick.datetime,
            serial=self._full_serial(st["serial"]),
            model_code=st["model"],
            mode=mode,
            submode=submode,
            fiscal=bool(flags & StatusFlags.FISCAL),
            shift_open=quick.shift_open,
            # 3F has the last CLOSED shift ([S K]); A4 10 the current one ([S A]; 0x35 too, K).
            shift_number=shift["shift_number"] if quick.shift_open else st["shift_number"],
            receipt_number=st["receipt_number"],
            receipt_state=quick.receipt_state,
            receipt_sum=st["receipt_sum"] or 0,  # None: not BCD (model.py, 3F)
            paper_present=bool(flags & StatusFlags.PAPER_PRESENT) and not short_flags & ShortStatusFlags.NO_PAPER,
            cover_open=bool(flags & StatusFlags.COVER_OPEN),
            drawer_open=bool(flags & StatusFlags.DRAWER_OPEN),
            fn_active=bool(flags & StatusFlags.FN_ACTIVE),
            printer_error=bool(short_flags & _PRINTER_TROUBLE),
            paper_near_end=bool(short_flags & ShortStatusFlags.PAPER_NEAR_END),
        )

    def quick_status(self) -> QuickStatus:
        """3F alone: one task where :meth:`status` takes three (and a fourth on a new link)."""
        (st,) = self.execute([step("status")])
        self._mode = commands.split_mode(st["mode"])
        # Another device on this address makes the next full status read its serial again.
        self._full_serial(st["serial"])
        return self._quick_from(st)

    @staticmethod
    def _quick_from(st: dict[str, Any]) -> QuickStatus:
        """Clock, shift and receipt state from a 3F reply, for the full and the quick status."""
        return QuickStatus(
            datetime=st["datetime"] or dt.datetime.now().replace(microsecond=0),
            shift_open=bool(StatusFlags(st["flags"]) & StatusFlags.SHIFT_OPEN),
            receipt_state=st["receipt_state"],
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
            firmware=f"{info['fw_major']}.{info['fw_minor']}.{info['fw_build']}",
            serial=self._full_serial(st["serial"]),
            protocol=info["protocol"],
        )

    def registration(self) -> Registration:
        """Registration data from the FN (A4 43, [S K]): organisation INN, RNM, tax systems."""
        reg = self.command("registration")
        return Registration(inn=reg["inn"].strip(), rnm=reg["rnm"].strip(), tax_systems=reg["tax_systems"],
                            modes=reg["modes"], registered_at=reg["datetime"])

    def shift_status(self) -> ShiftStatus:
        """Shift state and opening time (register 0x12), number and receipts (A4 10)."""
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
        """Cash in the drawer (4D), shift earnings (58) and the non-resettable sum (register 0x28).

        One round trip. Shift earnings ("выручка смены") = income − outcome of the open shift,
        0 with the shift closed. The non-resettable sum ("необнуляемая сумма") = all income over
        the device's life: register 0x28 for sales and for purchase returns (model.py).
        """
        grand = [step("non_resettable_total", p1=t) for t in model.INCOME_RECEIPT_TYPES]
        drawer, shift, st, *lifetime = self.execute([
            step("cash_in_drawer"), step("last_shift_totals"), step("status"), *grand,
        ])
        self._mode = commands.split_mode(st["mode"])
        shift_open = bool(StatusFlags(st["flags"]) & StatusFlags.SHIFT_OPEN)
        return Totals(
            cash_in_drawer=drawer["amount"],
            shift_earnings=shift["income"] - shift["outcome"] if shift_open else 0,
            total_earnings=sum(r["total"] for r in lifetime),
        )

    # ------------------------------------------------------------------ what a document became

    def _sale_steps(self) -> list[Step]:
        """The reads that tell what the last receipt became: A4 10, A4 30 (FN serial, FD) and,
        unless this device refused it, register 0x33 — last, so that a refusal stops nothing."""
        steps = [step("fn_shift"), step("fn_status", "состояние ФН")]
        if self._key not in _NO_LAST_SALE:
            steps.append(step("last_sale"))
        return steps

    def _sale_replies(self, replies: list[dict[str, Any]], since: int | None) -> tuple[dict, dict, dict]:
        """(sale, A4 10, A4 30) from the replies of :meth:`_sale_steps` (0x33 last when sent)."""
        shift, fn = replies[0], replies[1]
        sale = replies[2] if len(replies) > 2 else self._sale_from_documents(fn, since)
        return sale, shift, fn

    def _read_sales(self, *extra: Step) -> tuple[dict, dict, dict, list[dict[str, Any]]]:
        """Run ``extra`` and the sale reads; a device without register 0x33 is remembered and
        answered from the documents instead (A4 45/46)."""
        try:
            replies = self._run([*extra, *self._sale_steps()])
        except BatchFailed as exc:
            if exc.failed.command.name != "last_sale":
                self._mode = None
                raise exc.error from None
            self._no_last_sale(exc.error)
            replies = self._run([*extra, *self._sale_steps()])
        sale, shift, fn = self._sale_replies(replies[len(extra):], None)
        return sale, shift, fn, replies[:len(extra)]

    def _no_last_sale(self, error: DeviceError) -> None:
        _NO_LAST_SALE.add(self._key)
        log.warning("%s: the device refused register 0x33 (%s); receipts are read from the FN "
                    "documents (A4 45/46)", self.url, error.message)

    def _sale_from_documents(self, fn: dict[str, Any], since: int | None) -> dict[str, Any]:
        """What register 0x33 says, from the FN documents: the newest receipt after ``since``
        (looking back at most DOCUMENTS_BACK documents when ``since`` is None)."""
        real = fn["last_fd_number"]
        low = since if since is not None else max(0, real - DOCUMENTS_BACK)
        for number in range(real, low, -1):
            doc_type, res = self._document_result(number, fn["fn_serial"])
            if doc_type in (model.DocType.RECEIPT, model.DocType.CORRECTION):
                return {"fd_number": number, "fiscal_sign": int(res.fiscal_sign or 0), "total": res.total,
                        "datetime": res.datetime, "receipt_type": 0}
        return {"fd_number": low if since is not None else 0, "fiscal_sign": 0, "total": 0, "datetime": None,
                "receipt_type": 0}

    @staticmethod
    def _sale_result(sale: dict[str, Any], shift: dict[str, Any], fn: dict[str, Any], *,
                     printed: bool = True) -> FiscalResult:
        """The receipt's FiscalResult from register 0x33 (+ A4 10 numbers, A4 30's FN serial)."""
        return FiscalResult(
            fiscal_document_number=sale["fd_number"],
            fiscal_sign=str(sale["fiscal_sign"]),
            receipt_number=shift["receipt_number"],
            shift_number=shift["shift_number"],
            datetime=sale["datetime"] or dt.datetime.now().replace(second=0, microsecond=0),
            total=sale["total"],
            fn_number=fn["fn_serial"],
            printed=printed,
        )

    def read_document(self, fd_number: int) -> tuple[int, dict[int, bytes]]:
        """A document by number: (FFD type, {tag: value}) from A4 45 + A4 46 ([C Z,K])."""
        opened, chunk = self.execute([step("document_open", fd_number=fd_number), step("document_read")])
        data = chunk["data"]
        while len(data) < opened["size"]:
            more = self.command("document_read")["data"]
            if not more:
                break
            data += more
        return opened["doc_type"], commands.parse_tlv(data[:opened["size"]])

    def _document_result(self, fd_number: int, fn_number: str) -> tuple[int, FiscalResult]:
        doc_type, tlv = self.read_document(fd_number)
        return doc_type, self._tlv_result(fd_number, tlv, fn_number)

    @staticmethod
    def _tlv_result(fd_number: int, tlv: dict[int, bytes], fn_number: str) -> FiscalResult:
        """A document's FiscalResult from its TLVs (model.py: the tags and their forms)."""
        unix = codec.decode_le(tlv.get(model.TLV_DATETIME, b""))
        when = dt.datetime.fromtimestamp(unix, dt.timezone.utc).replace(tzinfo=None) if unix else None
        sign = tlv.get(model.TLV_FISCAL_SIGN, b"")
        return FiscalResult(
            fiscal_document_number=codec.decode_le(tlv.get(model.TLV_FD_NUMBER, b"")) or fd_number,
            fiscal_sign=str(int.from_bytes(sign[-4:], "big")) if sign else "",
            receipt_number=codec.decode_le(tlv.get(model.TLV_RECEIPT_NUMBER, b"")),
            shift_number=codec.decode_le(tlv.get(model.TLV_SHIFT_NUMBER, b"")),
            datetime=when or dt.datetime.now().replace(second=0, microsecond=0),
            total=codec.decode_le(tlv.get(model.TLV_TOTAL, b"")),
            fn_number=fn_number,
        )

    def shift_totals(self) -> tuple[int, int]:
        """(income, outcome) of the open shift, or of the shift just closed until the next opens (58).

        Read right after a Z report, these are the Z report's totals the 1C exchange reconciles
        its report block with (model.py, "earnings").
        """
        (shift,) = self.execute([step("last_shift_totals")])
        return shift["income"], shift["outcome"]

    def last_document(self) -> LastDocument:
        """What the FN's last document is (A4 30, 3F, register 0x33, A4 10, A4 45/46): its real
        number, its data, and whether a receipt is open.

        It knows nothing of jobs, and nothing from memory: whether a document is a given
        receipt's is :meth:`receipt_since`'s question, asked with the number the journal kept.
        """
        sale, shift, fn, (st,) = self._read_sales(step("status"))
        self._mode = commands.split_mode(st["mode"])
        fd = fn["last_fd_number"]
        extra: dict[str, Any] = {"receipt_state": st["receipt_state"], "receipt_sum": st["receipt_sum"]}
        receipt_open = st["receipt_state"] != 0
        result = None
        if fd and sale["fd_number"] == fd:
            result = self._sale_result(sale, shift, fn)
            extra["doc_type"] = model.DocType.RECEIPT
            extra["receipt_type"] = sale["receipt_type"]
        elif fd:
            try:
                doc_type, result = self._document_result(fd, fn["fn_serial"])
            except DeviceError as exc:
                if exc.code != ErrorCode.FN_NO_DATA:
                    raise
                log.warning("FN has no data for its own last document %d", fd)
            else:
                extra["doc_type"] = doc_type
        return LastDocument(fd_number=fd, receipt_open=receipt_open, result=result, extra=extra)

    def receipt_since(self, before: int, receipt: Receipt) -> FiscalResult | None:
        """The FN's document of ``receipt`` formed after FD ``before``; None when the FN has no
        receipt after that number, so the receipt certainly was not fiscalised.

        Durable facts only: ``before`` is the number the journal kept before the receipt was
        sent, the rest is read from the FN now, so a new process decides as the one that sent it.
        Every document after ``before`` is read (A4 45/46, [C Z,K]): a shift-open report that 92
        formed ([C K]) or a Z report made at the device is no receipt; a receipt is this one only
        when its type is a receipt's and its settlement sign (1054) and total (1020) are this
        receipt's. Should the FN not give a document back, register 0x33 (the last sale, [S Z])
        may still say it: its number, total and [U] 92 receipt type.

        Raises OutcomeUnknown when the FN cannot tell: a receipt after ``before`` that is not
        this one, a document it does not give back, more than DOCUMENTS_AFTER documents. The
        operator decides those; the receipt is never sent again on a guess.
        """
        sale, shift, fn, _ = self._read_sales()
        real = fn["last_fd_number"]
        if real <= before:
            return None
        what = f"чек на {format_rub(receipt.total)} ₽"
        if real - before > DOCUMENTS_AFTER:
            raise OutcomeUnknown(
                f"{what}: после ФД {before} в ФН уже {real - before} документов (сервис просматривает не больше "
                f"{DOCUMENTS_AFTER}); пробит ли этот чек, решает оператор по документам ФН, сервис его не повторяет")
        receipt_type = commands.RECEIPT_TYPES[receipt.type]
        unsure: list[int] = []
        for number in range(before + 1, real + 1):
            try:
                doc_type, tlv = self.read_document(number)
            except DeviceError as exc:
                if exc.code != ErrorCode.FN_NO_DATA:
                    raise
                if (sale["fd_number"], sale["total"], sale["receipt_type"]) == (number, receipt.total, receipt_type):
                    return self._sale_result(sale, shift, fn)
                unsure.append(number)
                continue
            if doc_type not in RECEIPT_DOCUMENTS:
                continue
            found = self._tlv_result(number, tlv, fn["fn_serial"])
            if _is_receipt_of(tlv, found, receipt):
                return found
            unsure.append(number)
        if unsure:
            raise OutcomeUnknown(
                f"{what}: после ФД {before} в ФН есть чек или документ без данных (ФД "
                f"{', '.join(map(str, unsure))}), но ни один не совпадает с этим чеком по признаку расчёта и "
                "сумме; пробит ли этот чек, решает оператор по документам ФН, сервис его не повторяет")
        return None

    def receipt_document(self, fd_number: int, receipt: Receipt) -> FiscalResult:
        """FD ``fd_number`` read from the FN (A4 45/46, [C Z,K]) when it is ``receipt``'s document:
        a receipt of the same settlement sign (1054) and total (1020) — what :meth:`receipt_since`
        asks of each document. The data an operator cannot give: the receipt's number in its
        shift (1042), the shift (1038), the fiscal sign and the time.

        Raises NotThisReceipt saying why when the FN has no such document or it is another one.
        """
        fn = self.command("fn_status")
        if fd_number > fn["last_fd_number"]:
            raise NotThisReceipt.missing(fd_number, fn["last_fd_number"])
        try:
            doc_type, tlv = self.read_document(fd_number)
        except DeviceError as exc:
            if exc.code != ErrorCode.FN_NO_DATA:
                raise
            raise NotThisReceipt.unreadable(fd_number, exc.message) from None
        if doc_type not in RECEIPT_DOCUMENTS:
            raise NotThisReceipt.not_a_receipt(fd_number, doc_type)
        found = self._tlv_result(fd_number, tlv, fn["fn_serial"])
        if not _is_receipt_of(tlv, found, receipt):
            raise NotThisReceipt.another(fd_number, found.total, _document_sign(tlv), receipt.total,
                                         _settlement_sign(receipt))
        return found

    # ------------------------------------------------------------------ shift and cash

    def _fiscal(self, mode: int, steps: list[Step], *, report: bool = False) -> FiscalResult:
        """Run a document-forming command, then read the document it formed (A4 45/46)."""
        if report:
            self._in_mode(mode, steps)
            self._wait_report(steps[-1].command.name)
            fn = self.command("fn_status")
        else:
            fn = self._in_mode(mode, [*steps, step("fn_status")])[-1]
        return self._document_result(fn["last_fd_number"], fn["fn_serial"])[1]

    def _shift_document(self, mode: int, command: str, cashier_name: str, cashier_inn: str,
                        title: str = "", **params: Any) -> FiscalResult:
        """A report that forms an FN document, with the cashier written just before it
        (model.DOCUMENT_TAGS); ``title`` and ``params`` go to the report's own step.

        Should a device refuse E8 outside a receipt (the model is [U]), the batch stopped at
        that E8 and formed nothing, so the report is made again without the cashier: a shift
        that cannot be opened is far worse than a report without its cashier.
        """
        # Reports that print for a while (5A, 67) are waited for before the FN is read.
        report = COMMANDS[command].code in model.REPORT_WAIT
        cashier = self._attribute_steps(self._cashier(cashier_name, cashier_inn))
        try:
            return self._fiscal(mode, [*cashier, step(command, title, **params)], report=report)
        except DeviceError as exc:
            if not cashier or exc.command != COMMANDS["write_attribute"].code:
                raise
            log.warning("device refused the cashier for %s (%s); sending it without", command, exc.message)
            return self._fiscal(mode, [step(command, title, **params)], report=report)

    def open_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """Open a shift (9A in registration mode), the cashier (1021, 1203) written first."""
        return self._shift_document(Mode.REGISTRATION, "open_shift", cashier_name, cashier_inn)

    def close_shift(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """Z report (5A in mode 3), the cashier written first; waits until it is printed."""
        try:
            return self._shift_document(Mode.REPORT_Z, "close_shift", cashier_name, cashier_inn)
        finally:
            self._mode = None  # whether the device stays in mode 3 after Z is not known [U]

    def x_report(self) -> None:
        """X report (67 1 in mode 2); waits until it is printed."""
        self._in_mode(Mode.REPORT_X, [step("x_report", report_type=model.REPORT_X_DAILY)])
        self._wait_report("x_report")

    def settlement_report(self, cashier_name: str = "", cashier_inn: str = "") -> FiscalResult:
        """«Отчёт о текущем состоянии расчётов» (67 9 in mode 2, model.REPORT_SETTLEMENT_STATE),
        the cashier written first; waits until it is printed, then reads the FN document it
        formed (A4 30, A4 45/46) as a Z report's."""
        return self._shift_document(Mode.REPORT_X, "x_report", cashier_name, cashier_inn,
                                    SETTLEMENT_REPORT_TITLE, report_type=model.REPORT_SETTLEMENT_STATE)

    def cash_in(self, amount: int) -> FiscalResult:
        """Внесение (49); opens a closed shift itself ([C K])."""
        return self._cash("cash_in", amount)

    def cash_out(self, amount: int) -> FiscalResult:
        """Выплата (4F); opens a closed shift itself ([C K])."""
        return self._cash("cash_out", amount)

    def _cash(self, command: str, amount: int) -> FiscalResult:
        """49 or 4F, then 3F (the device's clock) and A4 10 (the shift) in the same batch.

        The FN's last document is never read for it: 49/4F form no FN document
        (model.DocType.CASH_IN), so that document would be an earlier receipt or shift report.
        """
        st, shift = self._in_mode(Mode.REGISTRATION, [
            step(command, amount=amount), step("status"), step("fn_shift"),
        ])[1:]
        return self._cash_result(amount, st, shift)

    #: Jobs whose document the FN does not number (model.DocType.CASH_IN): the owner settles a
    #: lost answer of these by :meth:`document_counter` and :meth:`counted_result`, not by A4 30.
    counted_kinds = frozenset({"cash_in", "cash_out"})

    def document_counter(self) -> int:
        """The cash in the drawer, kopecks (4D, model.CASH_DRAWER_SUM_BYTES): a cash job's
        "before", which the owner writes to the journal before 49/4F goes out."""
        return int(self.command("cash_in_drawer")["amount"])

    def counted_result(self, before: int, amount: int, *, kind: str) -> FiscalResult | None:
        """Whether the cash job ``kind`` of ``amount`` ran since the drawer held ``before``: its
        result when the drawer moved by exactly the amount (49 adds, 4F takes), None when it did
        not move (certainly not done). The owner sent nothing else meanwhile (its queue held).

        Raises OutcomeUnknown when it moved otherwise (something at the device changed the cash
        too, or a Z report cleared it): then nobody can say from the device, and the operator
        decides; the operation is never sent again on a guess.
        """
        drawer, st, shift = self.execute([step("cash_in_drawer"), step("status"), step("fn_shift")])
        self._mode = commands.split_mode(st["mode"])
        now = int(drawer["amount"])
        if now == before:
            return None
        if now == drawer_after(kind, before, amount):
            return self._cash_result(amount, st, shift)
        raise CashOutcomeUnknown.drawer(kind, amount, before, now, "наличные меняли и другие операции")

    def _cash_result(self, amount: int, st: dict[str, Any], shift: dict[str, Any]) -> FiscalResult:
        """A cash operation's result: no FN document (FD 0, no fiscal sign), its amount, the
        shift it fell into (A4 10) and the device's clock (3F)."""
        return FiscalResult(
            fiscal_document_number=0, fiscal_sign="", receipt_number=0, shift_number=shift["shift_number"],
            datetime=st["datetime"] or dt.datetime.now().replace(microsecond=0), total=amount, fn_number=self._fn,
        )

    # ------------------------------------------------------------------ receipts

    def cancel_receipt(self) -> None:
        """Cancel an open receipt (59); no-op when none is open."""
        st = self.status()
        if st.receipt_open:
            self.execute([step("cancel_receipt")])
            self._mode = (Mode.REGISTRATION, 0)

    def receipt_steps(self, receipt: Receipt) -> list[Step]:
        """The tasks of a receipt from opening to the footer (no mode change, no FN reads)."""
        flags = (commands.FLAG_TEST if receipt.test_mode else 0) | (
            commands.FLAG_NO_PRINT if receipt.electronic_only else 0)
        steps = [step("open_receipt", flags=flags, receipt_type=commands.RECEIPT_TYPES[receipt.type])]
        # Receipt tags right after 92, before the first EA ([C C,K], model.py), so never
        # between EA and EB ([S K] ext 0x0208).
        attrs = self._cashier(receipt.cashier_name, receipt.cashier_inn)
        if receipt.taxation is not None:
            # [S K] one byte, the 1055 bit; before the first position (model.py, tag 1055).
            attrs.append((model.TAG_TAXATION, int(receipt.taxation), "система налогообложения"))
        if receipt.customer_contact:
            attrs.append((model.TAG_CUSTOMER_CONTACT, receipt.customer_contact, "телефон или e-mail покупателя"))
        if receipt.settlement_place:
            attrs.append((model.TAG_SETTLEMENT_PLACE, receipt.settlement_place, "место расчётов"))
        if receipt.internet:
            # Only when set: firmware older than the tag may refuse it (model.py, 1125).
            attrs.append((model.TAG_INTERNET, model.INTERNET_SETTLEMENT, "признак расчёта в интернете"))
        if receipt.correction is not None:
            corr = receipt.correction
            attrs.append((model.TAG_CORRECTION_TYPE, 1 if corr.by_order else 0, "тип коррекции"))
            attrs.append((model.TAG_CORRECTION_BASIS, commands.correction_basis(corr.date, corr.order_number),
                          "основание для коррекции"))
        steps += self._attribute_steps(attrs)
        steps += self._text_steps(receipt.header, "заголовок чека")
        position_steps = self._position_steps if self.ffd >= model.FIRST_EA_EB_FFD else self._e6_position_steps
        for i, pos in enumerate(receipt.positions, 1):
            steps += position_steps(i, pos)
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
        """FFD 1.05/1.2: EA, the position's E8 tags, EB with 1212/1214 in it ([C Z,C,K]).

        EB's sum is the position's final amount, discount fields 0: the device prints the
        difference to price x quantity as a discount (model.EB_SUM_IS_POSITION_TOTAL).
        """
        where = f"позиция {i}: «{pos.name}»"
        steps = [step("begin_position", where)]
        if pos.unit != model.POSITION_TAG_DEFAULTS[model.TAG_UNIT]:
            steps.append(step("write_attribute", f"{where}, реквизит {model.TAG_UNIT}", tag=model.TAG_UNIT,
                              value=commands.attribute_value(model.TAG_UNIT, pos.unit)))
        steps.append(step("end_position", where, price=pos.price, quantity=pos.quantity, sum=pos.amount,
                          tax=pos.vat.tag1199, section=pos.department, payment_object=pos.payment_object,
                          payment_method=int(pos.payment_method), name=commands.position_name(pos.name)))
        return steps

    @staticmethod
    def _e6_position_steps(i: int, pos: Position) -> list[Step]:
        """FFD 1.0: E6 (price x quantity and the difference to the amount as a discount or
        markup, model.E6_DISCOUNT_ADJUSTS_SUM), then the position tags that differ from the
        defaults (model.py)."""
        where = f"позиция {i}: «{pos.name}»"
        diff = position_amount(pos.price, pos.quantity) - pos.amount
        steps = [step("register_position", where, name=pos.name, price=pos.price, quantity=pos.quantity,
                      discount_sign=0 if diff >= 0 else 1, discount_sum=abs(diff), tax=pos.vat.tag1199,
                      section=pos.department)]
        if not commands.name_fits_position(pos.name):
            # E6 cut the name to its first bytes; the whole name follows at once as tag 1030.
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
        """87 print field per line ([S C]; 4C would take the text only)."""
        return [step("print_field", f"{where}, строка {i}", **commands.print_field_params(line))
                for i, line in enumerate(lines, 1)]

    def sell(self, receipt: Receipt) -> FiscalResult:
        """Fiscalise a receipt of any settlement type in one pipelined batch.

        Batch: A4 30 (FD number before; [C K,U], where register 0x34 is C's alone and its
        encoding [U]), mode change if needed, the receipt, then
        register 0x33, A4 10 and A4 30: the new document's number, fiscal sign, time, total,
        receipt and shift numbers and the FN serial come back in the same round trip.
        """
        try:
            body = self.receipt_steps(receipt)
        except (codec.CodecError, TypeError, ValueError) as exc:
            raise NotSent(f"{NotSent.message} ({exc})") from exc
        self._check_taxation(receipt)
        if receipt.type.is_correction and receipt.type.is_return and self.ffd < model.FFD_1_2:
            # FFD 1.05 corrections are of 1054 = 1 or 3 only (fiscal-rules.md §2): refused here,
            # before 92, rather than by the FN halfway through the document.
            raise ReturnCorrectionNotInFfd(model.FFD_NAMES.get(self.ffd, str(self.ffd)))
        prefix = [step("fn_status", "состояние ФН")] + self._mode_steps(Mode.REGISTRATION)
        steps = [*prefix, *body, *self._sale_steps()]
        suffix = len(self._sale_steps())
        try:
            replies = self._run(steps)
        except BatchFailed as exc:
            self._mode = None
            if exc.failed is not steps[-1] or exc.failed.command.name != "last_sale":
                return self._after_failed_receipt(receipt, exc, prefix, body)
            # Everything else went through: only register 0x33 is missing on this device.
            self._no_last_sale(exc.error)
            replies = [self._decode_reply(x) if x.ok else {} for x in steps[:-1]]
        except LinkError:
            self._mode = None
            raise
        self._mode = (Mode.REGISTRATION, 0)
        before = replies[0]["last_fd_number"]
        sale, shift, fn = self._sale_replies(replies[len(steps) - suffix:], before)
        if receipt.test_mode:
            return FiscalResult(
                fiscal_document_number=0, fiscal_sign="", receipt_number=0, shift_number=0,
                datetime=fn["datetime"] or dt.datetime.now().replace(second=0, microsecond=0),
                total=receipt.total, fn_number=fn["fn_serial"], test_mode=True,
            )
        if sale["fd_number"] <= before:
            raise LinkError("ККТ закрыла чек, но номер фискального документа не изменился")
        result = self._sale_result(sale, shift, fn)
        if result.total != receipt.total:
            log.error("device total %d differs from receipt total %d (FD %d)", result.total, receipt.total,
                      result.fiscal_document_number)
        return result

    def _registered_tax_systems(self, *, refresh: bool = False) -> int:
        """The registration's taxation systems as 1055 bits (A4 43 byte 39, [S K]); 0 when the
        device does not say. Read once per connection: a register is registered anew rarely,
        and a refusal reads it again before it stands (_check_taxation)."""
        if self._tax_systems is None or refresh:
            try:
                self._tax_systems = int(self.command("registration")["tax_systems"] or 0)
            except DeviceError as exc:
                log.warning("%s: registration not readable (%s); the receipt's taxation system goes unchecked",
                            self.url, exc.message)
                self._tax_systems = 0
        return self._tax_systems

    def _check_taxation(self, receipt: Receipt) -> None:
        """Refuse a taxation system the registration lacks before anything of the receipt is
        sent, as K does (model.py, tag 1055): otherwise the device refuses 1055 in the middle of
        the receipt, or a device that does not check forms it under a system the FN was never
        registered for."""
        if receipt.taxation is None:
            return
        bit = int(receipt.taxation)
        registered = self._registered_tax_systems()
        if registered and not registered & bit:
            registered = self._registered_tax_systems(refresh=True)
        if registered and not registered & bit:
            raise TaxationNotRegistered(TAXATION_TITLES[receipt.taxation], taxation_titles(registered))

    def _after_failed_receipt(self, receipt: Receipt, exc: BatchFailed, prefix: list[Step],
                              body: list[Step]) -> FiscalResult:
        """A task of the receipt failed: was the document formed anyway? If not, clean up.

        Decided by register 0x33 (the last sale): a shift-open document formed by 92 is never
        taken for the receipt.
        """
        before = prefix[0].command.decode_reply(prefix[0].answer.reply)["last_fd_number"] if prefix[0].ok else None
        if not body[0].ok:
            raise exc.error
        sale, shift, fn, (st,) = self._read_sales(step("status"))
        self._mode = commands.split_mode(st["mode"])
        if before is not None and sale["fd_number"] > before and not receipt.test_mode:
            # The document was fiscalised and then something (paper) failed: it counts.
            log.warning("receipt fiscalised as FD %d but %s: %s", sale["fd_number"], exc.failed.name,
                        exc.error.message)
            return self._sale_result(sale, shift, fn, printed=False)
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

    #: Whether the owner may print a copy owed after paper ran out by itself (reprint_last, 95):
    #: no, what 95 prints is not settled (model.REPRINT_OWED_COPY); the operator is told instead.
    prints_owed_copy = model.REPRINT_OWED_COPY

    def reprint_last(self) -> None:
        """95, sent only when an operator asks for it: A names it "print the last document
        again", K "print the deferred Z reports" on FN models ([U] model.REPRINT_OWED_COPY)."""
        self.execute([step("reprint_last")])

    def open_drawer(self) -> None:
        """Open the cash drawer connected to the device (80)."""
        self.execute([step("open_drawer")])

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
