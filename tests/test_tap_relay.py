"""The wire tap on real sockets: between the project's driver and its emulator, and between
scripted peers for the byte-exactness property. Everything on 127.0.0.1, free ports."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kktapp.atol import commands, model, taskbuf
from kktapp.atol.driver import AtolDriver
from kktapp.atol.emulator import Emulator
from kktapp.atol.framing import Decoder, Packet, encode_packet
from kktapp.atol.link import Link
from kktapp.atol.tap import Tap, busy_message, compare, load, show
from kktapp.domain import Payment, PaymentType, Position, Receipt, SettlementType, VatRate
from kktapp.errors import DeviceBusy, LinkError

ROOT = Path(__file__).resolve().parent.parent


def wait_until(check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


class Server:
    """A loopback listener that hands each connection to :meth:`handle` until closed."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[:2]
        self.url = f"socket://{self.address[0]}:{self.address[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.handle(sock)

    def handle(self, sock: socket.socket) -> None:
        raise NotImplementedError


class Spy(Server):
    """A plain recording relay for the test itself: what crossed it each way, byte for byte."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = bytearray()
        self.down = bytearray()
        self._threads: list[threading.Thread] = []
        super().__init__()

    def handle(self, client: socket.socket) -> None:
        server = socket.create_connection(self.target)
        for src, dst, sink in ((client, server, self.up), (server, client, self.down)):
            t = threading.Thread(target=self._copy, args=(src, dst, sink), daemon=True)
            t.start()
            self._threads.append(t)

    @staticmethod
    def _copy(src: socket.socket, dst: socket.socket, sink: bytearray) -> None:
        try:
            while chunk := src.recv(65536):
                sink += chunk
                dst.sendall(chunk)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for t in self._threads:
            t.join(5)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as e:
        yield e


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    return tmp_path / "trace.jsonl"


@pytest.fixture
def tap(emu: Emulator, trace: Path) -> Iterator[Tap]:
    t = Tap(("127.0.0.1", 0), (emu.host, emu.port), trace)
    t.start()
    try:
        yield t
    finally:
        t.stop()


def tap_url(tap: Tap) -> str:
    assert tap.address is not None
    return f"socket://{tap.address[0]}:{tap.address[1]}"


def sale(contact: str = "") -> Receipt:
    positions = (Position(name="Молоко", price=8990, quantity=Decimal(1), amount=8990, vat=VatRate.VAT22),
                 Position(name="Хлеб", price=4550, quantity=Decimal(2), amount=9100, vat=VatRate.VAT10))
    return Receipt(type=SettlementType.SELL, positions=positions,
                   payments=(Payment(PaymentType.CASH, 20_000),), customer_contact=contact)


def records_of(tap: Tap, path: Path) -> list[dict]:
    wait_until(lambda: not tap.busy)
    tap.recorder.flush()
    return load(path)


# --------------------------------------------------------------------------- driver ↔ tap ↔ emulator


def test_receipt_and_z_report_pass_unchanged_and_every_command_is_named(emu, tap, trace, monkeypatch):
    sent_tasks: list[bytes] = []
    real_send = Link.send

    def spy_send(self, payloads):
        sent_tasks.extend(p for p in payloads if p and p[0] in (taskbuf.Request.ADD, taskbuf.Request.ACK_ADD))
        return real_send(self, payloads)

    monkeypatch.setattr(Link, "send", spy_send)
    near = Spy(tap.address)  # driver → near spy → tap → far spy → emulator
    far = Spy((emu.host, emu.port))
    tap.target = far.address
    driver = AtolDriver(near.url, timeout=5.0)
    with driver:
        driver.open_shift()
        driver.cash_in(100_000)
        receipt = sale("buyer@example.com")
        receipt_commands = {s.command.name for s in driver.receipt_steps(receipt)}
        result = driver.sell(receipt)
        driver.close_shift()
    records = records_of(tap, trace)
    near.close()
    far.close()

    assert result.total == 18_090 and emu.documents()[-1]["type"] == "close_shift"
    assert bytes(near.up) == bytes(far.up) and len(near.up) > 300, "client → device bytes changed"
    assert bytes(near.down) == bytes(far.down) and len(near.down) > 300, "device → client bytes changed"

    packets = [r for r in records if "frame" in r]
    assert all(r["frame"] == "ok" for r in packets)
    adds = [r for r in packets if r["from"] == "host" and r.get("tb") in ("add", "ack_add")]
    assert len(adds) == len(sent_tasks)
    for payload, rec in zip(sent_tasks, adds, strict=True):
        request = taskbuf.decode_request(payload)
        expected = commands.lookup(request.task[taskbuf.PASSWORD_BYTES:])
        assert (rec["tid"], rec["name"], rec["title"]) == (request.tid, expected.name, expected.title)
    names = {r["name"] for r in adds}
    assert receipt_commands | {"open_shift", "cash_in", "close_shift", "enter_mode"} <= names
    assert {"open_receipt", "write_attribute", "close_receipt"} <= receipt_commands
    # Every task's outcome is tied back to its command.
    answers = [r for r in packets if r["from"] == "device"]
    assert {r["name"] for r in answers if "name" in r} == names
    assert [r["fields"]["value"] for r in adds if r["name"] == "write_attribute"] == ["buyer@example.com"]
    events = [r["event"] for r in records if "event" in r]
    assert events == ["connect", "disconnect"]

    out = io.StringIO()
    show(records, out.write)
    table = out.getvalue()
    for name in receipt_commands | {"close_shift"}:
        assert commands.get(name).title in table


def test_passwords_never_leave_the_tap(emu, tap, trace):
    with AtolDriver(tap_url(tap), operator_password="30") as driver:
        driver.open_shift()
        driver.close_shift()
    records = records_of(tap, trace)
    enter = [r for r in records if r.get("name") == "enter_mode" and r["from"] == "host"]
    assert enter and all(r["fields"]["password"] == "****" and r["masked"] for r in enter)
    mode_password = commands.get("enter_mode").encode(mode=1, password=30)[2:].hex(" ").upper()
    out = io.StringIO()
    show(records, out.write, raw=True)
    for rec in enter:
        tokens = rec["data"].split()
        assert tokens[3:5] == ["**", "**"] and tokens[7:11] == ["**"] * 4
        assert mode_password not in rec["raw"]
    assert "56 01 00 00 00 30" not in trace.read_text() + out.getvalue()


def test_corrupt_frames_are_recorded_raw_and_the_relay_goes_on(emu, tap, trace):
    with AtolDriver(tap_url(tap), timeout=5.0) as driver:
        driver.open_shift()
        emu.corrupt_next_byte()  # device → host: the driver sees a bad CRC and asks again
        assert driver.sell(sale()).total == 18_090
        st = driver.status()
    assert st.shift_open and emu.faults_fired == 1
    records = records_of(tap, trace)
    bad = [r for r in records if r.get("frame") == "bad"]
    assert len(bad) == 1 and bad[0]["from"] == "device" and bad[0]["raw"]
    later = records[records.index(bad[0]) + 1:]
    assert any(r.get("name") == "close_receipt" and r.get("tb") in ("result", "async_result") for r in later)
    assert any(r.get("tb") == "resend" and r["from"] == "host" for r in later)


def test_client_garbage_and_broken_packet_pass_through_and_the_session_goes_on(emu, tap, trace):
    abort = encode_packet(1, taskbuf.encode_request(taskbuf.Abort()))
    broken = bytearray(encode_packet(2, taskbuf.encode_request(taskbuf.Abort())))
    broken[-1] ^= 0x01
    with socket.create_connection(tap.address) as sock:
        sock.sendall(b"\x00\x17garbage" + bytes(broken))
        sock.sendall(abort)
        got = _read_packets(sock, lambda ps: any(p.id == 1 and p.data for p in ps))
    assert any(p.id == 1 and p.data[0] == taskbuf.Status.RESULT for p in got)
    records = records_of(tap, trace)
    frames = [(r["from"], r["frame"]) for r in records if "frame" in r]
    assert ("host", "garbage") in frames and ("host", "bad") in frames
    assert any(r.get("tb") == "abort" for r in records) and any(r.get("answers") == "abort" for r in records)


def _read_packets(sock: socket.socket, done, timeout: float = 5.0) -> list[Packet]:
    decoder, packets = Decoder(), []
    sock.settimeout(timeout)
    while not done(packets):
        chunk = sock.recv(65536)
        assert chunk, "connection closed"
        packets += [e for e in decoder.feed(chunk) if isinstance(e, Packet)]
    return packets


def test_second_client_gets_a_clear_refusal_and_the_first_goes_on(emu, tap, trace):
    with AtolDriver(tap_url(tap), timeout=5.0) as first:
        with pytest.raises(DeviceBusy, match="занята"):
            AtolDriver(tap_url(tap), timeout=5.0).connect()
        with socket.create_connection(tap.address) as human:
            human.settimeout(5)
            text = b""
            while chunk := human.recv(4096):
                text += chunk
        assert text.decode("utf-8").startswith("Касса занята: через отвод записи уже работает клиент 127.0.0.1:")
        assert first.status().mode == 0
    assert tap.refused == 2
    records = records_of(tap, trace)
    refused = [r for r in records if r.get("event") == "refused"]
    assert len(refused) == 2 and refused[0]["detail"] == busy_message(refused[0]["holder"])
    with AtolDriver(tap_url(tap), timeout=5.0) as again:  # the device is free once the first has gone
        assert again.status().mode == 0


def test_lost_connection_mid_receipt_is_recorded_and_the_tap_serves_the_next_client(emu, tap, trace):
    with AtolDriver(tap_url(tap), timeout=5.0) as driver:
        driver.open_shift()
        emu.drop_after_tasks(3)
        with pytest.raises(LinkError):
            driver.sell(sale())
    records = records_of(tap, trace)
    assert [r["closed_by"] for r in records if r.get("event") == "disconnect"] == ["device"]
    with AtolDriver(tap_url(tap), timeout=5.0) as again:
        assert again.status().receipt_open
    assert tap.sessions == 2


def test_device_down_is_reported_and_the_client_closed(tmp_path):
    free = socket.create_server(("127.0.0.1", 0))
    dead = free.getsockname()[:2]
    free.close()
    path = tmp_path / "t.jsonl"
    with Tap(("127.0.0.1", 0), dead, path) as tap:
        with pytest.raises(LinkError):
            AtolDriver(tap_url(tap), timeout=2.0).connect()
        with socket.create_connection(tap.address) as human:
            human.settimeout(5)
            assert human.recv(4096).decode("utf-8").startswith("Отвод записи: нет связи с ККТ 127.0.0.1:")
        records = records_of(tap, path)
    assert [r["event"] for r in records] == ["device_unreachable"] * 2
    assert "нет связи с ККТ" in records[0]["detail"]


# --------------------------------------------------------------------------- byte-exactness property


class Peer(Server):
    """A scripted device: records what it gets, sends its own chunks back."""

    def __init__(self) -> None:
        self.script: list[bytes] = []
        self.received = bytearray()
        self.done = threading.Event()
        super().__init__()

    def handle(self, sock: socket.socket) -> None:
        with sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for chunk in self.script:
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            while chunk := sock.recv(65536):
                self.received += chunk
        self.done.set()


@pytest.fixture(scope="module")
def scripted(tmp_path_factory) -> Iterator[tuple[Peer, Tap, Path]]:
    peer = Peer()
    path = tmp_path_factory.mktemp("tap") / "prop.jsonl"
    tap = Tap(("127.0.0.1", 0), peer.address, path)
    tap.start()
    yield peer, tap, path
    tap.stop()
    peer.listener.close()


def _chunks() -> st.SearchStrategy[list[bytes]]:
    packet = st.builds(encode_packet, st.integers(0, 0xF0).filter(lambda i: i != 0xFE), st.binary(max_size=64))
    return st.lists(st.one_of(st.binary(min_size=1, max_size=300), packet), max_size=8)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(up=_chunks(), down=_chunks())
def test_every_byte_arrives_unchanged_and_in_order_both_ways(scripted, up, down):
    peer, tap, path = scripted
    wait_until(lambda: not tap.busy)
    peer.script, peer.received, peer.done = down, bytearray(), threading.Event()
    got = bytearray()
    with socket.create_connection(tap.address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for chunk in up:
            sock.sendall(chunk)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(10)
        while chunk := sock.recv(65536):
            got += chunk
    assert peer.done.wait(10)
    assert bytes(peer.received) == b"".join(up)
    assert bytes(got) == b"".join(down)
    # The trace keeps every device byte too (host bytes may hold masked passwords).
    wait_until(lambda: not tap.busy)
    tap.recorder.flush()
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    session = max(r.get("session", 0) for r in records)
    down_raw = b"".join(bytes.fromhex(r["raw"]) for r in records
                        if r.get("session") == session and r.get("from") == "device")
    assert down_raw == b"".join(down)


# --------------------------------------------------------------------------- command line


def test_command_line_tap_records_until_terminated(emu, tmp_path):
    path = tmp_path / "cli.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kktapp.atol.tap", "--listen", "127.0.0.1:0", "--to", f"{emu.host}:{emu.port}",
         "--out", str(path)], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    try:
        line = proc.stderr.readline()
        assert "жду клиента на 127.0.0.1:" in line, line
        port = int(line.split("жду клиента на 127.0.0.1:")[1].split(",")[0])
        with AtolDriver(f"socket://127.0.0.1:{port}", timeout=5.0) as driver:
            assert driver.status().mode == 0
        time.sleep(0.2)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    out = subprocess.run([sys.executable, "-m", "kktapp.atol.tap", "--show", str(path)], capture_output=True,
                         text=True, env=env, cwd=ROOT, check=True).stdout
    assert "3F запрос состояния" in out and "ККТ → ПК" in out


# --------------------------------------------------------------------------- compare two real captures


def _capture(path: Path, price: int) -> list[dict]:
    with Emulator() as emu, Tap(("127.0.0.1", 0), (emu.host, emu.port), path) as tap:
        with AtolDriver(tap_url(tap), timeout=5.0) as driver:
            driver.open_shift()
            position = Position(name="Молоко", price=price, quantity=Decimal(1), amount=price, vat=VatRate.VAT22)
            driver.sell(Receipt(type=SettlementType.SELL, positions=(position,),
                                payments=(Payment(PaymentType.CASH, 10_000),)))
        return records_of(tap, path)


def test_compare_of_two_captures_points_at_the_one_kopeck_in_the_position(tmp_path, monkeypatch):
    # The same operation must line up packet for packet: on a loaded machine a 1 s pause would
    # add a status request (Req after silence) to one capture only.
    monkeypatch.setattr(model, "REQ_AFTER_SILENCE", 60.0)
    a = _capture(tmp_path / "a.jsonl", 8990)
    b = _capture(tmp_path / "b.jsonl", 8991)
    out = io.StringIO()
    assert compare(a, b, out.write) > 0
    lines = out.getvalue().splitlines()
    host = lines[lines.index("ПК → ККТ"):lines.index("ККТ → ПК")]
    host_rows = [i for i, line in enumerate(host) if line.rstrip().endswith("≠")]
    assert len(host_rows) == 1, out.getvalue()
    assert "регистрация позиции" in host[host_rows[0]]
    assert "(price): 90 ≠ 91" in host[host_rows[0] + 1], out.getvalue()
    assert "только в A 0, только в B 0." in lines[-1], "the same operation must line up packet for packet"
