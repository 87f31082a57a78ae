"""pyshtrih 2.0.6 (PyPI, MIT), an independent Shtrih-M client, drives the Shtrih-M emulator.

pyshtrih speaks serial only (shtrih-protocol.md §8), so a pseudo-terminal stands in for the
port: pyshtrih opens the pty's slave as its serial port, and a thread here copies bytes between
the pty's master and a TCP connection to the emulator — what ``socat pty,… tcp:…`` does.
Every exchange is pyshtrih's own framing, handshake and parsing.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import tty
from collections.abc import Iterator

import pytest

pyshtrih = pytest.importorskip("pyshtrih")

from kktapp.shtrih.emulator import Emulator  # noqa: E402


class PtyBridge:
    """A pty whose slave is the "serial port" and whose master is wired to a TCP address."""

    def __init__(self, host: str, port: int) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.sock = socket.create_connection((host, port))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._pump, daemon=True)
        self.thread.start()

    def _pump(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.master, self.sock], [], [], 0.05)
            try:
                if self.master in ready:
                    self.sock.sendall(os.read(self.master, 4096))
                if self.sock in ready:
                    data = self.sock.recv(4096)
                    if not data:
                        return
                    os.write(self.master, data)
            except OSError:
                return

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close()
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator() as e:
        yield e


@pytest.fixture
def device(emu: Emulator) -> Iterator[object]:
    bridge = PtyBridge(emu.host, emu.port)
    dev = pyshtrih.ShtrihM01F(port=bridge.path, baudrate=115200, timeout=3)
    dev.connect()
    try:
        yield dev
    finally:
        dev.disconnect()
        bridge.close()


def test_pyshtrih_drives_the_emulator(device: object, emu: Emulator) -> None:
    dev = device
    assert dev.name == "ШТРИХ-М-01Ф"  # 0xFC, read by connect()
    state = dev.state()  # 0x10
    assert state["Режим ФР"].num == 4  # shift closed
    full = dev.full_state()  # 0x11
    assert full["Заводской номер"] == 123456
    dev.open_shift()  # 0xE0
    assert dev.state()["Режим ФР"].num == 2
    dev.print_string("Привет от pyshtrih")  # 0x17
    dev.income(15000)  # 0x50, 150.00
    dev.outcome(5000)  # 0x51
    assert emu.state.cash == 10000
    dev.x_report()  # 0x40
    dev.z_report()  # 0x41
    assert dev.state()["Режим ФР"].num == 4
    # Cash in/out form no FN document (model.DOC_CASH): only the shift's reports are in the FN.
    assert [d["type"] for d in emu.documents()] == ["open_shift", "close_shift"]
    assert [d["type"] for d in emu.cash_operations()] == ["cash_in", "cash_out"]


def test_pyshtrih_sale_by_the_classic_commands(device: object, emu: Emulator) -> None:
    dev = device
    dev.open_shift()
    dev.open_check(0)  # 0x8D sale
    dev.sale(("Хлеб", 2000, 1000), department_num=1, tax1=1)  # 0x80: 2.000 × 10.00
    dev.close_check(2000)  # 0x85, cash 20.00
    (receipt,) = [d for d in emu.documents() if d["type"] == "receipt"]
    assert receipt["total"] == 2000 and receipt["items"][0]["name"] == "Хлеб"
