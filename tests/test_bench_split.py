"""bench/bench_service.py's split of the service CPU into the request side and the device side.

The split counts each worker's answered 1C requests in the service log: if the log's format or
the 1C view's line changed, the figure would silently become "no requests" — hence these tests.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from bench_service import ProcessSplit  # bench/ is not a package
from common import Probe

from kktapp.logsetup import FORMAT


def _line(pid: int, name: str, message: str) -> str:
    record = logging.LogRecord(name, logging.INFO, __file__, 1, message, None, None)
    record.process = pid
    return logging.Formatter(FORMAT).format(record)


def test_requests_are_counted_per_process_from_the_service_log(tmp_path: Path) -> None:
    log_path = tmp_path / "kkt.log"
    log_path.write_text("\n".join([
        _line(101, "kktapp.web.kkt1c", "1С: документ=7 сумма=10,00 ₽ код=0 ФД=5 HTTP=200 адрес=127.0.0.1 время=3 мс"),
        _line(101, "kktapp.web.kkt1c", "1С: чек отклонён: документ=8 сумма=- код=- ФД=- HTTP=400 поле=Goods"),
        _line(202, "kktapp.web.kkt1c", "1С: документ=9 сумма=10,00 ₽ код=0 ФД=6 HTTP=200 адрес=127.0.0.1 время=3 мс"),
        _line(202, "kktapp.owner.worker", "ККТ 1: чек напечатан"),
    ]) + "\n", encoding="utf-8")
    split = ProcessSplit(master=0, log_path=log_path, lock_path=tmp_path / "none.lock")
    assert split.read_counts() == {101: 2, 202: 1}


def test_request_side_is_taken_from_the_workers_without_the_link(tmp_path: Path) -> None:
    lock = tmp_path / "journal.sqlite3.device-1.lock"
    lock.write_text("101\n")
    split = ProcessSplit(master=0, log_path=tmp_path / "kkt.log", lock_path=lock)
    probe = Probe({})
    # The owner (101) answered 100 requests with 0.6 s of CPU; the other worker 100 with 0.2 s.
    probe.readings = [{"extra": {101: (1.0, 10), 202: (2.0, 20)}},
                      {"extra": {101: (1.6, 110), 202: (2.2, 120)}}]
    figures = split.figures(probe, receipts=200)
    assert round(figures["request_side_ms"], 6) == 2.0
    # 0.6 s less the owner's own 100 requests at 2 ms, over 200 receipts.
    assert round(figures["device_side_ms"], 6) == 2.0
    assert figures["requests_elsewhere"] == 0.5


def test_no_split_when_every_request_landed_in_the_owner(tmp_path: Path) -> None:
    lock = tmp_path / "lock"
    lock.write_text("101\n")
    split = ProcessSplit(master=0, log_path=tmp_path / "kkt.log", lock_path=lock)
    probe = Probe({})
    probe.readings = [{"extra": {101: (1.0, 10), 202: (2.0, 20)}}, {"extra": {101: (1.6, 110), 202: (2.0, 20)}}]
    assert split.figures(probe, receipts=100) == {}
