"""The Shtrih-M probe against the emulator: a Russian report, a trace, and nothing changed."""

from __future__ import annotations

import io
import socket
from pathlib import Path

from kktapp.shtrih import probe
from kktapp.shtrih.driver import ShtrihDriver
from kktapp.shtrih.emulator import Emulator


def test_probe_reports_and_changes_nothing(tmp_path: Path) -> None:
    with Emulator(log_path=tmp_path / "fd.jsonl") as emu:
        drv = ShtrihDriver(emu.url, timeout=5)
        drv.connect()
        drv.open_shift()
        drv.close()
        before = emu.documents()
        out = io.StringIO()
        trace = tmp_path / "trace.log"
        assert probe.main([emu.url, "--trace", str(trace)], out=out) == 0
        report = out.getvalue()
        assert "ШТРИХ-М-01Ф" in report and "смена 1 открыта" in report and "не прошло проверок — 0" in report
        assert "ФД 1: тип 2" in report
        assert emu.documents() == before and emu.state.shift_open
        text = trace.read_text(encoding="utf-8")
        requests = [line for line in text.splitlines() if " >> " in line]
        assert requests and "fn_status" in text
        assert all("** ** ** **" in line and "1e 00 00 00" not in line for line in requests
                   if "device_type" not in line)  # 0xFC alone has no password


def test_probe_without_a_device(tmp_path: Path) -> None:
    out = io.StringIO()
    with socket.socket() as s:  # bound, not listening, for the whole call: refused, and ours
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert probe.main([f"socket://127.0.0.1:{port}", "--trace", str(tmp_path / "t.log")], out=out) == 2
    assert "Нет связи с ККТ" in out.getvalue()
