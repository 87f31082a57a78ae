"""The real-device probe (python -m kktapp.atol.probe) and the DEBUG wire trace, against the emulator."""

from __future__ import annotations

import io
import logging
import socket
from pathlib import Path

import pytest

from kktapp.atol import probe
from kktapp.atol.driver import AtolDriver
from kktapp.atol.emulator import Emulator, handlers
from kktapp.domain import Payment, PaymentType, Position, Receipt, SettlementType, VatRate


def run(url: str, tmp_path: Path, *extra: str) -> tuple[int, str, str]:
    out = io.StringIO()
    trace = tmp_path / "trace.log"
    code = probe.main([url, "--trace", str(trace), *extra], out=out)
    return code, out.getvalue(), trace.read_text(encoding="utf-8") if trace.exists() else ""


def test_probe_reports_in_russian_and_changes_nothing(tmp_path: Path) -> None:
    with Emulator() as emu:
        with AtolDriver(emu.url) as d:
            d.open_shift()
            d.x_report()  # leaves the device in mode 2, which the probe must not leave
        before = (emu.state.fd_number, emu.state.mode, emu.state.cash, len(emu.documents()))
        code, report, trace = run(emu.url, tmp_path)
        assert code == 0, report
        assert "НЕТ" not in report and "Итого: не прошло проверок — 0." in report
        assert "Версии ФФД (регистр 0x36): ККТ 1.2, ФН 1.2; позиции пойдут командами EA/EB" in report
        assert "Последний документ (A4 45/46): ФД 1: тип 2" in report
        assert (emu.state.fd_number, emu.state.mode, emu.state.cash, len(emu.documents())) == before
    # The trace names each command and masks the passwords.
    assert "status (запрос состояния)" in trace and "last_sale (запрос последнего чека)" in trace
    assert ">> id=" in trace and "<< id=" in trace and "c1 01" in trace and "2a 2a" in trace
    assert "open_receipt" not in trace


def test_probe_test_receipt_fiscalises_nothing(tmp_path: Path) -> None:
    with Emulator() as emu:
        code, report, trace = run(emu.url, tmp_path, "--test-receipt")
        assert code == 0, report
        assert "ОК   Тестовый чек" in report
        assert emu.documents() == [] and not emu.state.receipt_open
        assert "open_receipt (открытие чека)" in trace and "end_position" in trace and "cancel_receipt" in trace


def test_probe_reports_a_refusal_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(handlers.HANDLERS, "firmware_build")
    with Emulator() as emu:
        code, report, _ = run(emu.url, tmp_path)
    assert code == 1
    assert "НЕТ  Прошивка (9D 91): ККТ ответила ошибкой 0x7A" in report
    assert "ОК   Счётчики" in report  # the checks after it still ran


def test_probe_without_a_link(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now: connection refused
    code, report, _ = run(f"socket://127.0.0.1:{port}", tmp_path)
    assert code == 2 and report.startswith("Нет связи с ККТ")


def test_debug_log_names_each_command(caplog: pytest.LogCaptureFixture) -> None:
    milk = Position(name="Молоко", price=100, quantity=1, amount=100, vat=VatRate.VAT22)
    with Emulator() as emu, AtolDriver(emu.url) as d:
        with caplog.at_level(logging.DEBUG, logger="kktapp.atol.link"):
            d.sell(Receipt(type=SettlementType.SELL, positions=(milk,), payments=(Payment(PaymentType.CASH, 100),)))
    text = caplog.text
    for name in ("open_receipt (открытие чека)", "begin_position", "end_position (регистрация позиции)",
                 "close_receipt (закрытие чека)", "last_sale"):
        assert name in text
    assert "result Add" in text or "async_result" in text
