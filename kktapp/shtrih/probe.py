"""Check a real Shtrih-M device against this project's model: ``python -m kktapp.shtrih.probe URL``.

Sends only commands that change nothing (0xFC, 0x10, 0x11, FF01, FF03, FF39, FF40, FF0A of the
last document, 0x1A), prints a report in Russian and writes a wire trace (every frame in hex
with the command's name, passwords masked) fit to attach to a bug report: the trace is how the
points marked [U] in :mod:`kktapp.shtrih.model` get settled. Each check runs on its own, so one
refusal does not hide the rest of the report (:mod:`kktapp.probing`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from typing import Any, TextIO

from ..probing import Report, traced_run
from . import commands, model
from .driver import ShtrihDriver

log = logging.getLogger(__name__)

#: [C] Mode names for the report (§4.1).
_MODES = {0: "принтер в рабочем режиме", 1: "выдача данных", 2: "смена открыта", 3: "смена открыта более 24 часов",
          4: "смена закрыта", 5: "блокировка по паролю налогового инспектора", 6: "ожидание подтверждения даты",
          8: "открыт документ", 11: "печать полного фискального отчёта", 12: "печать отчёта ЭКЛЗ"}
_SUBMODES = {0: "бумага есть", 1: "нет бумаги (пассивно)", 2: "бумага кончилась при печати",
             3: "ждёт команды продолжения печати (0xB0)", 4: "печать отчёта", 5: "печать операции"}


class Probe(Report):
    """The read-only checks over a :class:`ShtrihDriver`, reported to ``out``."""

    def __init__(self, driver: ShtrihDriver, out: TextIO) -> None:
        super().__init__(out)
        self.driver = driver
        self.facts: dict[str, Any] = {}

    def one(self, name: str, **params: Any) -> dict[str, Any]:
        """A single command by name (see kktapp.shtrih.commands); FN reads with the admin password."""
        return self.driver.command(name, admin=True, **params)

    # ------------------------------------------------------------------ the checks

    def device_type(self) -> str:
        info = self.one("device_type")
        return (f"«{info['name']}», модель {info['model']}, тип {info['type']}.{info['subtype']}, "
                f"протокол {info['protocol']}.{info['protocol_sub']}")

    def short_status(self) -> str:
        st = self.one("short_status")
        mode, sub = st["mode"] & 0x0F, st["submode"]
        return (f"режим {st['mode']:#04x} ({_MODES.get(mode, '?')}), подрежим {sub} ({_SUBMODES.get(sub, '?')}), "
                f"флаги {st['flags']:#06x}, оператор {st['operator']}")

    def full_status(self) -> str:
        st = self.one("full_status")
        self.facts["status"] = st
        return (f"прошивка {st['fw_version']} сборка {st['fw_build']} от {st['fw_date']}, заводской номер "
                f"{st['serial']}, ИНН {st['inn']}, последняя закрытая смена {st['last_shift']}, "
                f"часы ККТ {st['date']} {st['time']}")

    def fn(self) -> str:
        fn = self.one("fn_status")
        self.facts["fn"] = fn
        expiry = self.one("fn_expiry")
        return (f"ФН {fn['fn_number']}, фаза {fn['phase']:#04x}, смена {'открыта' if fn['shift_open'] else 'закрыта'}, "
                f"предупреждения {fn['warnings']:#04x}, последний ФД {fn['last_fd_number']}, "
                f"годен до {expiry['valid_until']}")

    def shift(self) -> str:
        sh = self.one("fn_shift")
        state = "открыта" if sh["shift_open"] else "закрыта"
        return f"смена {sh['shift_number']} {state}, чеков {sh['receipt_number']}"

    def ofd(self) -> str:
        ofd = self.one("ofd_status")
        return (f"не отправлено в ОФД {ofd['unsent']}, первый неотправленный ФД {ofd['first_unsent_number']} "
                f"от {ofd['first_unsent_at'] or '—'}")

    def last_document(self) -> str:
        fn = self.facts.get("fn") or self.one("fn_status")
        fd = fn["last_fd_number"]
        if not fd:
            return "в ФН ещё нет документов"
        found = self.one("find_document", fd_number=fd)
        if found["doc_type"] not in commands.DOCUMENT_LAYOUTS:
            return f"ФД {fd}: тип {found['doc_type']} (не разбирается), данные {found['data'].hex(' ')}"
        doc = commands.decode_document(found["doc_type"], found["data"])
        return (f"ФД {fd}: тип {found['doc_type']}, ФП {doc['fiscal_sign']}, время {doc['datetime']}, "
                f"квитанция ОФД {'есть' if found['ticket'] else 'нет'}"
                + (f", сумма {doc['total'] / 100:.2f}" if "total" in doc else ""))

    def cash(self) -> str:
        value = self.one("money_register", register=model.REGISTER_CASH)["value"]
        return f"денежный регистр {model.REGISTER_CASH} (наличные в кассе [U]): {value / 100:.2f}"

    def run(self) -> int:
        """All checks; returns the number that failed."""
        return self.report(f"Проверка ККТ Штрих-М {self.driver.url} — {dt.datetime.now():%d.%m.%Y %H:%M:%S}", (
            ("Тип устройства (0xFC)", self.device_type), ("Короткое состояние (0x10)", self.short_status),
            ("Состояние (0x11)", self.full_status), ("ФН (FF01, FF03)", self.fn), ("Смена (FF40)", self.shift),
            ("Обмен с ОФД (FF39)", self.ofd), ("Последний документ (FF0A)", self.last_document),
            ("Наличные (0x1A)", self.cash),
        ))

    def notes(self) -> list[str]:
        bad = self.driver.stats.bad_packets
        return [f"  Повреждённых ответов (LRC): {bad}"] if bad else []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(prog="python -m kktapp.shtrih.probe",
                                description="Проверка настоящей ККТ Штрих-М: только команды, которые ничего не меняют.")
    p.add_argument("url", help="адрес ККТ: socket://192.168.137.111:7778, /dev/ttyACM0, COM3")
    p.add_argument("--trace", metavar="FILE", default=None,
                   help="файл журнала обмена (по умолчанию kkt-probe-ДАТА.log в текущем каталоге)")
    p.add_argument("--password", default=str(model.SYSADMIN_PASSWORD),
                   help="пароль системного администратора (по умолчанию 30)")
    p.add_argument("--baudrate", type=int, default=115200, help="скорость порта USB/COM (по умолчанию 115200)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run the probe; exit code 0 when every check passed, 1 otherwise, 2 without a link."""
    args = parse_args(argv)
    out = out or sys.stdout
    driver = ShtrihDriver(args.url, password=args.password, admin_password=args.password, baudrate=args.baudrate)
    return traced_run(args.url, args.trace, "kktapp.shtrih.link", out, driver.open_link,
                      lambda: Probe(driver, out).run(), driver.close)


if __name__ == "__main__":
    sys.exit(main())
