"""The fault suite (tests/test_faults.py) on Shtrih-M: whatever breaks, exactly one document per key.

The in-process trials of tests/test_faults.py are adopted unchanged: the link dropped after
every command of a receipt, half an answer frame, a broken LRC, paper running out before each
printing step; the shift over 24 h with drops; 16 clients on 3 devices under two services with
drops all along (the ATOL trial's own injector: aimed at the receipt's close, ``close_receipt``
meaning FF45 here, or after 1-12 commands every 50-200 ms). Only the rig differs: Shtrih-M
emulators and drivers.

Its own summary line (trials, faults, duplicates, lost) is printed at the end; the figures in
the closing note come from::

    .venv/bin/python -m pytest -q -p no:cacheprovider -s tests/test_shtrih_faults.py

The two trials that SIGKILL server processes stay ATOL-only: their subprocess rig builds
ATOL devices, and what they test (the journal and the owner hand-over) is protocol-free.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_faults
from test_faults import Rig

from kktapp import owner as owner_mod
from kktapp.service import DeviceConfig, FiscalService
from kktapp.shtrih.driver import ShtrihDriver
from kktapp.shtrih.emulator import Emulator

log = logging.getLogger(__name__)

for _name in ("test_link_drop_at_every_step_of_a_receipt", "test_expired_shift_with_the_link_dropped_at_every_step",
              "test_device_switched_off_at_random_moments", "test_many_clients_on_several_devices_with_link_drops"):
    globals()[_name] = getattr(test_faults, _name)


@pytest.fixture(scope="module", autouse=True)
def shtrih_summary(request: pytest.FixtureRequest) -> Iterator[None]:
    """A summary of its own: the adopted trials count into a fresh Counter for this module."""
    saved = test_faults.SUMMARY
    test_faults.SUMMARY = summary = Counter()
    # The suite counts second-connection refusals from the ATOL server's logger: relay ours.
    relay = _Relay(logging.getLogger("kktapp.atol.emulator.server"))
    ours = logging.getLogger("kktapp.shtrih.emulator.server")
    ours.addHandler(relay)
    old_level = ours.level
    ours.setLevel(logging.INFO)
    try:
        yield
    finally:
        ours.removeHandler(relay)
        ours.setLevel(old_level)
        test_faults.SUMMARY = saved
        line = (f"fault suite on Shtrih-M: {summary['trials']} trials, {summary['faults']} faults injected, "
                f"{summary['duplicates']} duplicates, {summary['lost']} lost "
                f"(mismatched answers {summary['mismatches']}, seed {test_faults.SEED})")
        reporter = request.config.pluginmanager.get_plugin("terminalreporter")
        capture = request.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None and capture is not None:
            with capture.global_and_fixture_disabled():
                reporter.write_line("")
                reporter.write_line(line)
        log.warning("%s", line)


class _Relay(logging.Handler):
    def __init__(self, target: logging.Logger) -> None:
        super().__init__()
        self.target = target

    def emit(self, record: logging.LogRecord) -> None:
        for handler in self.target.handlers:
            handler.handle(record)


class ShtrihRig(Rig):
    """The suite's rig with Shtrih-M emulators and drivers."""

    #: Shtrih commands go one at a time (two round trips each, nothing pipelined), so a drop
    #: after the n-th command meets status and FN reads more often than on ATOL: the step test
    #: walks 13 commands inside documents where ATOL's minimum is 18 (the order of commands,
    #: not timing, decides it); the other trials pass ATOL's minimums, with this margin.
    in_flight_scale = 0.7

    def emulator(self) -> Emulator:  # type: ignore[override]
        n = len(self.emulators) + 1
        emu = Emulator(log_path=self.tmp / f"fd-{n}.jsonl", serial=f"{7000 + n}")
        emu.start("127.0.0.1", 0)
        emu.log_file = self.tmp / f"fd-{n}.jsonl"  # type: ignore[attr-defined]
        self.emulators.append(emu)  # type: ignore[arg-type]
        return emu

    def service(self, emulators: list[Emulator]) -> FiscalService:  # type: ignore[override]
        devices = [DeviceConfig(number=i, name=f"Касса {i}", url=e.url, protocol="shtrih")
                   for i, e in enumerate(emulators, 1)]
        service = FiscalService(
            str(self.tmp / "journal.sqlite3"), devices, status_refresh=3600,
            # A short answer timeout: a link the emulator half-closed is noticed quickly.
            driver_factory=lambda cfg: ShtrihDriver(cfg.url, timeout=2.0),
        )
        self.services.append(service)
        return service


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ShtrihRig]:
    monkeypatch.setattr(owner_mod, "RECONNECT_MIN", 0.02)
    monkeypatch.setattr(owner_mod, "RECONNECT_MAX", 0.2)
    monkeypatch.setattr(owner_mod, "HOLD_RETRY", 0.1)
    monkeypatch.setattr(owner_mod, "ELECTION_INTERVAL", 0.1)
    r = ShtrihRig(tmp_path)
    try:
        yield r
    finally:
        r.close()
