"""Task-buffer messages byte by byte: the length rules and refusals of kktapp/atol/taskbuf.py.

Hand-typed bytes from atol-real-device.md §1 (Z names C1..C4 and the statuses A1..A8, B1..B4;
C and K send ``C1 flags TId task``; A6/A7 and A5 carry the TId, [C Z,K]; C5 is the project's
[U] Ack+Add). Each case pins a boundary the round-trip tests in test_atol_commands.py cannot
see, found by the mutation check (`make mutate`).
"""

from __future__ import annotations

import pytest

from kktapp.atol import taskbuf
from kktapp.atol.taskbuf import Abort, Ack, AckAdd, Add, Answer, Flags, Req, Status

H = bytes.fromhex


def refusal(func, *args) -> str:
    """The exact text of the TaskBufError that ``func(*args)`` raises."""
    with pytest.raises(taskbuf.TaskBufError) as info:
        func(*args)
    return str(info.value)


def test_request_bytes_each_kind():
    assert taskbuf.encode_request(Add(0x22, H("00 00 3F"), Flags.NEED_RESULT)) == H("C1 01 22 00 00 3F")
    assert taskbuf.encode_request(Add(0x01, b"")) == H("C1 00 01")
    assert taskbuf.encode_request(Ack(0x22)) == H("C2 22")
    assert taskbuf.encode_request(Req(0x23)) == H("C3 23")
    assert taskbuf.encode_request(Abort()) == H("C4")
    assert taskbuf.encode_request(AckAdd(0x21, 0x22, H("00 00 45"), Flags.IGNORE_ERROR)) == H("C5 21 02 22 00 00 45")
    with pytest.raises(TypeError, match="^not a task-buffer message: 'C1'$"):
        taskbuf.encode_request("C1")  # type: ignore[arg-type]


def test_request_decoding_at_its_length_limits():
    # The shortest of each kind is accepted, one byte less (or more, for the fixed ones) is not.
    assert taskbuf.decode_request(H("C1 04 10")) == Add(0x10, b"", Flags.WAIT_ASYNC_DATA)
    assert taskbuf.decode_request(H("C1 03 10 00 00 3F")) == Add(
        0x10, H("00 00 3F"), Flags.NEED_RESULT | Flags.IGNORE_ERROR)
    assert taskbuf.decode_request(H("C2 7F")) == Ack(0x7F)
    assert taskbuf.decode_request(H("C3 80")) == Req(0x80)
    assert taskbuf.decode_request(H("C4")) == Abort()
    assert taskbuf.decode_request(H("C5 01 00 02")) == AckAdd(1, 2, b"", Flags.NONE)
    assert taskbuf.decode_request(H("C5 01 01 02 00 00 3F")) == AckAdd(1, 2, H("00 00 3F"), Flags.NEED_RESULT)
    assert refusal(taskbuf.decode_request, H("C1 01")) == "bad task-buffer request c1 01"
    assert refusal(taskbuf.decode_request, H("C2")) == "bad task-buffer request c2"
    assert refusal(taskbuf.decode_request, H("C2 01 02")) == "bad task-buffer request c2 01 02"
    assert refusal(taskbuf.decode_request, H("C3")) == "bad task-buffer request c3"
    assert refusal(taskbuf.decode_request, H("C3 01 02")) == "bad task-buffer request c3 01 02"
    assert refusal(taskbuf.decode_request, H("C4 00")) == "bad task-buffer request c4 00"
    assert refusal(taskbuf.decode_request, H("C5 01 00")) == "bad task-buffer request c5 01 00"
    assert refusal(taskbuf.decode_request, H("C6 01 02 03 04 05")) == "bad task-buffer request c6 01 02 03"
    assert refusal(taskbuf.decode_request, b"") == "empty task-buffer request"


def test_request_codes_are_not_interchangeable():
    # C2 and C3 look alike (code + TId): each must come back as its own kind.
    assert type(taskbuf.decode_request(H("C2 05"))) is Ack
    assert type(taskbuf.decode_request(H("C3 05"))) is Req


def test_answer_bytes():
    assert taskbuf.encode_answer(Status.RESULT, H("55 00 00")) == H("A3 55 00 00")
    assert taskbuf.encode_answer(Status.PENDING) == H("A1")
    assert taskbuf.encode_answer(0xA7, H("55 7E 00"), 0x31) == H("A7 31 55 7E 00")
    assert taskbuf.encode_answer(Status.STOPPED, tid=0x32) == H("A5 32")
    with pytest.raises(ValueError, match="^ASYNC_RESULT carries a TId$"):
        taskbuf.encode_answer(Status.ASYNC_RESULT, H("55 00 00"))
    with pytest.raises(ValueError, match="^STOPPED carries a TId$"):
        taskbuf.encode_answer(Status.STOPPED)


def test_answer_decoding():
    assert taskbuf.decode_answer(H("A3 55 00 00")) == Answer(Status.RESULT, H("55 00 00"), None)
    assert taskbuf.decode_answer(H("A2")) == Answer(Status.IN_PROGRESS, b"", None)
    assert taskbuf.decode_answer(H("A6 57")) == Answer(Status.ASYNC_RESULT, b"", 0x57)
    assert taskbuf.decode_answer(H("A5 33")) == Answer(Status.STOPPED, b"", 0x33)
    assert taskbuf.decode_answer(H("A5")) == Answer(Status.STOPPED, b"", None)  # [U] bare A5
    assert refusal(taskbuf.decode_answer, H("A6")) == "async answer without TId"
    assert refusal(taskbuf.decode_answer, H("A7")) == "async answer without TId"
    assert refusal(taskbuf.decode_answer, b"") == "empty answer"
    assert refusal(taskbuf.decode_answer, H("55 00 00")) == "unknown status byte 55"
    assert refusal(taskbuf.decode_answer, H("0A")) == "unknown status byte 0A"


def test_which_statuses_end_a_task():
    assert [s.name for s in Status if Answer(s).final] == [
        "RESULT", "ERROR", "STOPPED", "ASYNC_RESULT", "ASYNC_ERROR"]


def test_task_body_limits():
    # Password (2 BCD bytes) and at least the command code.
    assert taskbuf.decode_task(H("00 30 3F")) == (30, H("3F"))
    assert refusal(taskbuf.decode_task, H("00 30")) == "task shorter than password + command code"
    assert taskbuf.encode_task(9999, H("45")) == H("99 99 45")
    assert taskbuf.encode_task("30", b"") == H("00 30")
