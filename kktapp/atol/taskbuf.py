"""The v3 task buffer: the first byte of every packet's DATA (atol-protocol.md §1.3).

The host puts commands into the device's task buffer (Add), asks about them (Req), releases
kept results (Ack) or clears everything (Abort). The device answers with a status byte. The
answer layouts the sources leave open are fixed in :mod:`.model` (sync answers carry no TId,
async A6/A7 on packet ID 0xF0 do). A task is the command-layer message: the 2-byte BCD access
password, then the command bytes.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import NamedTuple

from .codec import CodecError, decode_bcd, encode_bcd
from .framing import MAX_DATA


class Request(enum.IntEnum):
    """Host → device task-buffer requests."""

    ADD = 0xC1  # C1 flags TId task…
    ACK = 0xC2  # C2 TId: release a result kept because of NeedResult
    REQ = 0xC3  # C3 TId: ask a task's state
    ABORT = 0xC4  # C4: cancel every task and clear the buffer
    ACK_ADD = 0xC5  # [U] C5 ackTId flags TId task…


class Status(enum.IntEnum):
    """Device → host status bytes."""

    PENDING = 0xA1
    IN_PROGRESS = 0xA2
    RESULT = 0xA3
    ERROR = 0xA4
    STOPPED = 0xA5
    ASYNC_RESULT = 0xA6
    ASYNC_ERROR = 0xA7
    WAITING = 0xA8
    OVERFLOW = 0xB1
    ALREADY_EXISTS = 0xB2
    NOT_FOUND = 0xB3
    ILLEGAL_VALUE = 0xB4


_STATUS = {int(s): s for s in Status}
#: Statuses that end a task.
FINAL = frozenset({Status.RESULT, Status.ERROR, Status.STOPPED, Status.ASYNC_RESULT, Status.ASYNC_ERROR})
#: Statuses that refuse the request itself (the task never entered the buffer).
REFUSED = frozenset({Status.OVERFLOW, Status.ALREADY_EXISTS, Status.NOT_FOUND, Status.ILLEGAL_VALUE})
#: Statuses followed by a command reply.
WITH_REPLY = frozenset({Status.RESULT, Status.ERROR, Status.ASYNC_RESULT, Status.ASYNC_ERROR})
ASYNC = frozenset({Status.ASYNC_RESULT, Status.ASYNC_ERROR})
#: Statuses followed by a TId: the async results, and Stopped (``A5 TId``, [C Z,K]).
WITH_TID = ASYNC | {Status.STOPPED}
#: Statuses that mean "the task has not ended yet, keep waiting" (Z: A1, A2, A8).
WAITING_STATUSES = frozenset({Status.PENDING, Status.IN_PROGRESS, Status.WAITING})


class Flags(enum.IntFlag):
    """Add flags."""

    NONE = 0
    NEED_RESULT = 0x01  # keep the result until Ack; pushed as A6/A7 when it comes later (C)
    IGNORE_ERROR = 0x02  # run even after an earlier task failed (not Stopped)
    WAIT_ASYNC_DATA = 0x04  # named by Z; no source sets it


class TaskBufError(CodecError):
    """A task-buffer message that cannot be parsed."""


# --------------------------------------------------------------------------- host → device


@dataclass(frozen=True)
class Add:
    """Put ``task`` into the buffer under ``tid``."""

    tid: int
    task: bytes
    flags: Flags = Flags.NONE


@dataclass(frozen=True)
class Ack:
    """Release the kept result of ``tid``."""

    tid: int


@dataclass(frozen=True)
class Req:
    """Ask the state of ``tid``."""

    tid: int


@dataclass(frozen=True)
class Abort:
    """Cancel all tasks, clear the buffer."""


@dataclass(frozen=True)
class AckAdd:
    """[U] Ack ``ack_tid`` and Add ``task`` under ``tid`` in one packet."""

    ack_tid: int
    tid: int
    task: bytes
    flags: Flags = Flags.NONE


Message = Add | Ack | Req | Abort | AckAdd


#: ``C1 flags TId`` before the task of an Add.
ADD_HEADER_BYTES = 3
#: Longest task an Add carries in one packet.
MAX_TASK = MAX_DATA - ADD_HEADER_BYTES


def encode_add(tid: int, task: bytes, flags: Flags = Flags.NONE) -> bytes:
    """Packet DATA of an Add (the driver's most frequent request, without building an :class:`Add`)."""
    return bytes((Request.ADD, flags, tid)) + task


def encode_request(msg: Message) -> bytes:
    """Packet DATA for a task-buffer request."""
    if isinstance(msg, Add):
        return encode_add(msg.tid, msg.task, msg.flags)
    if isinstance(msg, Ack):
        return bytes((Request.ACK, msg.tid))
    if isinstance(msg, Req):
        return bytes((Request.REQ, msg.tid))
    if isinstance(msg, Abort):
        return bytes((Request.ABORT,))
    if isinstance(msg, AckAdd):
        return bytes((Request.ACK_ADD, msg.ack_tid, int(msg.flags), msg.tid)) + msg.task
    raise TypeError(f"not a task-buffer message: {msg!r}")


def decode_request(data: bytes) -> Message:
    """Parse a host packet's DATA (the emulator's side)."""
    if not data:
        raise TaskBufError("empty task-buffer request")
    code, rest = data[0], data[1:]
    if code == Request.ADD and len(rest) >= 2:
        return Add(tid=rest[1], task=bytes(rest[2:]), flags=Flags(rest[0]))
    if code == Request.ACK and len(rest) == 1:
        return Ack(rest[0])
    if code == Request.REQ and len(rest) == 1:
        return Req(rest[0])
    if code == Request.ABORT and not rest:
        return Abort()
    if code == Request.ACK_ADD and len(rest) >= 3:
        return AckAdd(ack_tid=rest[0], flags=Flags(rest[1]), tid=rest[2], task=bytes(rest[3:]))
    raise TaskBufError(f"bad task-buffer request {data[:4].hex(' ')}")


# --------------------------------------------------------------------------- device → host


class Answer(NamedTuple):
    """A device status packet: ``status [TId] reply``; ``tid`` is set for A6/A7 and A5.

    A NamedTuple rather than a frozen dataclass: one per packet read, built at half the cost.
    """

    status: Status
    reply: bytes = b""
    tid: int | None = None

    @property
    def final(self) -> bool:
        """The task has ended (done, failed or stopped)."""
        return self.status in FINAL


def encode_answer(status: Status, reply: bytes = b"", tid: int | None = None) -> bytes:
    """Packet DATA for a device answer; A6/A7 and A5 (Stopped) carry a TId ([C Z,K])."""
    status = Status(status)
    if status in WITH_TID:
        if tid is None:
            raise ValueError(f"{status.name} carries a TId")
        return bytes((status, tid)) + reply
    return bytes((status,)) + reply


def decode_answer(data: bytes) -> Answer:
    """Parse a device packet's DATA (the driver's side)."""
    if not data:
        raise TaskBufError("empty answer")
    status = _STATUS.get(data[0])
    if status is None:
        raise TaskBufError(f"unknown status byte {data[0]:02X}")
    if status in WITH_TID:
        if len(data) < 2:
            if status == Status.STOPPED:
                return Answer(status)  # [U] a bare A5, as older models of this project sent
            raise TaskBufError("async answer without TId")
        return Answer(status, bytes(data[2:]), data[1])
    return Answer(status, bytes(data[1:]))


# --------------------------------------------------------------------------- task body

PASSWORD_BYTES = 2


def encode_task(password: int | str, command: bytes) -> bytes:
    """Task body: access password (2 bytes BCD) then the command bytes."""
    return _password_bcd(int(password)) + command


@functools.lru_cache(maxsize=64)
def _password_bcd(password: int) -> bytes:
    # Every task of every receipt carries the same password.
    return encode_bcd(password, PASSWORD_BYTES)


def decode_task(task: bytes) -> tuple[int, bytes]:
    """Split a task body into (access password, command bytes)."""
    if len(task) < PASSWORD_BYTES + 1:
        raise TaskBufError("task shorter than password + command code")
    return decode_bcd(task[:PASSWORD_BYTES]), bytes(task[PASSWORD_BYTES:])
