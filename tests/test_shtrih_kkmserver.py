"""The KKM Server contract suite (tests/test_kkmserver.py) once more with Shtrih-M registers.

Adopted as tests/test_shtrih_contracts.py adopts the others (its own module: its ``printed``
fixture is not the compat suite's); ATOL-only tests are listed there.
"""

from __future__ import annotations

import sys

import pytest
import test_kkmserver
from test_shtrih_contracts import adopt, app_config, emulator, emulator2, shtrih_text  # noqa: F401

from kktapp.shtrih.driver import ShtrihDriver
from kktapp.shtrih.emulator import device as emu_device

adopt(test_kkmserver, sys.modules[__name__].__dict__)


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> list:
    """The suite's printer spy, on the Shtrih driver (the suite's own spies on the ATOL one)."""
    seen: list = []
    real = ShtrihDriver.print_text
    monkeypatch.setattr(ShtrihDriver, "print_text", lambda self, lines: seen.append(list(lines)) or real(self, lines))
    return seen


def test_ofd_report_sends_ff38(km, emulator, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # shtrih/model.py: FF38 with the system administrator's password forms the FN's document 21;
    # with a cashier FF37 and the tags by FF0C go first.
    seen: list[bytes] = []
    real = emu_device.ShtrihDevice.execute

    def record(self: emu_device.ShtrihDevice, payload: bytes, *args: object) -> bytes:
        seen.append(payload)
        return real(self, payload, *args)

    monkeypatch.setattr(emu_device.ShtrihDevice, "execute", record)
    answer = test_kkmserver.post(km.admin, {"Command": "OfdReport", "NumDevice": 1, "CashierName": "Петрова А.А."})
    assert answer["Status"] == 0 and answer["CheckNumber"] == emulator.documents()[-1]["fd_number"]
    codes = [p[:2].hex(" ").upper() for p in seen if p[0] == 0xFF and p[1] in (0x37, 0x0C, 0x38)]
    assert codes == ["FF 37", "FF 0C", "FF 38"]
    assert next(p for p in seen if p[:2] == b"\xff\x38")[2:6] == (30).to_bytes(4, "little")
