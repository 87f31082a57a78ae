"""Check a real ATOL device against this project's wire model: ``python -m kktapp.atol.probe URL``.

Runs only commands that change nothing (status, device info, firmware, FFD versions, FN and
OFD state, registers, the last document), prints a report in Russian, and writes a wire trace
(every packet in hex with the command's name, passwords masked) fit to attach to a bug report:
the trace is how the points marked [U] in :mod:`kktapp.atol.model` get settled. With
``--test-receipt`` it also opens one receipt in test mode (92 flag 0x01, nothing fiscalised),
registers one position and cancels it (59).

Each check runs on its own, so one refusal does not hide the rest of the report.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from decimal import Decimal
from typing import Any, TextIO

from ..probing import Check, Report, traced_run
from . import commands, model
from .driver import AtolDriver, ffd_version, step

log = logging.getLogger(__name__)

#: The mode byte's meanings the report names (model.py).
_MODES = {0: "выбор", 1: "регистрация", 2: "отчёты без гашения", 3: "отчёты с гашением", 4: "программирование",
          5: "доступ к ФП", 6: "доступ к ФН", 7: "дополнительный"}


class Probe(Report):
    """One run of the read-only checks over an :class:`AtolDriver`, reported to ``out``."""

    def __init__(self, driver: AtolDriver, out: TextIO) -> None:
        super().__init__(out)
        self.driver = driver
        self.facts: dict[str, Any] = {}

    def one(self, name: str, **params: Any) -> dict[str, Any]:
        """A single command by name (see kktapp.atol.commands)."""
        return self.driver.command(name, **params)

    # ------------------------------------------------------------------ the checks

    def status(self) -> str:
        st = self.one("status")
        short = self.one("short_status")
        mode, sub = commands.split_mode(st["mode"])
        flags = commands.StatusFlags(st["flags"])
        self.facts["status"] = st
        name = commands.MODEL_NAMES.get(st["model"], "?")
        shift = "открыта" if flags & commands.StatusFlags.SHIFT_OPEN else "закрыта"
        return (f"модель {st['model']} ({name}), режим {mode}.{sub} "
                f"({_MODES.get(mode, '?')}), смена {shift}, "
                f"номер последней закрытой смены (3F) {st['shift_number']}, чек {st['receipt_state'] or 'не открыт'}, "
                f"бумага {'есть' if flags & commands.StatusFlags.PAPER_PRESENT else 'нет'}, "
                f"флаги 45: 0x{short['flags']:02X}, часы ККТ {st['datetime']}")

    def device_type(self) -> str:
        info = self.one("device_type")
        return (f"«{info['name']}», протокол {info['protocol']}, модель {info['model']}, "
                f"версия {info['fw_major']}.{info['fw_minor']}.{info['fw_build']}")

    def firmware_build(self) -> str:
        value = self.one("firmware_build")["value"]
        return f"внутренний номер прошивки {commands.firmware_build(value)} (байты {value.hex(' ')})"

    def ffd(self) -> str:
        reg = self.one("ffd_versions")
        names = model.FFD_NAMES
        path = "EA/EB" if ffd_version(reg) >= model.FIRST_EA_EB_FFD else "E6"
        return (f"ККТ {names.get(reg['kkt_ffd'], reg['kkt_ffd'])}, ФН {names.get(reg['fn_ffd'], reg['fn_ffd'])}; "
                f"позиции пойдут командами {path}")

    def serial(self) -> str:
        return f"заводской номер {self.one('serial_number')['serial']} (регистр 0x16)"

    def fn(self) -> str:
        fn = self.one("fn_status")
        self.facts["fn"] = fn
        validity = self.one("fn_validity")
        return (f"ФН {fn['fn_serial']}, фаза {fn['phase']}, предупреждения 0x{fn['warnings']:02X}, "
                f"последний ФД {fn['last_fd_number']}, годен до {validity['valid_until']}")

    def fn_version(self) -> str:
        return f"версия ФН «{self.one('fn_version')['version']}»"

    def ofd(self) -> str:
        ofd = self.one("ofd_status")
        return (f"не отправлено в ОФД {ofd['unsent']}, первый неотправленный ФД {ofd['first_unsent_number']} "
                f"от {ofd['first_unsent_at'] or '—'}")

    def registration(self) -> str:
        reg = self.driver.registration()
        return f"ИНН {reg.inn}, РНМ {reg.rnm}, системы налогообложения 0x{reg.tax_systems:02X}"

    def shift(self) -> str:
        state = self.one("shift_state")
        fn_shift = self.one("fn_shift")
        data = self.one("shift_data")
        self.facts["shift_data"] = data
        st = self.facts.get("status", {})
        note = ""
        if st and fn_shift["state"] and st.get("shift_number") == data["shift_number"]:
            note = " — 3F показывает текущую смену, а не последнюю закрытую: сообщите нам"
        return (f"регистр 0x12: состояние {state['state']}, открыта {state['opened_at'] or '—'}; "
                f"A4 10: смена {fn_shift['shift_number']}, чеков {fn_shift['receipt_number']}; "
                f"регистр 0x35: смена {data['shift_number']}, чек {data['receipt_number']}{note}")

    def last_fd(self) -> str:
        reg = self.one("last_fd")
        fn = self.facts.get("fn")
        note = ""
        if fn and fn["last_fd_number"] != reg["fd_number"]:
            note = f" — не совпадает с A4 30 ({fn['last_fd_number']}): сообщите нам"
        return f"регистр 0x34: последний ФД {reg['fd_number']}{note}"

    def last_sale(self) -> str:
        sale = self.one("last_sale")
        return (f"регистр 0x33: ФД {sale['fd_number']}, тип {sale['receipt_type']}, сумма {sale['total'] / 100:.2f}, "
                f"время {sale['datetime'] or '—'}, ФП {sale['fiscal_sign']}")

    def last_document(self) -> str:
        fn = self.facts.get("fn") or self.one("fn_status")
        if not fn["last_fd_number"]:
            return "в ФН ещё нет документов"
        doc_type, tlv = self.driver.read_document(fn["last_fd_number"])
        tags = ", ".join(str(t) for t in sorted(tlv))
        return f"ФД {fn['last_fd_number']}: тип {doc_type}, реквизиты {tags}"

    def totals(self) -> str:
        shift = self.one("last_shift_totals")
        grand = self.one("non_resettable_total", p1=1)
        drawer = self.one("cash_in_drawer")
        return (f"смена: приход {shift['income'] / 100:.2f}, расход {shift['outcome'] / 100:.2f}; "
                f"необнуляемая сумма продаж {grand['total'] / 100:.2f}; наличных {drawer['amount'] / 100:.2f}")

    def test_receipt(self) -> str:
        """92 test mode → EA → EB → 59: the device checks everything and fiscalises nothing."""
        d = self.driver
        steps = d._mode_steps(model.Mode.REGISTRATION)
        steps += [step("open_receipt", flags=commands.FLAG_TEST, receipt_type=1)]
        if d.ffd >= model.FIRST_EA_EB_FFD:
            steps += [step("begin_position"), step("end_position", price=100, quantity=Decimal(1), sum=100,
                                                   tax=6, name="Проверка связи")]
        else:
            steps += [step("register_position", name="Проверка связи", price=100, quantity=Decimal(1), tax=6)]
        steps += [step("cancel_receipt"), step("leave_mode")]
        try:
            d.execute(steps)
        finally:
            d._mode = None
        return "тестовый чек открыт, позиция принята, чек отменён (ничего не фискализировано)"

    def run(self, *, test_receipt: bool = False) -> int:
        """All checks; returns the number that failed."""
        checks: list[Check] = [
            ("Состояние (3F, 45)", self.status), ("Тип устройства (A5)", self.device_type),
            ("Прошивка (9D 91)", self.firmware_build), ("Версии ФФД (регистр 0x36)", self.ffd),
            ("Заводской номер", self.serial), ("ФН (A4 30, A4 32)", self.fn), ("Версия ФН (A4 33)", self.fn_version),
            ("Обмен с ОФД (A4 20)", self.ofd), ("Регистрация (A4 43)", self.registration),
            ("Смена (0x12, A4 10, 0x35)", self.shift), ("Последний ФД (0x34)", self.last_fd),
            ("Последний чек (0x33)", self.last_sale), ("Последний документ (A4 45/46)", self.last_document),
            ("Счётчики (58, 0x28, 4D)", self.totals),
        ]
        if test_receipt:
            checks.append(("Тестовый чек (92 тест, позиция, 59)", self.test_receipt))
        return self.report(f"Проверка ККТ {self.driver.url} — {dt.datetime.now():%d.%m.%Y %H:%M:%S}", checks)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m kktapp.atol.probe",
                                description="Проверка настоящей ККТ АТОЛ: только команды, которые ничего не меняют.")
    p.add_argument("url", help="адрес ККТ: socket://192.168.1.50:5555, /dev/ttyACM0, COM3")
    p.add_argument("--trace", metavar="FILE", default=None,
                   help="файл журнала обмена (по умолчанию kkt-probe-ДАТА.log в текущем каталоге)")
    p.add_argument("--test-receipt", action="store_true",
                   help="также открыть тестовый чек (ничего не фискализируется) и отменить его")
    p.add_argument("--password", default="30", help="пароль входа в режим (по умолчанию 30)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run the probe; exit code 0 when every check passed, 1 otherwise, 2 without a link."""
    args = parse_args(argv)
    out = out or sys.stdout
    driver = AtolDriver(args.url, operator_password=args.password)
    return traced_run(args.url, args.trace, "kktapp.atol.link", out, lambda: driver.connect(read_only=True),
                      lambda: Probe(driver, out).run(test_receipt=args.test_receipt), driver.close)


if __name__ == "__main__":
    sys.exit(main())
