"""The Shtrih-M emulator on its own: the command line, the control port, the document log,
restarts, and the v1 handshake as a raw client sees it."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

from kktapp.atol.emulator import control
from kktapp.shtrih import commands
from kktapp.shtrih.driver import ShtrihDriver
from kktapp.shtrih.emulator import Emulator
from kktapp.shtrih.framing import ACK, ENQ, NAK, Decoder, Frame, encode_frame

READY = re.compile(r"Shtrih-M emulator ready, .* on 127\.0\.0\.1:(\d+); control port (\d+|off);")


def start_cli(*args: str) -> tuple[subprocess.Popen[str], int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "kktapp.shtrih.emulator", "--port", "0", *args],
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        found = READY.search(line)
        if found:
            return proc, int(found.group(1)), found.group(2)
    raise AssertionError(f"emulator exited with {proc.wait(10)} before it was ready")


def test_command_line_state_log_and_control(tmp_path: Path) -> None:
    state, log = tmp_path / "s.json", tmp_path / "fd.jsonl"
    proc, port, ctl = start_cli("--state", str(state), "--log", str(log), "--control-port", "0",
                                "--fault", "filler on")
    try:
        drv = ShtrihDriver(f"socket://127.0.0.1:{port}", timeout=5)
        drv.connect()
        drv.open_shift()
        assert control.send(int(ctl), "paper out") == "ok"
        assert not drv.status().paper_present
        assert control.send(int(ctl), "paper in") == "ok"
        # The Shtrih emulator's own control command, on the port too; help lists it.
        assert control.send(int(ctl), "filler off") == "ok"
        assert control.send(int(ctl), "filler maybe").startswith("error: filler: on or off")
        assert "filler on|off" in control.send(int(ctl), "help")
        drv.cash_in(100)
        drv.close()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
    lines = [json.loads(x) for x in log.read_text(encoding="utf-8").splitlines()]
    # The document log has the ATOL emulator's fields; the cash-in formed no FN document.
    assert [d["type"] for d in lines] == ["open_shift"]
    assert set(lines[0]) >= {"fd_number", "fiscal_sign", "type", "shift_number", "receipt_number", "datetime", "total"}
    # Restarted on the same state: the FN goes on from its last document.
    proc, port, _ = start_cli("--state", str(state), "--log", str(log))
    try:
        drv = ShtrihDriver(f"socket://127.0.0.1:{port}", timeout=5)
        drv.connect()
        assert drv.fn_status().last_fd_number == 1 and drv.shift_status().state == "open"
        # The operating document number still counts the cash-in (the shift report, then it).
        assert drv.operating_number() == 2
        drv.close()
    finally:
        proc.terminate()
        proc.wait(10)
    # --cash-documents: a device whose cash in/out form an FN document (FF0A type 0).
    proc, port, _ = start_cli("--state", str(state), "--log", str(log), "--cash-documents")
    try:
        drv = ShtrihDriver(f"socket://127.0.0.1:{port}", timeout=5)
        drv.connect()
        assert drv.cash_in(100).fiscal_document_number == 2 == drv.fn_status().last_fd_number
        drv.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_operating_document_number_survives_a_power_cut_and_a_restart(tmp_path: Path) -> None:
    """Cash in/out form no FN document by default (model.DOC_CASH) but move the operating
    document number (0x11); the count is saved with the drawer, so neither a power cut, nor a
    killed process (the state as the last checkpoint wrote it), nor a restart takes it back."""
    state = tmp_path / "s.json"

    def counter(emu: Emulator) -> int:
        drv = ShtrihDriver(emu.url, timeout=5)
        drv.connect()
        try:
            return drv.operating_number()
        finally:
            drv.close()

    with Emulator(state_path=state) as emu:
        drv = ShtrihDriver(emu.url, timeout=5)
        drv.connect()
        drv.open_shift()
        drv.cash_in(500)
        drv.cash_out(200)
        assert drv.operating_number() == 3 and emu.state.fd_number == 1 and len(emu.cash_operations()) == 2
        drv.close()
        # A kill now: another emulator reads the checkpoint the cash-out wrote.
        killed = Emulator(state_path=state)
        assert killed.shtrih.document_number() == 3 and killed.state.cash == 300
        emu.power_off()
        emu.power_on()
        assert counter(emu) == 3
    with Emulator(state_path=state) as emu:
        assert counter(emu) == 3
        drv = ShtrihDriver(emu.url, timeout=5)
        drv.connect()
        assert drv.cash_in(100).receipt_number == 4 and drv.operating_number() == 4
        drv.close()


def test_command_line_refuses_an_unknown_fault() -> None:
    proc = subprocess.run([sys.executable, "-m", "kktapp.shtrih.emulator", "--port", "0", "--fault", "melt"],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2 and "unknown command" in proc.stderr


def read_events(sock: socket.socket, want: int) -> list:
    dec, events = Decoder(), []
    while len(events) < want:
        events += dec.feed(sock.recv(4096))
    return events


def test_handshake_as_a_raw_client_sees_it() -> None:
    """§1.2: ENQ → NAK when idle; a frame → ACK, then the answer; an answer not ACKed is sent
    again after ENQ → ACK; a bad LRC → NAK; password 30 is accepted and reported as operator 30."""
    with Emulator() as emu, socket.create_connection((emu.host, emu.port)) as sock:
        sock.sendall(bytes((ENQ,)))
        assert sock.recv(1) == bytes((NAK,))
        sock.sendall(bytes.fromhex("02 05 10 1E 00 00 00 0B"))  # 0x10, password 30
        ack, answer = read_events(sock, 2)
        assert ack.byte == ACK and isinstance(answer, Frame) and answer.payload[:3] == bytes.fromhex("10 00 1E")
        # Not ACKed: the device keeps it and sends it again.
        sock.sendall(bytes((ENQ,)))
        ack, again = read_events(sock, 2)
        assert ack.byte == ACK and again == answer
        sock.sendall(bytes((ACK, ENQ)))
        assert sock.recv(1) == bytes((NAK,))
        sock.sendall(bytes.fromhex("02 05 10 1E 00 00 00 0C"))  # bad LRC
        assert sock.recv(1) == bytes((NAK,))
        sock.sendall(encode_frame(bytes.fromhex("10 1F 00 00 00")))  # password 31
        ack, refused = read_events(sock, 2)
        assert refused.payload == bytes.fromhex("10 4F")
        sock.sendall(encode_frame(bytes.fromhex("FF 99 1E 00 00 00")))  # unknown FF sub-command
        ack, unknown = read_events(sock, 2)
        assert unknown.payload == bytes.fromhex("FF 37")


def test_one_connection_at_a_time() -> None:
    with Emulator() as emu, socket.create_connection((emu.host, emu.port)) as first:
        first.sendall(bytes((ENQ,)))
        assert first.recv(1) == bytes((NAK,))
        with socket.create_connection((emu.host, emu.port)) as second:
            second.settimeout(5)
            assert second.recv(1) == b""  # closed at once


def test_ff45_probe_with_no_receipt_is_not_0x37() -> None:
    """javapos probes FF45 with an all-zero FF45: the answer must not be 0x37 (open point 3)."""
    with Emulator() as emu:
        answer = emu.shtrih.execute(commands.get("close_receipt_ext").encode(30))
        assert answer[:2] == bytes.fromhex("FF 45") and answer[2] not in (0, 0x37)
