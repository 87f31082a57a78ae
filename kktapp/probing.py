"""What every device probe shares (``python -m kktapp.atol.probe``, ``kktapp.shtrih.probe``):
a report in Russian where each check runs on its own, so one refusal does not hide the rest,
and a run that writes the link's wire trace to a file for a bug report.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from typing import TextIO

from .errors import DeviceError, KKTError

#: A check: its title in the report and what it reads (a line of text, or an error).
Check = tuple[str, Callable[[], str]]


class Report:
    """One run of read-only checks, reported to ``out`` line by line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.failures = 0

    def say(self, text: str) -> None:
        """One line of the report."""
        self.out.write(text + "\n")

    def check(self, title: str, run: Callable[[], str]) -> None:
        """Run one check; its result or its error becomes a line of the report."""
        try:
            text = run()
        except DeviceError as exc:
            self.failures += 1
            self.say(f"  НЕТ  {title}: ККТ ответила ошибкой 0x{exc.code:02X} «{exc.device_message}»")
        except KKTError as exc:
            self.failures += 1
            self.say(f"  НЕТ  {title}: {exc}")
        except (KeyError, ValueError) as exc:
            self.failures += 1
            self.say(f"  НЕТ  {title}: ответ не разобран ({exc}) — приложите журнал обмена")
        else:
            self.say(f"  ОК   {title}: {text}")

    def notes(self) -> list[str]:
        """Lines after the checks, before the total (none by default)."""
        return []

    def report(self, header: str, checks: Iterable[Check]) -> int:
        """The header, every check, the notes and the total; returns the number that failed."""
        self.say(header)
        for title, fn in checks:
            self.check(title, fn)
        for line in self.notes():
            self.say(line)
        self.say(f"Итого: не прошло проверок — {self.failures}.")
        return self.failures


def traced_run(url: str, trace: str | None, link_logger: str, out: TextIO, connect: Callable[[], None],
               run: Callable[[], int], close: Callable[[], None]) -> int:
    """Connect, run the checks with the link's debug log going to the trace file, close; the
    exit code: 0 when every check passed, 1 otherwise, 2 without a link."""
    trace = trace or f"kkt-probe-{dt.datetime.now():%Y%m%d-%H%M%S}.log"
    handler = logging.FileHandler(trace, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    link_log = logging.getLogger(link_logger)
    link_log.addHandler(handler)
    old_level = link_log.level
    link_log.setLevel(logging.DEBUG)
    try:
        try:
            connect()
        except KKTError as exc:
            out.write(f"Нет связи с ККТ {url}: {exc}\n")
            return 2
        failures = run()
    finally:
        close()
        link_log.removeHandler(handler)
        link_log.setLevel(old_level)
        handler.close()
    out.write(f"Журнал обмена (шестнадцатеричный, с именами команд): {trace}\n")
    return 1 if failures else 0
