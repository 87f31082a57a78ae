"""The ATOL 55Ф emulator on the wire: raw packets, no driver, no command table.

Every test talks to a real TCP server on 127.0.0.1 (a free port) through :class:`RawClient`,
which knows only framing and the task buffer. Its command bytes and the fields it reads from
replies are written out by hand below (:data:`ENCODE`, :data:`DECODE`) from the sources'
layouts (atol-real-device.md letter codes), never built from kktapp.atol.commands, so a wrong
layout in the shared table cannot hide here. Reads have deadlines, and nothing asserts on
elapsed time.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from kktapp.atol import framing, model, taskbuf
from kktapp.atol.emulator import Emulator, control
from kktapp.atol.emulator.server import Pace, corrupt
from kktapp.atol.errors import ErrorCode
from kktapp.atol.taskbuf import Flags, Status
from kktapp.shtrih.emulator import Emulator as ShtrihEmulator

READ_TIMEOUT = 5.0


def bcd(value: int, width: int) -> bytes:
    """Big-endian BCD, written out for the tests ([C Z,C,K])."""
    return bytes.fromhex(str(value).zfill(2 * width))


def unbcd(raw: bytes) -> int:
    return int(raw.hex() or "0")


def cp866(text: str) -> bytes:
    """The device code page: CP866 with '№' and '$' swapped (0x24 prints '№')."""
    return text.encode("cp866").translate(bytes.maketrans(b"\x24\xfc", b"\xfc\x24"))


def _e8(tag: int, value: bytes, **_: Any) -> bytes:
    # [C C,K] E8 flags=1 blocks=1 block=0 tag(2 LE) len(2 LE) value
    return b"\xe8\x01\x01\x00" + tag.to_bytes(2, "little") + len(value).to_bytes(2, "little") + value


def _eb(name: str, price: int, quantity: Decimal, tax: int, sum: int | None = None, flags: int = 0x02,
        **_: Any) -> bytes:
    # [C Z,C,K] EB flags price(7) qty(5) sum(7) tax tax_sum(7) section 1212 1214 disc_sign disc(7) res(2) name;
    # [S C] flags 0x02 (no cash check) on every position
    total = sum if sum is not None else int(price * quantity)
    return (bytes((0xEB, flags)) + bcd(price, 7) + bcd(int(quantity * 1000), 5) + bcd(total, 7) + bytes((tax,))
            + bcd(0, 7) + b"\x00\x01\x04\x00" + bcd(0, 7) + b"\x00\x00" + cp866(name))


#: Command bytes by hand (after the 2-byte access password), each from its source.
ENCODE: dict[str, Any] = {
    "status": lambda: b"\x3f",  # [C A,K,Z,U]
    "short_status": lambda: b"\x45",  # [C Z,K]
    "device_type": lambda: b"\xa5",  # [C A,Z]
    "enter_mode": lambda mode, password: bytes((0x56, mode)) + bcd(password, 4),  # [C C,Z]
    "leave_mode": lambda: b"\x48",
    "open_shift": lambda flags=0: bytes((0x9A, flags)),  # [C C,Z]
    "close_shift": lambda: b"\x5a",
    "open_receipt": lambda receipt_type, flags=0: bytes((0x92, flags, receipt_type)),  # [C A,K,Z]
    "begin_position": lambda: b"\xea\x00\x01\x00",  # [C Z,C,K]
    "end_position": _eb,
    "write_attribute": _e8,
    "payment": lambda payment_type, amount: bytes((0x99, 0, payment_type)) + bcd(amount, 5),  # [C C,K]
    "close_receipt": lambda payment_type=1, amount=0: bytes((0x4A, 0, payment_type)) + bcd(amount, 5),  # [C C,K,Z]
    "cancel_receipt": lambda: b"\x59",
    "cash_in": lambda amount: b"\x49\x00" + bcd(amount, 5),  # [C C,K]
    "cash_out": lambda amount: b"\x4f\x00" + bcd(amount, 5),
    "cash_in_drawer": lambda: b"\x4d",
    "last_shift_totals": lambda: b"\x58",  # [S A]
    "non_resettable_total": lambda p1=1: bytes((0x91, 0x28, p1, 0)),  # [S K]
    "shift_state": lambda: b"\x91\x12\x00\x00",  # [S K]
    "serial_number": lambda: b"\x91\x16\x00\x00",  # [C K,U]
    "last_sale": lambda: b"\x91\x33\x00\x00",  # [S Z]
    "cash_register": lambda: b"\x91\x0a\x00\x00",  # [S K] the drawer
    "extended_error": lambda: b"\x91\x37\x00\x00",  # [S K]
    "fn_status": lambda: b"\xa4\x30",  # [C K,U]
    "document_open": lambda fd_number: b"\xa4\x45" + fd_number.to_bytes(4, "little"),  # [C Z,K]
    "document_read": lambda: b"\xa4\x46",
    "reprint_last": lambda: b"\x95",
    "x_report": lambda: b"\x67\x01",  # [S C]
    "settlement_report": lambda: b"\x67\x09",  # [S A] PrintReportCommand.FISCAL
    "print_string": lambda text: b"\x4c" + cp866(text),  # [C A,K,C] text only
    "general_clearing": lambda: b"\x77",
}

#: Reply fields the tests read, by hand from the sources' offsets (reply includes its head).
DECODE: dict[str, Any] = {
    # [C A,K,Z,U] 44 cashier hall YYMMDDhhmmss flags@9 serial@10 model@14 fw@15 mode@17
    # receipt@18 shift@20 state@22 sum@23
    "status": lambda r: {"cashier": unbcd(r[1:2]), "flags": r[9], "serial": unbcd(r[10:14]), "model": r[14],
                         "mode": r[17], "receipt_number": unbcd(r[18:20]), "shift_number": unbcd(r[20:22]),
                         "receipt_state": r[22], "receipt_sum": unbcd(r[23:28])},
    "short_status": lambda r: {"mode": r[1], "flags": r[2]},  # [C Z,K] 55 mode flags
    "device_type": lambda r: {"model": r[3], "name": r[11:].decode("cp866")},  # [C A,Z]
    "payment": lambda r: {"remainder": unbcd(r[2:7]), "change": unbcd(r[7:12])},  # [C C,A] 55 err …
    "cash_in_drawer": lambda r: {"amount": unbcd(r[1:8])},
    "cash_register": lambda r: {"amount": unbcd(r[2:9])},  # [S K] 55 err value(7 BCD)
    "last_shift_totals": lambda r: {"income": unbcd(r[2:9]), "outcome": unbcd(r[9:16])},  # [S A] 55 err …
    "non_resettable_total": lambda r: {"total": unbcd(r[2:9])},  # [S K] 55 err value
    "shift_state": lambda r: {"state": r[2]},
    "serial_number": lambda r: {"serial": r[2:9].hex()},
    # [S Z] 55 err fd(5 BCD) type total(7 BCD) DDMMYYhhmm fiscalSign(5 BCD)
    "last_sale": lambda r: {"fd_number": unbcd(r[2:7]), "receipt_type": r[7], "total": unbcd(r[8:15]),
                            "fiscal_sign": unbcd(r[20:25])},
    "extended_error": lambda r: {"command": int.from_bytes(r[2:4], "big"), "ext": int.from_bytes(r[4:6], "big")},
    "fn_status": lambda r: {"last_fd_number": int.from_bytes(r[28:32], "little")},  # [C K] LE at 28..31
    "document_open": lambda r: {"doc_type": int.from_bytes(r[2:4], "little"),
                                "size": int.from_bytes(r[4:6], "little")},  # [S Z]
    "document_read": lambda r: {"data": r[2:]},
}


def reply_error(reply: bytes) -> int | None:
    """The error code of a ``55 err …`` reply (err != 0), else None."""
    return reply[1] if len(reply) >= 2 and reply[0] == 0x55 and reply[1] else None


class Closed(Exception):
    """The emulator closed the connection."""


class RawClient:
    """A minimal host: sends task-buffer requests, collects answers and async pushes."""

    def __init__(self, port: int, connect: bool = True) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=READ_TIMEOUT)
        self.decoder = framing.Decoder()
        self.pending: list[framing.Packet | framing.BadPacket] = []
        self.pushed: list[taskbuf.Answer] = []
        self.raw = bytearray()
        self.pid = 0
        self.tid = 0

    def close(self) -> None:
        self.sock.close()

    # -- bytes

    def next_event(self) -> framing.Packet | framing.BadPacket:
        """The next decoded packet (or broken packet) from the device."""
        while not self.pending:
            try:
                chunk = self.sock.recv(4096)
            except (ConnectionResetError, BrokenPipeError) as exc:
                raise Closed() from exc
            if not chunk:
                raise Closed()
            self.raw += chunk
            self.pending.extend(self.decoder.feed(chunk))
        return self.pending.pop(0)

    def send_packet(self, data: bytes, pid: int | None = None) -> int:
        if pid is None:
            self.pid = (self.pid + 1) % (model.ID_MAX + 1)
            pid = self.pid
        self.sock.sendall(framing.encode_packet(pid, data))
        return pid

    def answer_to(self, pid: int) -> taskbuf.Answer:
        """Wait for the answer on packet ``pid``; async pushes on 0xF0 are kept aside."""
        while True:
            ev = self.next_event()
            assert isinstance(ev, framing.Packet), ev
            if ev.id == model.ASYNC_PACKET_ID:
                self.pushed.append(taskbuf.decode_answer(ev.data))
                continue
            assert ev.id == pid, (ev, pid)
            return taskbuf.decode_answer(ev.data)

    def wait_push(self) -> taskbuf.Answer:
        """Next async A6/A7 packet."""
        while not self.pushed:
            ev = self.next_event()
            assert isinstance(ev, framing.Packet) and ev.id == model.ASYNC_PACKET_ID, ev
            self.pushed.append(taskbuf.decode_answer(ev.data))
        return self.pushed.pop(0)

    def request(self, msg: taskbuf.Message) -> taskbuf.Answer:
        return self.answer_to(self.send_packet(taskbuf.encode_request(msg)))

    # -- tasks

    def add(self, command: str, /, *, task_flags: Flags = Flags.NONE, access: int = 0, tid: int | None = None,
            **params: Any) -> tuple[int, taskbuf.Answer]:
        if tid is None:
            self.tid = (self.tid + 1) % (model.ID_MAX + 1)
            tid = self.tid
        body = bcd(access, 2) + ENCODE[command](**params)
        return tid, self.request(taskbuf.Add(tid, body, task_flags))

    def call(self, command: str, /, **params: Any) -> dict[str, Any]:
        """Run a command; device errors come back as ``{"error": code}`` (Stopped lifted by Ack)."""
        if command == "position":
            # FFD 1.2: a position is EA then EB ([C Z,C,K]).
            first = self.call("begin_position")
            return first if "error" in first else self.call("end_position", **params)
        tid, ans = self.add(command, **params)
        assert ans.status in (Status.RESULT, Status.ERROR), ans
        if ans.status == Status.ERROR:
            # The task status tells a failure; 45's reply "55 mode flags" looks like 55 err ext.
            err = reply_error(ans.reply)
            assert err is not None
            assert self.request(taskbuf.Ack(tid)).status == Status.RESULT
            return {"error": err}
        assert ans.reply[:1] in (b"\x55", b"\x44", b"\x4d", b"\x00"), ans
        return DECODE[command](ans.reply) if command in DECODE else {}

    def error(self, command: str, /, **params: Any) -> int | None:
        return self.call(command, **params).get("error")

    # -- common sequences

    def wait_ready(self) -> None:
        """[C C,Z] A report still printing (0x23, 0x22) or in the FN (0x17): wait it out."""
        deadline = time.monotonic() + READ_TIMEOUT
        while self.call("short_status")["mode"] in (0x23, 0x17, 0x22) and time.monotonic() < deadline:
            time.sleep(0.02)

    def mode(self, mode: int, password: int = 30) -> None:
        self.wait_ready()
        if self.call("status")["mode"] & 0x0F != 0:
            assert self.error("leave_mode") is None
        assert self.error("enter_mode", mode=mode, password=password) is None

    def open_shift(self) -> None:
        self.mode(model.Mode.REGISTRATION)
        assert self.error("open_shift") is None

    def sell(self, *items: tuple[str, int, str, int], pay_type: int = 1, pay: int = 0, receipt_type: int = 1,
             flags: int = 0, contact: str = "") -> int | None:
        """Open, register, pay, close; returns the first error code or None."""
        steps: list[tuple[str, dict[str, Any]]] = [("open_receipt", {"receipt_type": receipt_type, "flags": flags})]
        if receipt_type in (7, 8, 9, 10):
            # [C] a correction: 1173 (own initiative), 1174 = STLV of 1178 (2026-02-03, UnixTime 4 LE).
            steps.append(("write_attribute", {"tag": 1173, "value": b"\x00"}))
            steps.append(("write_attribute", {"tag": 1174, "value": bytes.fromhex("9A 04 04 00 80 3A 81 69")}))
        for name, price, qty, tax in items:
            steps.append(("position", {"name": name, "price": price, "quantity": Decimal(qty), "tax": tax}))
        if contact:
            steps.append(("write_attribute", {"tag": model.TAG_CUSTOMER_CONTACT, "value": contact.encode()}))
        if pay:
            steps.append(("payment", {"payment_type": pay_type, "amount": pay}))
        steps.append(("close_receipt", {"payment_type": pay_type}))
        for name, params in steps:
            err = self.error(name, **params)
            if err is not None:
                return err
        return None


BREAD = ("Хлеб \"Бородинский\" №1", 5_000, "2", 11)  # 22 % (tag 1199 = 11)
MILK = ("Молоко 1 л", 8_990, "1.5", 2)  # 10 %


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as e:
        yield e


@pytest.fixture
def client(emu: Emulator) -> Iterator[RawClient]:
    c = RawClient(emu.port)
    assert c.request(taskbuf.Abort()).status == Status.RESULT
    yield c
    c.close()


def reconnect(emu: Emulator, old: RawClient | None = None) -> RawClient:
    """A new client once the emulator has let the old connection go."""
    if old is not None:
        old.close()
    return reconnect_port(emu.port)


def reconnect_port(port: int) -> RawClient:
    """A new client of the emulator on ``port`` (retried while it still holds an old link)."""
    deadline = time.monotonic() + READ_TIMEOUT
    while True:
        c = RawClient(port)
        try:
            assert c.request(taskbuf.Abort()).status == Status.RESULT
            return c
        except (Closed, OSError):
            c.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


# --------------------------------------------------------------------------- link and task buffer


def test_status_identifies_a_55f(client: RawClient, emu: Emulator) -> None:
    st = client.call("status")
    assert st["model"] == 62
    assert st["mode"] == 0
    assert st["serial"] == int(emu.state.serial[-8:])  # 3F has room for 8 digits only
    assert client.call("serial_number") == {"serial": emu.state.serial}  # register 22: all 14
    assert st["flags"] & 0x08
    assert not st["flags"] & 0x02
    info = client.call("device_type")
    assert info["model"] == 62 and info["name"] == "АТОЛ 55Ф"


def test_second_connection_is_refused_until_the_first_leaves(emu: Emulator, client: RawClient) -> None:
    second = RawClient(emu.port)
    with pytest.raises(Closed):
        second.request(taskbuf.Abort())
    second.close()
    # The first one is not disturbed.
    assert client.call("status")["model"] == 62
    third = reconnect(emu, client)
    assert third.call("status")["model"] == 62
    third.close()


def test_stopped_rule_until_ack(client: RawClient) -> None:
    tid, ans = client.add("open_receipt", receipt_type=1)  # select mode: wrong mode
    assert ans.status == Status.ERROR
    assert ans.reply == bytes((0x55, ErrorCode.WRONG_MODE, 0))
    _, ans = client.add("status")
    assert ans.status == Status.STOPPED
    _, ans = client.add("status", task_flags=Flags.IGNORE_ERROR)
    assert ans.status == Status.RESULT
    assert client.request(taskbuf.Ack(tid)).status == Status.RESULT
    _, ans = client.add("status")
    assert ans.status == Status.RESULT


def test_need_result_keeps_the_result_until_ack(client: RawClient) -> None:
    # [C C,A] a NeedResult Add is answered at once; the result always comes as A6 on 0xF0
    # (atol4j reads results only from there).
    tid, ans = client.add("status", task_flags=Flags.NEED_RESULT)
    assert ans.status in (Status.PENDING, Status.IN_PROGRESS)
    push = client.wait_push()
    assert push.status == Status.ASYNC_RESULT and push.tid == tid and push.reply[0] == 0x44
    again = client.request(taskbuf.Req(tid))
    assert again.status == Status.RESULT and again.reply == push.reply
    _, dup = client.add("status", tid=tid)
    assert dup.status == Status.ALREADY_EXISTS
    assert client.request(taskbuf.Ack(tid)).status == Status.RESULT
    assert client.request(taskbuf.Req(tid)).status == Status.NOT_FOUND
    # Without NeedResult the result is forgotten once delivered.
    tid2, _ = client.add("status")
    assert client.request(taskbuf.Req(tid2)).status == Status.NOT_FOUND


def test_async_result_on_f0_when_the_device_is_busy(emu: Emulator, client: RawClient) -> None:
    emu.set_device_time(0.05)
    tid, ans = client.add("status", task_flags=Flags.WAIT_ASYNC_DATA | Flags.NEED_RESULT)
    assert ans.status in (Status.PENDING, Status.IN_PROGRESS)
    push = client.wait_push()
    assert push.status == Status.ASYNC_RESULT and push.tid == tid
    assert DECODE["status"](push.reply)["model"] == 62
    assert client.request(taskbuf.Req(tid)).status == Status.RESULT
    assert client.request(taskbuf.Ack(tid)).status == Status.RESULT
    # A failing task is pushed as A7 with the 55 err ext reply.
    tid, ans = client.add("close_shift", task_flags=Flags.WAIT_ASYNC_DATA)
    push = client.wait_push()
    assert push.status == Status.ASYNC_ERROR and push.tid == tid
    assert push.reply == bytes((0x55, ErrorCode.WRONG_MODE, 0))


def test_without_async_flag_the_host_polls(emu: Emulator, client: RawClient) -> None:
    emu.set_device_time(0.02)
    tid, ans = client.add("status")
    assert not ans.final
    deadline = time.monotonic() + READ_TIMEOUT
    while True:
        ans = client.request(taskbuf.Req(tid))
        if ans.final or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert ans.status == Status.RESULT
    assert not client.pushed


def test_need_result_task_is_pushed_and_kept_until_ack(emu: Emulator, client: RawClient) -> None:
    # [C C] NeedResult: A6 on packet 0xF0 when the Add was answered first; kept for Req until Ack.
    emu.set_device_time(0.02)
    tid, ans = client.add("status", task_flags=Flags.NEED_RESULT)
    assert not ans.final
    push = client.wait_push()
    assert push.status == Status.ASYNC_RESULT and push.tid == tid and push.reply[0] == 0x44
    assert client.request(taskbuf.Req(tid)).status == Status.RESULT
    assert client.request(taskbuf.Ack(tid)).status == Status.RESULT
    assert client.request(taskbuf.Req(tid)).status == Status.NOT_FOUND


def test_a_failed_flag_0_task_pushes_a7_and_stops_the_rest_with_a5_tid(emu: Emulator, client: RawClient) -> None:
    # [S C] A7 for a failed task even without NeedResult; [C Z,K] later tasks: A5 TId.
    emu.set_device_time(0.02)
    bad, ans = client.add("open_receipt", receipt_type=1)  # select mode: 0x66
    assert not ans.final
    later, ans2 = client.add("status", task_flags=Flags.NEED_RESULT)
    push = client.wait_push()
    assert push.status == Status.ASYNC_ERROR and push.tid == bad and push.reply[:2] == b"\x55\x66"
    stopped = client.request(taskbuf.Req(later))
    assert stopped.status == Status.STOPPED and stopped.tid == bad
    assert client.request(taskbuf.Abort()).status == Status.RESULT


def test_bad_task_buffer_requests_get_b4_with_the_parameter(client: RawClient) -> None:
    # [S K] B4 then the index of the bad parameter: 1 = TId (above DF).
    ans = client.request(taskbuf.Add(0xE5, b"\x00\x00\x3f"))
    assert (ans.status, ans.reply) == (Status.ILLEGAL_VALUE, b"\x01")
    pid = client.send_packet(b"\xc2")  # Ack without its TId
    assert client.answer_to(pid).status == Status.ILLEGAL_VALUE


def test_a_client_that_reads_results_only_from_f0(client: RawClient, emu: Emulator) -> None:
    # [S A] atol4j sends every task with NeedResult, ignores the synchronous answer, completes
    # the task on A6/A7 (packet 0xF0) and Acks it: a whole receipt must work that way.
    def run(command: str, **params: Any) -> bytes:
        tid, _ = client.add(command, task_flags=Flags.NEED_RESULT, **params)
        push = client.wait_push()
        assert push.tid == tid and push.status == Status.ASYNC_RESULT, (command, push)
        assert client.request(taskbuf.Ack(tid)).status == Status.RESULT
        return push.reply

    assert run("status")[0] == 0x44
    assert run("enter_mode", mode=1, password=30) == b"\x55\x00\x00"
    run("open_receipt", receipt_type=1)  # opens the shift too
    run("begin_position")
    run("end_position", name="Хлеб", price=5000, quantity=Decimal(2), tax=11)
    # [C C,A] 55 err remainder(5) change(5): 12 bytes
    assert run("payment", payment_type=1, amount=10000) == bytes.fromhex("55 00 00 00 00 00 00 00 00 00 00 00")
    run("close_receipt", payment_type=1)
    assert DECODE["last_sale"](run("last_sale"))["total"] == 10000
    assert [d["type"] for d in emu.documents()] == ["open_shift", "receipt"]


def test_a_busy_device_keeps_its_own_pace_when_the_host_is_late() -> None:
    # The emulated device's time must not stretch with the emulator's scheduling delays: a
    # benchmark would charge them to the service. Three tasks sent at once, 0.1 s each, whose
    # executor got the CPU late every time, still end 0.1 s apart from their common arrival.
    pace = Pace()
    assert [pace.end_of(10.0, 0.1) for _ in range(3)] == pytest.approx([10.1, 10.2, 10.3])
    # After an idle spell the next task starts when it arrives, not when the last one ended.
    assert pace.end_of(50.0, 0.1) == pytest.approx(50.1)
    # A task that arrives while the device is still busy waits for it.
    assert pace.end_of(50.05, 0.1) == pytest.approx(50.2)
    # An abandoned task frees the device at once.
    pace.stop(50.12)
    assert pace.end_of(50.13, 0.1) == pytest.approx(50.23)


def test_a_full_buffer_refuses_an_add_with_b1_until_its_tasks_end(emu: Emulator, client: RawClient,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # The emulator's model (model.TASK_BUFFER_CAPACITY is [U]): the running task and the queued
    # ones fill the buffer; finished ones kept for an Ack do not.
    monkeypatch.setattr(model, "TASK_BUFFER_CAPACITY", 3)
    kept, ans = client.add("status", task_flags=Flags.NEED_RESULT)  # ends at once, kept until Ack
    client.wait_push()
    emu.set_device_time(0.3)
    busy = [client.add("status")[1] for _ in range(3)]
    assert all(a.status in (Status.PENDING, Status.IN_PROGRESS) for a in busy)
    assert client.add("status")[1].status == Status.OVERFLOW
    emu.set_device_time(0)
    deadline = time.monotonic() + READ_TIMEOUT
    while client.add("status")[1].status == Status.OVERFLOW:
        assert time.monotonic() < deadline, "the buffer never emptied"
        time.sleep(0.05)
    assert client.request(taskbuf.Req(kept)).status == Status.RESULT  # still kept meanwhile


@pytest.mark.parametrize("make", [Emulator, ShtrihEmulator], ids=["atol", "shtrih"])
def test_a_client_accepted_as_the_power_goes_off_is_dropped_with_it(make, monkeypatch: pytest.MonkeyPatch) -> None:
    # The accept thread has taken a client but not yet admitted it when the power goes off
    # (a host reconnecting at that moment): the device must not serve it once off.
    with make() as emu:
        admit = emu.server._admit
        taken = threading.Event()

        def late(sock: socket.socket) -> bool:
            taken.set()
            time.sleep(0.3)  # long enough for power_off to have dropped whatever it would
            return admit(sock)

        monkeypatch.setattr(emu.server, "_admit", late)
        host = socket.create_connection(("127.0.0.1", emu.port), timeout=READ_TIMEOUT)
        try:
            assert taken.wait(READ_TIMEOUT)
            emu.power_off()
            try:
                assert host.recv(16) == b""  # closed by the device, not left open and served
            except ConnectionResetError:
                pass
        finally:
            host.close()


def test_abort_clears_the_buffer(emu: Emulator, client: RawClient) -> None:
    emu.set_device_time(0.5)
    tids = [client.add("status")[0] for _ in range(3)]
    assert client.request(taskbuf.Abort()).status == Status.RESULT
    for tid in tids:
        assert client.request(taskbuf.Req(tid)).status == Status.NOT_FOUND


def test_bad_crc_from_host_gets_an_empty_packet_back(client: RawClient) -> None:
    raw = bytearray(framing.encode_packet(0x21, taskbuf.encode_request(taskbuf.Abort())))
    raw[-1] ^= 0x01 if raw[-1] not in (0xFC, 0xFF) else 0x02
    client.sock.sendall(bytes(raw))
    ev = client.next_event()
    assert ev == framing.Packet(0x21, b"")


def test_empty_packet_asks_for_a_resend(client: RawClient) -> None:
    pid = client.send_packet(taskbuf.encode_request(taskbuf.Abort()))
    first = client.answer_to(pid)
    client.send_packet(b"", pid=pid)
    assert client.answer_to(pid) == first


def test_latency_both_ways_keeps_order(emu: Emulator, client: RawClient) -> None:
    emu.set_latency(0.01)
    pids = [client.send_packet(taskbuf.encode_request(taskbuf.Req(0x50 + i))) for i in range(5)]
    for pid in pids:
        assert client.answer_to(pid).status == Status.NOT_FOUND


def test_an_answer_without_latency_does_not_overtake_a_delayed_one(emu: Emulator, client: RawClient) -> None:
    # An answer made after the latency dropped must not leave before one made while it was
    # still high and not yet sent: on a wire they go out in the order they were made.
    emu.set_latency(0.5)
    first = client.send_packet(taskbuf.encode_request(taskbuf.Req(0x50)))
    time.sleep(0.7)  # handled at 0.5 s; its answer leaves at 1.0 s
    emu.set_latency(0)
    second = client.send_packet(taskbuf.encode_request(taskbuf.Req(0x51)))
    assert client.answer_to(first).status == Status.NOT_FOUND
    assert client.answer_to(second).status == Status.NOT_FOUND


# --------------------------------------------------------------------------- modes, passwords, errors


def test_passwords_and_modes(client: RawClient) -> None:
    assert client.error("enter_mode", mode=1, password=99) == ErrorCode.WRONG_PASSWORD
    assert client.error("enter_mode", mode=3, password=5) == ErrorCode.WRONG_PASSWORD  # cashier: no Z
    assert client.error("enter_mode", mode=1, password=5) is None
    st = client.call("status")
    assert st["mode"] == 1 and st["cashier"] == 5
    assert client.error("enter_mode", mode=2, password=30) == ErrorCode.WRONG_MODE  # leave first
    assert client.error("leave_mode") is None
    assert client.call("status")["mode"] == 0
    bad, ans = client.add("status", access=1234)
    assert ans.reply == bytes((0x55, model.WRONG_PASSWORD_ERROR, 0))
    assert client.request(taskbuf.Abort()).status == Status.RESULT  # [C K,C] recovery after an error
    # [S K] administrator 29 besides the system administrator 30 and cashiers 1..28.
    assert client.error("enter_mode", mode=3, password=29) is None
    assert client.call("status")["cashier"] == 29


def test_receipt_errors(client: RawClient, emu: Emulator) -> None:
    client.mode(1)
    # [C K] 92 opens a closed shift itself (no 0x9D): shift report FD 1, then the receipt.
    assert client.error("open_receipt", receipt_type=1) is None
    assert [d["type"] for d in emu.documents()] == ["open_shift"]
    assert client.error("cancel_receipt") is None
    assert client.error("open_shift") == ErrorCode.SHIFT_OPEN
    client.mode(3)
    assert client.error("close_shift") is None
    client.mode(1)
    assert client.error("cash_in", amount=100) is None  # 49 opens it too
    assert client.call("status")["flags"] & 0x02
    client.mode(3)
    assert client.error("close_shift") is None
    client.mode(1)
    assert client.error("open_shift") is None
    assert client.error("open_shift") == ErrorCode.SHIFT_OPEN
    assert client.error("open_receipt", receipt_type=3) == ErrorCode.BAD_RECEIPT_TYPE
    assert client.error("position", name="x", price=1, quantity=Decimal(1), tax=11) == \
        ErrorCode.RECEIPT_CLOSED
    assert client.error("open_receipt", receipt_type=1) is None
    assert client.error("open_receipt", receipt_type=1) == ErrorCode.RECEIPT_OPEN
    assert client.error("position", name="x", price=1000, quantity=Decimal(1), tax=11) is None
    assert client.error("payment", payment_type=2, amount=400) is None
    assert client.error("close_receipt", payment_type=2) is None  # 4A with sum 0 pays the rest
    # 4A with an explicit short sum: payments less than the total.
    assert client.error("open_receipt", receipt_type=1) is None
    assert client.error("position", name="x", price=1000, quantity=Decimal(1), tax=11) is None
    assert client.error("close_receipt", payment_type=2, amount=300) == ErrorCode.PAYMENTS_LESS_THAN_TOTAL
    assert client.call("status")["receipt_state"] == 1
    assert client.error("leave_mode") == ErrorCode.RECEIPT_OPEN
    assert client.error("cancel_receipt") is None
    assert client.call("status")["receipt_state"] == 0


def test_eb_without_flag_0x02_checks_the_drawer_even_for_a_card_refund(client: RawClient) -> None:
    # [S C] AddPositionCommand: without 0x02 the device refuses even a refund paid by card when
    # the drawer cannot cover it; with 0x02 (what C always sends) the position goes through.
    client.open_shift()
    assert client.error("open_receipt", receipt_type=2) is None
    assert client.error("begin_position") is None
    assert client.error("end_position", name="x", price=1000, quantity=Decimal(1), tax=11, flags=0) == \
        ErrorCode.NO_CASH
    assert client.error("end_position", name="x", price=1000, quantity=Decimal(1), tax=11) is None
    assert client.error("close_receipt", payment_type=2) is None


def test_cash_out_and_cash_returns_need_cash(client: RawClient, emu: Emulator) -> None:
    client.open_shift()
    assert client.error("cash_out", amount=100) == ErrorCode.NO_CASH
    assert client.sell(BREAD, receipt_type=2) == ErrorCode.NO_CASH  # cash return from an empty drawer
    assert client.error("cancel_receipt") is None
    assert client.error("cash_in", amount=50_000) is None
    assert client.sell(BREAD, pay=20_000) is None  # 100.00 ₽ cash, 200.00 given, 100.00 change
    assert client.call("cash_in_drawer")["amount"] == 60_000
    assert client.error("cash_out", amount=60_000) is None
    assert emu.state.cash == 0


def test_cash_in_and_out_move_the_drawer_and_form_no_fn_document(client: RawClient, emu: Emulator) -> None:
    """[C] 49/4F form no FN document (model.DocType.CASH_IN): the drawer (register 0x0A, 4D)
    moves, the FD number (A4 30) does not, and A4 45 and 0x33 know nothing of them."""
    client.open_shift()
    assert client.sell(BREAD, pay_type=1) is None
    fd = client.call("fn_status")["last_fd_number"]
    sale = client.call("last_sale")
    drawer = client.call("cash_register")["amount"]
    assert drawer == client.call("cash_in_drawer")["amount"] == 10_000
    assert client.error("cash_in", amount=50_000) is None
    assert client.call("cash_register")["amount"] == drawer + 50_000
    assert client.error("cash_out", amount=20_000) is None
    assert client.call("cash_register")["amount"] == client.call("cash_in_drawer")["amount"] == drawer + 30_000
    assert client.call("fn_status")["last_fd_number"] == fd == emu.state.fd_number
    assert client.call("last_sale") == sale
    assert client.error("document_open", fd_number=fd + 1) == ErrorCode.FN_NO_DATA
    assert [d["type"] for d in emu.documents()] == ["open_shift", "receipt"]
    assert [(d["type"], d["total"]) for d in emu.cash_operations()] == [("cash_in", 50_000), ("cash_out", 20_000)]
    # Not settlements: the shift's receipt counters (58) do not count them.
    assert client.call("last_shift_totals") == {"income": 10_000, "outcome": 0}


def test_cash_out_with_the_shift_closed_opens_it(client: RawClient, emu: Emulator) -> None:
    """[S K] 4F is an "operation that opens a shift": the FN forms the shift-open report, the
    cash-out itself forms nothing (atol-real-device.md §6)."""
    client.open_shift()
    assert client.error("cash_in", amount=50_000) is None
    client.mode(3)
    assert client.error("close_shift") is None
    client.wait_ready()
    client.mode(1)
    assert client.error("cash_out", amount=20_000) is None
    assert client.call("status")["flags"] & 0x02
    assert [d["type"] for d in emu.documents()] == ["open_shift", "close_shift", "open_shift"]
    assert client.call("fn_status")["last_fd_number"] == 3
    assert emu.state.cash == 30_000


def test_shift_and_non_resettable_totals(tmp_path: Any) -> None:
    state = tmp_path / "kkt.json"
    with Emulator(state_path=state) as emu:
        c = reconnect(emu)
        zero = {"income": 0, "outcome": 0}
        assert c.call("last_shift_totals") == zero and c.call("non_resettable_total") == {"total": 0}
        c.open_shift()
        assert c.error("cash_in", amount=100_000) is None  # not a settlement: counts nothing
        assert c.sell(BREAD, pay_type=2) is None  # приход 10 000
        assert c.sell(MILK, pay_type=1, pay=20_000) is None  # приход 13 485, change given
        assert c.sell(BREAD, pay_type=1, receipt_type=2) is None  # возврат прихода 10 000
        assert c.sell(MILK, pay_type=1, receipt_type=4) is None  # расход 13 485
        assert c.sell(("Коррекция", 700, "1", 11), pay_type=2, receipt_type=10) is None  # возврат расхода
        assert c.sell(BREAD, pay_type=2, flags=0x01) is None  # test mode: counts nothing
        shift = {"income": 10_000 + 13_485 + 700, "outcome": 10_000 + 13_485}
        assert c.call("last_shift_totals") == shift and c.call("non_resettable_total") == {"total": 10_000 + 13_485}
        c.mode(3)
        assert c.error("close_shift") is None
        # A closed shift: 58 still answers the last shift.
        assert c.call("last_shift_totals") == shift
        c.mode(1)
        assert c.error("open_shift") is None
        assert c.call("last_shift_totals") == zero
        assert c.sell(BREAD, pay_type=2) is None
        assert c.call("last_shift_totals") == {"income": 10_000, "outcome": 0}
        c.close()
    with Emulator(state_path=state) as emu:  # persisted
        c = reconnect(emu)
        assert c.call("non_resettable_total") == {"total": 10_000 + 13_485 + 10_000}  # p1 = 1: sales
        assert c.call("last_shift_totals") == {"income": 10_000, "outcome": 0}
        c.mode(3)
        assert c.error("close_shift") is None
        c.wait_ready()
        assert c.error("general_clearing") is None
        # General clearing zeroes the cash and the shift counters, not the non-resettable ones.
        assert c.call("cash_in_drawer")["amount"] == 0
        assert c.call("last_shift_totals") == zero
        assert c.call("non_resettable_total") == {"total": 10_000 + 13_485 + 10_000}
        c.close()


def test_payment_reply_has_remainder_and_change(client: RawClient) -> None:
    client.open_shift()
    assert client.error("open_receipt", receipt_type=1) is None
    assert client.error("position", name="a", price=10_000, quantity=Decimal(1), tax=11) is None
    assert client.call("payment", payment_type=2, amount=4_000) == {"remainder": 6_000, "change": 0}
    assert client.call("payment", payment_type=1, amount=10_000) == {"remainder": 0, "change": 4_000}
    assert client.error("position", name="b", price=1, quantity=Decimal(1), tax=11) == ErrorCode.WRONG_MODE
    assert client.error("close_receipt", payment_type=1) is None


# --------------------------------------------------------------------------- documents and the log


def test_fiscal_documents_and_log_lines(tmp_path: Any) -> None:
    log_path = tmp_path / "fd.jsonl"
    with Emulator(log_path=log_path) as emu:
        c = reconnect(emu)
        c.open_shift()
        assert c.sell(BREAD, MILK, pay_type=2, contact="buyer@example.ru") is None
        assert c.error("write_attribute", tag=1214, value=b"\x01") == ErrorCode.RECEIPT_CLOSED
        assert c.error("cash_in", amount=1_000) is None
        c.mode(3)
        assert c.error("close_shift") is None
        lines = [json.loads(line) for line in log_path.read_text(encoding="utf-8").splitlines()]
        assert lines == emu.documents()
        # 49 forms no FN document (model.DocType.CASH_IN): not in the log, no FD number.
        assert [d["type"] for d in lines] == ["open_shift", "receipt", "close_shift"]
        assert [d["fd_number"] for d in lines] == [1, 2, 3]
        receipt = lines[1]
        assert receipt["receipt_type"] == "sell"
        assert receipt["shift_number"] == 1 and receipt["receipt_number"] == 1
        assert receipt["total"] == 10_000 + 13_485
        assert receipt["items"] == [
            {"name": BREAD[0], "price": 5_000, "quantity": "2", "amount": 10_000, "tax": "vat22"},
            {"name": MILK[0], "price": 8_990, "quantity": "1.5", "amount": 13_485, "tax": "vat10"},
        ]
        assert receipt["payments"] == [{"type": "electronic", "amount": 23_485}]
        assert receipt["customer_contact"] == "buyer@example.ru"
        assert receipt["fiscal_sign"].isdigit()
        assert [(d["type"], d["total"]) for d in emu.cash_operations()] == [("cash_in", 1_000)]
        # [C Z,K] A4 45 + A4 46 give back any past document as TLVs (tags: model.py [U]).
        head = c.call("document_open", fd_number=2)
        assert head["doc_type"] == 3  # FFD: receipt
        data = b""
        while len(data) < head["size"]:
            data += c.call("document_read")["data"]
        tlv = {}
        pos = 0
        while pos < len(data):
            tag, size = int.from_bytes(data[pos:pos + 2], "little"), int.from_bytes(data[pos + 2:pos + 4], "little")
            tlv[tag] = data[pos + 4:pos + 4 + size]
            pos += 4 + size
        assert int.from_bytes(tlv[1040], "little") == 2 and int.from_bytes(tlv[1020], "little") == 23_485
        assert int.from_bytes(tlv[1077][-4:], "big") == int(receipt["fiscal_sign"])
        assert tlv[1054] == b"\x01" and int.from_bytes(tlv[1038], "little") == 1
        assert c.call("document_open", fd_number=1)["doc_type"] == 2  # shift open
        assert c.error("document_open", fd_number=99) == ErrorCode.FN_NO_DATA
        # [S Z] register 0x33: the last sale
        assert c.call("last_sale") == {"fd_number": 2, "receipt_type": 1, "total": 23_485,
                                       "fiscal_sign": int(receipt["fiscal_sign"])}
        assert c.call("fn_status")["last_fd_number"] == 3  # the Z report; 49 took no number
        c.close()


def _tlv(tag: int, value: bytes) -> bytes:
    return tag.to_bytes(2, "little") + len(value).to_bytes(2, "little") + value


def test_correction_basis_is_an_stlv_the_emulator_checks(client: RawClient, emu: Emulator) -> None:
    # [C] 1174 is composite: the TLVs of 1178 (UnixTime 4 LE) and 1179; 1173 on its own.
    # [U] 1178/1179 alone, a malformed 1174, or a correction closed without 1173/1174: 0x13.
    day = bytes.fromhex("80 3A 81 69")  # 2026-02-03 00:00 UTC
    client.open_shift()
    assert client.error("open_receipt", receipt_type=7) is None
    assert client.error("write_attribute", tag=1178, value=day) == ErrorCode.BAD_FORMAT
    assert client.error("write_attribute", tag=1179, value=b"12") == ErrorCode.BAD_FORMAT
    assert client.error("write_attribute", tag=1174, value=_tlv(1178, day)[:-1]) == ErrorCode.BAD_FORMAT
    assert client.error("write_attribute", tag=1174, value=_tlv(1179, b"12")) == ErrorCode.BAD_FORMAT  # no 1178
    assert client.error("write_attribute", tag=1174, value=_tlv(1178, day) + _tlv(1021, b"x")) == ErrorCode.BAD_FORMAT
    assert client.error("position", name="x", price=100, quantity=Decimal(1), tax=11) is None
    assert client.error("close_receipt", payment_type=1) == ErrorCode.BAD_FORMAT  # no 1173, 1174
    assert client.error("cancel_receipt") is None
    assert client.error("open_receipt", receipt_type=7) is None
    assert client.error("write_attribute", tag=1173, value=b"\x01") is None
    assert client.error("write_attribute", tag=1174, value=_tlv(1178, day) + _tlv(1179, b"12")) is None
    assert client.error("position", name="x", price=100, quantity=Decimal(1), tax=11) is None
    assert client.error("close_receipt", payment_type=1) is None
    assert emu.documents()[-1]["attributes"] == {"1173": 1, "1174": {"1178": "2026-02-03", "1179": "12"}}


def test_position_attributes_go_to_the_last_position(client: RawClient, emu: Emulator) -> None:
    client.open_shift()
    assert client.error("open_receipt", receipt_type=1) is None
    # [S K] position tags only between EA and EB: after the position 0xEE, ext 0x0207 in 0x37.
    assert client.error("position", name="a", price=100, quantity=Decimal(1), tax=6) is None
    assert client.error("write_attribute", tag=2108, value=b"\x0b") == ErrorCode.FN_SEE_REGISTER_55
    assert client.call("extended_error") == {"command": 0xE8, "ext": 0x0207}
    assert client.request(taskbuf.Abort()).status == Status.RESULT
    assert client.error("begin_position") is None
    assert client.error("write_attribute", tag=2108, value=b"\x0b") is None
    # a receipt tag inside EA..EB: ext 0x0208
    assert client.error("write_attribute", tag=1008, value=b"a@b.ru") == ErrorCode.FN_SEE_REGISTER_55
    assert client.call("extended_error") == {"command": 0xE8, "ext": 0x0208}
    assert client.request(taskbuf.Abort()).status == Status.RESULT
    assert client.error("end_position", name="b", price=100, quantity=Decimal(1), tax=5) is None
    assert client.error("end_position", name="c", price=100, quantity=Decimal(1), tax=5) == \
        ErrorCode.FN_SEE_REGISTER_55  # EB without EA
    assert client.request(taskbuf.Abort()).status == Status.RESULT
    assert client.error("write_attribute", tag=1008, value=b"a@b.ru") is None
    assert client.error("close_receipt", payment_type=2) is None
    items = emu.documents()[-1]["items"]
    assert items[0]["tax"] == "none" and "unit" not in items[0]
    assert items[1]["unit"] == 11 and items[1]["tax"] == "vat0"
    assert emu.documents()[-1]["customer_contact"] == "a@b.ru"


def test_tag_1030_gives_the_position_its_whole_name(tmp_path: Any) -> None:
    long = ("Колбаса варёная Докторская высшего сорта, ГОСТ, в натуральной оболочке " * 2)[:128]
    log_path = tmp_path / "fd.jsonl"
    with Emulator(log_path=log_path) as emu:
        c = reconnect(emu)
        c.open_shift()
        assert c.error("open_receipt", receipt_type=1) is None
        # [C Z,C,K] EB carries up to 128 bytes of name, unpadded.
        assert len(cp866(long)) == 128
        assert c.error("position", name=long, price=100, quantity=Decimal(1), tax=11) is None
        assert c.error("position", name="короткое", price=100, quantity=Decimal(1), tax=11) is None
        assert c.error("close_receipt", payment_type=2) is None
        items = emu.documents()[-1]["items"]
        assert [i["name"] for i in items] == [long, "короткое"]
        assert json.loads(log_path.read_text(encoding="utf-8").splitlines()[-1])["items"][0]["name"] == long
        c.close()


def test_cashier_written_outside_a_receipt_goes_to_the_next_document(client: RawClient, emu: Emulator) -> None:
    def cashier(tag: int, value: str) -> int | None:
        return client.error("write_attribute", tag=tag, value=cp866(value))

    assert cashier(model.TAG_CASHIER_NAME, "Петров") == ErrorCode.WRONG_MODE  # select mode
    client.mode(1)
    assert cashier(model.TAG_CASHIER_NAME, "Забытый") is None
    assert client.error("leave_mode") is None  # leaving the mode forgets it
    client.mode(1)
    assert cashier(model.TAG_CASHIER_INN, "500100732259") is None
    assert client.error("write_attribute", tag=model.TAG_CUSTOMER_CONTACT,
                        value=b"+79990000000") \
        == ErrorCode.RECEIPT_CLOSED  # only the cashier outside a receipt
    assert client.error("open_shift") is None
    assert cashier(model.TAG_CASHIER_NAME, "Сидорова") is None
    assert client.sell(BREAD, pay_type=2) is None  # written before 92: the receipt carries it
    client.mode(3)
    assert cashier(model.TAG_CASHIER_NAME, "Петров") is None
    assert client.error("close_shift") is None
    docs = emu.documents()
    assert [d["type"] for d in docs] == ["open_shift", "receipt", "close_shift"]
    assert docs[0]["attributes"] == {"1203": "500100732259"}
    assert docs[1]["attributes"] == {"1021": "Сидорова"}
    assert docs[2]["attributes"] == {"1021": "Петров"}


def test_test_mode_fiscalises_nothing(tmp_path: Any) -> None:
    log_path = tmp_path / "fd.jsonl"
    with Emulator(log_path=log_path) as emu:
        c = reconnect(emu)
        c.open_shift()
        before = (emu.state.fd_number, emu.state.receipt_number, emu.state.cash)
        assert c.sell(BREAD, pay=50_000, flags=0x01) is None
        assert (emu.state.fd_number, emu.state.receipt_number, emu.state.cash) == before
        assert [d["type"] for d in emu.documents()] == ["open_shift"]
        assert len(log_path.read_text(encoding="utf-8").splitlines()) == 1
        # Test mode still checks: payments less than the total.
        assert c.error("open_receipt", receipt_type=1, flags=0x01) is None
        assert c.error("position", name="a", price=100, quantity=Decimal(1), tax=11) is None
        assert c.error("close_receipt", payment_type=1, amount=50) == ErrorCode.PAYMENTS_LESS_THAN_TOTAL
        c.close()


def test_shift_over_24_hours(client: RawClient, emu: Emulator) -> None:
    client.open_shift()
    assert client.call("shift_state")["state"] == model.SHIFT_OPEN
    emu.advance_clock(25)
    assert emu.shift_state() == "expired"
    assert client.call("shift_state")["state"] == model.SHIFT_EXPIRED
    assert client.sell(BREAD) == ErrorCode.SHIFT_EXPIRED
    assert client.error("cash_in", amount=100) == ErrorCode.SHIFT_EXPIRED
    assert client.error("open_shift") == ErrorCode.SHIFT_OPEN
    assert client.error("leave_mode") is None
    # [S Z] entering the sale mode with a shift over 24 h: 0x88.
    assert client.error("enter_mode", mode=1, password=30) == ErrorCode.SHIFT_EXPIRED
    client.mode(3)
    assert client.error("close_shift") is None  # Z is what an expired shift needs
    client.mode(1)
    assert client.error("open_shift") is None
    assert client.sell(BREAD) is None
    assert [d["shift_number"] for d in emu.documents()] == [1, 1, 2, 2]


def test_reports_show_their_progress_modes(client: RawClient, emu: Emulator) -> None:
    # [C C,Z] after 5A the mode is 0x23 (printing), then 0x17 (FN work); after 67, 0x22. Meanwhile
    # only queries are answered ([U] others: 0x66); a host polls 45 until the mode leaves them.
    emu.device.z_print_seconds = emu.device.z_fn_seconds = emu.device.x_print_seconds = 0.3
    client.open_shift()
    client.mode(3)
    assert client.error("close_shift") is None
    seen = [client.call("short_status")["mode"]]
    assert client.error("leave_mode") == ErrorCode.WRONG_MODE
    deadline = time.monotonic() + READ_TIMEOUT
    while seen[-1] in (0x23, 0x17) and time.monotonic() < deadline:
        time.sleep(0.02)
        seen.append(client.call("short_status")["mode"])
    assert seen[0] == 0x23 and 0x17 in seen and seen[-1] == 0x03
    client.mode(2)
    assert client.error("x_report") is None
    assert client.call("status")["mode"] == 0x22
    client.wait_ready()
    assert client.call("short_status")["mode"] == 0x02


def test_67_9_forms_the_settlement_state_report_in_mode_2_only(client: RawClient, emu: Emulator) -> None:
    # [S A] 67 9 is the FN's settlement-state report (FFD type 21), in mode 2 like 67 1.
    emu.device.x_print_seconds = 0.3
    client.mode(1)
    assert client.error("settlement_report") == ErrorCode.WRONG_MODE
    client.mode(2)
    assert client.error("settlement_report") is None
    assert client.call("status")["mode"] == 0x22  # [U] printed like an X report
    client.wait_ready()
    assert [d["type"] for d in emu.documents()] == ["settlement_report"]
    assert client.call("fn_status")["last_fd_number"] == 1
    assert client.call("document_open", fd_number=1)["doc_type"] == 21
    emu.device.paper = False
    assert client.error("settlement_report") == ErrorCode.NO_PAPER
    assert len(emu.documents()) == 1


def test_short_status_flags(client: RawClient, emu: Emulator) -> None:
    # [S K] 45: 0x01 paper end; 0x10 overheat, 0x40 printer error, 0x80 near end are not emulated.
    assert client.call("short_status")["flags"] == 0
    emu.paper_out()
    assert client.call("short_status")["flags"] == 0x01


# --------------------------------------------------------------------------- persistence


def test_state_survives_a_restart(tmp_path: Any) -> None:
    state = tmp_path / "kkt.json"
    with Emulator(state_path=state) as emu:
        c = reconnect(emu)
        c.open_shift()
        assert c.error("cash_in", amount=7_000) is None
        assert c.sell(BREAD, pay=10_000) is None
        assert c.error("open_receipt", receipt_type=1) is None
        assert c.error("position", name="open", price=300, quantity=Decimal(1), tax=11) is None
        emu.advance_clock(2)
        before = emu.state.to_dict()
        docs = emu.documents()
        c.close()
    assert not list(tmp_path.glob(".kkt-emu-*"))  # no temp files left behind
    with Emulator(state_path=state) as emu:
        after = emu.state
        assert (after.fd_number, after.shift_number, after.receipt_number, after.cash, after.shift_open) == \
            (2, 1, 1, 17_000, True)  # shift report and sale; 49 formed no FN document
        assert after.clock_offset == before["clock_offset"]
        assert emu.documents() == docs
        # The open receipt survived the restart: finish it.
        c = reconnect(emu)
        st = c.call("status")
        assert st["receipt_state"] == 1 and st["mode"] & 0x0F == 1
        assert c.error("close_receipt", payment_type=1) is None
        assert emu.state.fd_number == 3 and emu.state.receipt_number == 2
        assert c.call("last_sale")["fd_number"] == 3
        c.close()


def test_a_document_the_state_never_counted_is_dropped(tmp_path: Any) -> None:
    state = tmp_path / "kkt.json"
    with Emulator(state_path=state) as emu:
        c = reconnect(emu)
        c.open_shift()
        c.close()
    docs_file = tmp_path / "kkt.json.docs.jsonl"
    # A crash between appending a document and saving the state that counts it.
    with open(docs_file, "a", encoding="utf-8") as f:
        f.write(json.dumps({"fd_number": 2, "type": "receipt"}) + "\n" + '{"fd_number": 3, "ty')
    with Emulator(state_path=state) as emu:
        assert [d["fd_number"] for d in emu.documents()] == [1]
        c = reconnect(emu)
        c.mode(1)
        assert c.sell(BREAD, pay_type=2) is None
        c.close()
    lines = [json.loads(line) for line in docs_file.read_text(encoding="utf-8").splitlines()]
    assert [(d["fd_number"], d["type"]) for d in lines] == [(1, "open_shift"), (2, "receipt")]


def test_a_killed_emulator_loses_only_the_open_receipt(tmp_path: Any) -> None:
    state = tmp_path / "kkt.json"
    with cli_emulator("--state", str(state)) as (proc, port, _):
        c = reconnect_port(port)
        c.open_shift()
        assert c.error("cash_in", amount=7_000) is None
        assert c.sell(BREAD, pay=10_000) is None
        assert c.error("open_receipt", receipt_type=1) is None
        for i in range(3):
            assert c.error("position", name=f"lost {i}", price=300, quantity=Decimal(1), tax=11) is None
        assert c.error("payment", payment_type=1, amount=100) is None
        proc.send_signal(signal.SIGKILL)  # no clean stop: what a crash leaves
        proc.wait(10)
        c.close()
    assert json.loads(state.read_text())["receipt"] is None
    with Emulator(state_path=state) as emu:
        s = emu.state
        # The counters of the last document (the sale), the open receipt gone, select mode.
        # 49 formed no FN document: the shift report and the sale only.
        assert (s.fd_number, s.shift_number, s.receipt_number, s.cash, s.shift_open) == (2, 1, 1, 17_000, True)
        assert not s.receipt_open and (s.mode, s.submode) == (0, 0)
        assert [d["type"] for d in emu.documents()] == ["open_shift", "receipt"]
        c = reconnect(emu)
        st = c.call("status")
        assert st["receipt_state"] == 0 and st["mode"] == 0 and st["receipt_number"] == 1
        assert c.call("fn_status")["last_fd_number"] == 2
        c.mode(1)
        assert c.sell(MILK, pay_type=2) is None
        assert emu.state.fd_number == 3 and emu.state.receipt_number == 2
        # A receipt open at a clean stop survives it ...
        assert c.error("open_receipt", receipt_type=1) is None
        assert c.error("position", name="kept", price=300, quantity=Decimal(1), tax=11) is None
        c.close()
    assert json.loads(state.read_text())["receipt"]["items"][0]["name"] == "kept"
    with cli_emulator("--state", str(state)) as (proc, port, _):
        c = reconnect_port(port)
        assert c.call("status")["receipt_state"] == 1
        assert c.error("position", name="lost", price=300, quantity=Decimal(1), tax=11) is None
        # ... but once the device runs again, a kill loses it: no stale copy comes back.
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        c.close()
    with Emulator(state_path=state) as emu:
        assert not emu.state.receipt_open and emu.state.fd_number == 3
        assert [d["fd_number"] for d in emu.documents()] == [1, 2, 3]


# --------------------------------------------------------------------------- faults


def test_paper_out_during_positions_keeps_the_receipt_open(client: RawClient, emu: Emulator) -> None:
    client.open_shift()
    assert client.error("open_receipt", receipt_type=1) is None
    emu.paper_out()
    assert client.call("short_status")["flags"] & 0x01
    assert client.error("position", name="a", price=100, quantity=Decimal(1), tax=11) == ErrorCode.NO_PAPER
    assert client.call("status")["receipt_state"] == 1
    emu.paper_in()
    assert client.error("position", name="a", price=100, quantity=Decimal(1), tax=11) is None
    assert client.error("close_receipt", payment_type=2) is None
    assert len(emu.documents()[-1]["items"]) == 1


def test_paper_out_at_close_fiscalises_and_reports_0x67(client: RawClient, emu: Emulator) -> None:
    client.open_shift()
    assert client.error("open_receipt", receipt_type=1) is None
    assert client.error("position", name="a", price=100, quantity=Decimal(1), tax=11) is None
    emu.paper_out()
    assert client.error("close_receipt", payment_type=2) == ErrorCode.NO_PAPER
    assert emu.documents()[-1]["type"] == "receipt"
    assert emu.state.print_pending and not emu.state.receipt_open
    assert client.error("reprint_last") == ErrorCode.NO_PAPER
    emu.paper_in()
    assert client.error("reprint_last") is None
    assert not emu.state.print_pending


def test_paper_can_run_out_at_a_chosen_command(client: RawClient, emu: Emulator) -> None:
    client.open_shift()
    emu.paper_out(before="close_receipt")
    assert client.error("open_receipt", receipt_type=1) is None
    assert client.error("position", name="a", price=100, quantity=Decimal(1), tax=11) is None
    assert client.error("close_receipt", payment_type=2) == ErrorCode.NO_PAPER
    assert emu.state.fd_number == 2 and emu.state.print_pending
    assert client.error("print_string", text="x") == ErrorCode.NO_PAPER
    with pytest.raises(KeyError):
        emu.paper_out(before="no_such_command")


def test_electronic_receipt_needs_no_paper(client: RawClient, emu: Emulator) -> None:
    client.open_shift()
    emu.paper_out()
    assert client.sell(BREAD, pay_type=2, flags=0x04, contact="+79991234567") is None  # [C K,Z] no print
    assert emu.documents()[-1]["electronic"] is True


def test_drop_after_tasks_executes_but_does_not_answer(emu: Emulator, client: RawClient) -> None:
    client.open_shift()
    assert client.error("open_receipt", receipt_type=1) is None
    assert client.error("position", name="a", price=100, quantity=Decimal(1), tax=11) is None
    emu.drop_after_tasks(1)
    with pytest.raises(Closed):
        client.add("close_receipt", payment_type=2)
    assert emu.documents()[-1]["type"] == "receipt"  # fiscalised, answer lost
    c = reconnect(emu, client)
    assert c.call("fn_status")["last_fd_number"] == emu.state.fd_number == 2
    c.close()


def test_drop_after_n_tasks_counts_executed_tasks(emu: Emulator, client: RawClient) -> None:
    emu.drop_after_tasks(3)
    assert client.call("status")["model"] == 62
    assert client.call("status")["model"] == 62
    with pytest.raises(Closed):
        client.add("status")


def test_drop_mid_frame(emu: Emulator, client: RawClient) -> None:
    emu.drop_mid_frame()
    seen = len(client.raw)
    pid = client.send_packet(taskbuf.encode_request(taskbuf.Abort()))
    with pytest.raises(Closed):
        client.answer_to(pid)
    assert 0 < len(client.raw) - seen < len(framing.encode_packet(pid, b"\xa3"))
    reconnect(emu, client).close()


def test_corrupted_packet_is_resent_clean(emu: Emulator, client: RawClient) -> None:
    emu.corrupt_next_byte()
    pid = client.send_packet(taskbuf.encode_request(taskbuf.Abort()))
    ev = client.next_event()
    assert isinstance(ev, framing.BadPacket) and ev.id == pid
    client.send_packet(b"", pid=pid)  # "send that packet again"
    assert client.answer_to(pid).status == Status.RESULT


def test_faults_fired_counts_only_faults_that_happened(emu: Emulator, client: RawClient) -> None:
    emu.drop_after_tasks(1000)
    emu.paper_out(before="close_receipt")
    assert client.call("status")["model"] == 62
    assert emu.faults_fired == 0
    emu.clear_faults()
    emu.corrupt_next_byte()
    pid = client.send_packet(taskbuf.encode_request(taskbuf.Abort()))
    assert isinstance(client.next_event(), framing.BadPacket)
    assert emu.faults_fired == 1
    client.send_packet(b"", pid=pid)
    assert client.answer_to(pid).status == Status.RESULT
    emu.drop_after_tasks(1)
    with pytest.raises(Closed):
        client.add("status")
    assert emu.faults_fired == 2
    assert emu.device.paper  # the disarmed paper-out never happened


@pytest.mark.parametrize("data", [b"\xa3", b"\xfe\xfd", bytes(range(0xF0, 0x100)), b""])
def test_corrupt_helper_keeps_framing_and_breaks_crc(data: bytes) -> None:
    raw = framing.encode_packet(0x10, data)
    events = framing.Decoder().feed(corrupt(raw))
    assert len(events) == 1 and isinstance(events[0], framing.BadPacket)


def test_power_off_refuses_connections_and_keeps_state(emu: Emulator, client: RawClient) -> None:
    client.open_shift()
    assert client.sell(BREAD, pay_type=2) is None
    assert client.error("open_receipt", receipt_type=1) is None
    emu.power_off()
    with pytest.raises(Closed):
        client.call("status")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", emu.port), timeout=READ_TIMEOUT).close()
    emu.power_on()
    c = reconnect(emu, client)
    st = c.call("status")
    # [S K] 3F's shift number is the last CLOSED one (0 here); the current one in register 0x35.
    assert st["shift_number"] == 0 and st["receipt_number"] == 1
    assert st["receipt_state"] == 1  # the open receipt survives the power cycle (model choice)
    assert c.error("cancel_receipt") is None
    assert c.error("leave_mode") is None
    assert c.call("status")["mode"] == 0
    c.close()


def test_stop_is_quick_and_restartable(tmp_path: Any) -> None:
    for _ in range(5):
        with Emulator(state_path=tmp_path / "s.json") as emu:
            c = reconnect(emu)
            c.open_shift() if not emu.state.shift_open else None
            # leave the connection open: stop() must close it
        assert emu.server.connection is None


# --------------------------------------------------------------------------- command line


READY = re.compile(r"emulator ready, .* on 127\.0\.0\.1:(\d+); control port (\d+|off);")


@contextlib.contextmanager
def cli_emulator(*args: str) -> Iterator[tuple[subprocess.Popen[str], int, int | None]]:
    """``python -m kktapp.atol.emulator --port 0 ARGS``: its port and control port, read from the
    readiness line (logged only once every port listens); stopped at the end."""
    proc = subprocess.Popen([sys.executable, "-m", "kktapp.atol.emulator", "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True)
    try:
        found = None
        assert proc.stderr is not None
        for line in proc.stderr:
            found = READY.search(line)
            if found:
                break
        assert found, f"emulator exited with {proc.poll()} before it was ready"
        # Keep reading its log: a full pipe would block the emulator mid-test.
        threading.Thread(target=proc.stderr.read, daemon=True).start()
        port, ctl = int(found.group(1)), found.group(2)
        yield proc, port, None if ctl == "off" else int(ctl)
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()  # never leave an emulator behind, however slow the machine
            proc.wait(10)


def test_command_line(tmp_path: Any) -> None:
    state, log = tmp_path / "s.json", tmp_path / "fd.jsonl"
    # --device-time and --latency are milliseconds: a task's result comes no sooner than the
    # device time plus the packet's way there and back (a lower bound, never an upper one).
    with cli_emulator("--state", str(state), "--log", str(log), "--device-time", "300", "--latency", "100",
                      "--clock-offset", "1") as (_, port, _):
        c = RawClient(port)
        started = time.monotonic()
        assert c.request(taskbuf.Abort()).status == Status.RESULT
        assert time.monotonic() - started >= 0.2  # latency both ways
        started = time.monotonic()
        _, ans = c.add("status", task_flags=Flags.NEED_RESULT)
        # The device works 0.3 s on it: the Add is answered "pending" at once, and the result is
        # pushed as A6 on 0xF0 when it is ready ([C Z,K]: A1 means wait for the async packet).
        assert ans.status == Status.PENDING
        ans = c.wait_push()
        assert ans.status == Status.ASYNC_RESULT
        assert time.monotonic() - started >= 0.5  # 0.2 s of latency + 0.3 s of device time
        assert DECODE["status"](ans.reply)["model"] == 62
        c.close()
    assert json.loads(state.read_text())["clock_offset"] == 3600


def test_control_lines_drive_the_emulator(emu: Emulator) -> None:
    control.run(emu, "paper out")
    assert not emu.device.paper
    control.run(emu, "paper in")
    control.run(emu, "paper out close_receipt")
    assert emu.device.paper  # only before the next close_receipt
    control.run(emu, "clear")
    client = RawClient(emu.port)
    client.open_shift()
    client.close()
    assert emu.shift_state() == "open"
    control.run(emu, "advance 25")
    assert emu.shift_state() == "expired"
    assert control.run(emu, "state")["faults_fired"] == 0
    for bad in ("bogus", "drop after", "drop after x", "advance"):
        with pytest.raises(ValueError):
            control.run(emu, bad)


def test_command_line_faults_and_control_port() -> None:
    # Port 0 for both: the emulator binds them and reports them, so no other process can take
    # a port between our choosing it and the emulator binding it.
    with cli_emulator("--fault", "paper out", "--control-port", "0") as (proc, port, ctl):
        assert ctl
        assert json.loads(control.send(ctl, "state"))["paper"] is False
        assert control.send(ctl, "paper in") == "ok"
        assert json.loads(control.send(ctl, "state"))["paper"] is True
        assert control.send(ctl, "nonsense").startswith("error:")
        assert "drop after N; drop mid-frame" in control.send(ctl, "help")
        assert control.send(ctl, "power off") == "ok"
        with pytest.raises(OSError):
            RawClient(port).request(taskbuf.Abort())
        assert control.send(ctl, "power on") == "ok"
        c = RawClient(port)
        assert c.request(taskbuf.Abort()).status == Status.RESULT
        c.close()


def test_command_line_refuses_an_unknown_fault() -> None:
    proc = subprocess.run([sys.executable, "-m", "kktapp.atol.emulator", "--port", "0", "--fault", "melt"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "unknown command" in proc.stderr
