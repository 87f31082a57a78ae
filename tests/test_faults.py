"""Fault-injection suite (issue 5): whatever breaks, exactly one fiscal document per key.

Every test drives real receipts through the service and the ATOL driver into the emulator
(kktapp.atol.emulator), injects faults, and then checks the emulator's fiscal document log:

* exactly one fiscal receipt per key (no duplicates),
* every key the service acknowledged as done is in the log (nothing lost),
* every acknowledged answer equals its document (FD number, fiscal sign, total, shift, number).

Faults: the link dropped after every task of a receipt, half a frame, a corrupted byte, paper
running out before each printing command, the device switched off at random moments, many
concurrent clients on several devices with link drops, and the server process killed with
SIGKILL (gunicorn workers, and the whole server) while clients retry with the same key.

Only faults that hit a fiscal document in flight are counted (the emulator's
``faults_in_flight``: a receipt open, or a document-forming command running or just run, when
the fault fires): a drop between two jobs or a power cut outside a receipt proves nothing about
exactly-once. Each test asserts that at least a minimum of its faults did hit one.

At the end of the module one line sums it up: trials, faults in flight, duplicates, lost.
Randomness is seeded (KKT_FAULT_SEED, printed in the summary and in every failure's report) so
a failure can be replayed; every loop and wait is bounded; only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import e2e
import pytest
from fakes import eventually, make_receipt

from kktapp.atol.driver import AtolDriver
from kktapp.atol.emulator import Emulator
from kktapp.atol.model import Mode
from kktapp.errors import LinkError
from kktapp.journal import DONE, FAILED
from kktapp.owner import policy as owner_mod
from kktapp.owner.policy import Reasons
from kktapp.service import DeviceConfig, FiscalService

log = logging.getLogger(__name__)
SEED = int(os.environ.get("KKT_FAULT_SEED", "0")) or random.SystemRandom().randrange(1, 2**31)
#: Totals for the summary line.
SUMMARY: Counter[str] = Counter()
#: Seconds a single receipt may take to settle under faults (bounds, not expectations).
SETTLE = 60.0
#: SIGKILLs per run of the server-kill test.
KILLS = 30
#: Of those, how many must land while a device had a document in flight (more kills are made
#: until they did, up to three times KILLS).
KILLS_IN_FLIGHT = 5
#: Power cuts of the power-cut test, and how many of them must land inside a document.
POWER_TRIALS = 40
POWER_IN_FLIGHT = 8


# ---------------------------------------------------------------------- bookkeeping


@pytest.fixture(scope="module", autouse=True)
def summary_line(request: pytest.FixtureRequest):
    """Print the one summary line after the module's tests."""
    yield
    line = (
        f"fault suite: {SUMMARY['trials']} trials, {SUMMARY['faults']} faults hit a document in flight "
        f"({SUMMARY['fired']} fired in all), {SUMMARY['duplicates']} duplicates, {SUMMARY['lost']} lost "
        f"(mismatched answers {SUMMARY['mismatches']}, seed {SEED})"
    )
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if capture is not None and reporter is not None:
        # Past pytest's output capture, straight to the terminal.
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line(line)
    log.warning("%s", line)


@pytest.fixture(autouse=True)
def seed_in_report(request: pytest.FixtureRequest) -> None:
    """A failed test's report names the seed (pytest shows this section only on failure)."""
    request.node.add_report_section("call", "seed", f"replay with KKT_FAULT_SEED={SEED}")


class InFlight:
    """Faults of one test that hit a document in flight, added to the summary as they come."""

    def __init__(self) -> None:
        self.count = 0

    def add(self, in_flight: int, fired: int = 0) -> None:
        self.count += in_flight
        SUMMARY["faults"] += in_flight
        SUMMARY["fired"] += max(fired, in_flight)

    def add_from(self, emus: list[Emulator]) -> None:
        """Everything the emulators counted (for a test that made them fresh)."""
        self.add(sum(e.faults_in_flight for e in emus), sum(e.faults_fired for e in emus))

    def assert_at_least(self, minimum: int, what: str) -> None:
        assert self.count >= minimum, (
            f"only {self.count} {what} hit a document in flight (at least {minimum} expected); "
            f"seed {SEED}, replay with KKT_FAULT_SEED={SEED}")


def read_log(path: Path) -> list[dict]:
    """The emulator's JSON-lines document log."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def item_name(key: str) -> str:
    return f"Товар {key}"


def check(docs: list[dict], sent: set[str], answers: dict[str, dict]) -> tuple[int, int, list[str]]:
    """Duplicates, lost keys and answer mismatches of one device's log; adds to the summary."""
    by_name: dict[str, list[dict]] = {}
    for doc in docs:
        if doc.get("type") == "receipt":
            by_name.setdefault(doc["items"][0]["name"], []).append(doc)
    duplicates = sum(len(by_name.get(item_name(k), [])) - 1 for k in sent if len(by_name.get(item_name(k), [])) > 1)
    lost = sum(1 for k in answers if not by_name.get(item_name(k)))
    mismatches = []
    for key, result in answers.items():
        found = by_name.get(item_name(key))
        if not found:
            continue
        doc = found[0]
        want = {
            "fiscal_document_number": doc["fd_number"], "fiscal_sign": str(doc["fiscal_sign"]),
            "total": doc["total"], "shift_number": doc["shift_number"], "receipt_number": doc["receipt_number"],
        }
        got = {k: result.get(k) for k in want}
        when = dt.datetime.fromisoformat(result["datetime"]).replace(second=0)
        if got != want or when != dt.datetime.fromisoformat(doc["datetime"]).replace(second=0):
            mismatches.append(f"{key}: answer {got} {result['datetime']} != document {want} {doc['datetime']}")
    SUMMARY["duplicates"] += duplicates
    SUMMARY["lost"] += lost
    SUMMARY["mismatches"] += len(mismatches)
    strays = [name for name in by_name if not any(name == item_name(k) for k in sent)]
    assert not strays, f"documents for keys never sent: {strays[:5]}"
    return duplicates, lost, mismatches


def assert_exactly_once(docs: list[dict], sent: set[str], answers: dict[str, dict]) -> None:
    duplicates, lost, mismatches = check(docs, sent, answers)
    assert duplicates == 0, f"{duplicates} duplicate fiscal documents"
    assert lost == 0, f"{lost} acknowledged receipts missing from the FN"
    assert not mismatches, "\n".join(mismatches[:10])


@contextlib.contextmanager
def refusals_counted() -> Iterator[Counter[str]]:
    """Count the emulators' refusals of a second connection while the block runs."""
    counts: Counter[str] = Counter()

    class CountRefusals(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "refusing a second connection" in record.getMessage():
                counts["n"] += 1

    handler = CountRefusals()
    server_log = logging.getLogger("kktapp.atol.emulator.server")
    old_level = server_log.level
    server_log.addHandler(handler)
    server_log.setLevel(logging.INFO)
    try:
        yield counts
    finally:
        server_log.removeHandler(handler)
        server_log.setLevel(old_level)


# ---------------------------------------------------------------------- in-process rig


class Rig:
    """Emulators and services for one test; everything is stopped at the end."""

    #: Share of each test's in-flight minimum this rig's devices must reach: the minimums are
    #: measured on ATOL's pipelined batches; another protocol family's rig may ask for less.
    in_flight_scale = 1.0
    #: The emulator command that forms the settlement-state report (ATOL: 67, with type 9).
    settlement_command = "x_report"

    def need(self, minimum: int) -> int:
        """The in-flight minimum for this rig (at least one fault must hit a document)."""
        return max(1, int(minimum * self.in_flight_scale))

    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.emulators: list[Emulator] = []
        self.services: list[FiscalService] = []

    def emulator(self) -> Emulator:
        n = len(self.emulators) + 1
        emu = Emulator(log_path=self.tmp / f"fd-{n}.jsonl", serial=f"0010620100{n:04d}")
        emu.start("127.0.0.1", 0)
        emu.log_file = self.tmp / f"fd-{n}.jsonl"  # type: ignore[attr-defined]
        self.emulators.append(emu)
        return emu

    def service(self, emulators: list[Emulator]) -> FiscalService:
        devices = [DeviceConfig(number=i, name=f"Касса {i}", url=e.url) for i, e in enumerate(emulators, 1)]
        service = FiscalService(
            str(self.tmp / "journal.sqlite3"), devices, status_refresh=3600,
            # A short answer timeout: a link the emulator half-closed is noticed quickly.
            driver_factory=lambda cfg: AtolDriver(cfg.url, timeout=2.0),
        )
        self.services.append(service)
        return service

    def close(self) -> None:
        for service in self.services:
            service.stop()
            service.journal.close()
        for emu in self.emulators:
            emu.power_on()
            emu.stop()


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Reconnect quickly: the emulator is back in milliseconds, not seconds.
    monkeypatch.setattr(owner_mod, "RECONNECT_MIN", 0.02)
    monkeypatch.setattr(owner_mod, "RECONNECT_MAX", 0.2)
    monkeypatch.setattr(owner_mod, "HOLD_RETRY", 0.1)
    monkeypatch.setattr(owner_mod, "ELECTION_INTERVAL", 0.1)
    r = Rig(tmp_path)
    try:
        yield r
    finally:
        r.close()


def sell(service: FiscalService, key: str, *, device: int = 1, wait: float = SETTLE):
    return service.submit_receipt(make_receipt(name=item_name(key), price=1000 + len(key)), device=device, key=key,
                                  source="faults", wait=wait)


def settle(service: FiscalService, job_id: str, *, held_ok: bool = False) -> Any:
    """Wait (bounded) until the job is finished and (unless ``held_ok``) nothing holds its device."""
    def done() -> bool:
        job = service.get_job(job_id)
        return job is not None and job.finished and (held_ok or not service.unsettled(job.device))

    assert eventually(done, SETTLE, 0.02), f"job {job_id} not settled: {service.get_job(job_id)}"
    return service.get_job(job_id)


def quiet(service: FiscalService, emu: Emulator, device: int = 1) -> None:
    """Wait until the owner has refreshed its status after the last job (no task in flight)."""
    def idle() -> bool:
        snap = service.snapshot(device)
        last = snap.get("last_document") or {}
        return (snap.get("link") == "ok" and last.get("fd_number") == emu.state.fd_number
                and not any(snap["queue"].values()))

    assert eventually(idle, SETTLE, 0.01)


# ---------------------------------------------------------------------- the link, step by step


def arm_at(emu: Emulator, command: str, arm: Callable[[], None]) -> None:
    """Arm a fault just before the emulator next executes ``command`` (once; an ATOL step name
    means the commands that do that step on another family's emulator)."""
    own = emu._before_command
    names = emu.step_commands(command)

    def hook(name: str) -> None:
        own(name)
        if name in names:
            emu._before_command = own  # type: ignore[method-assign]
            arm()

    emu._before_command = hook  # type: ignore[method-assign]


def test_link_drop_at_every_step_of_a_receipt(rig: Rig) -> None:
    emu = rig.emulator()
    service = rig.service([emu])
    sent: set[str] = set()
    answers: dict[str, dict] = {}
    reasons: dict[str, str] = {}

    hits = InFlight()

    def trial(key: str, inject) -> int:
        """One receipt with a fault armed; returns how many faults actually fired."""
        quiet(service, emu)
        fired_before, in_flight_before = emu.faults_fired, emu.faults_in_flight
        inject()
        SUMMARY["trials"] += 1
        sent.add(key)
        t0 = time.monotonic()
        # A copy owed for lack of paper holds the queue until the paper is back: that is checked
        # by the caller.
        job = settle(service, sell(service, key, wait=0).id, held_ok=True)
        log.info("trial %s: %.3f s", key, time.monotonic() - t0)
        if job.state == FAILED:
            # A clean refusal (paper): nothing fiscalised; the client retries with the same key.
            emu.paper_in()
            job = settle(service, sell(service, key, wait=0).id)
        assert job.state == DONE, job
        answers[key] = job.result
        reasons[key] = job.reason
        fired = emu.faults_fired - fired_before
        hits.add(emu.faults_in_flight - in_flight_before, fired)
        return fired

    warm = f"warm-{uuid.uuid4().hex[:6]}"
    sent.add(warm)
    answers[warm] = settle(service, sell(service, warm).id).result
    # Dropping the link after the n-th task walks through every step of one job (whatever the
    # owner reads around the pipelined receipt, the receipt's own tasks, the document read),
    # until n is past the job's last task and the armed drop no longer fires.
    for n in range(1, 61):
        if not trial(f"drop{n}-{uuid.uuid4().hex[:6]}", lambda n=n: emu.drop_after_tasks(n)):
            emu.clear_faults()
            break
    else:
        raise AssertionError("a drop after 60 tasks still fired: a receipt should take far fewer")
    # A 3-position receipt alone is open + 3 positions + payment + close and the FN reads.
    assert n > 8, f"only {n - 1} steps of a receipt were reached"
    # Broken frames armed at once meet the first answer of the job (a read); armed when the
    # receipt opens they meet an answer inside it.
    for i in range(8):
        for name, fault in (("half", emu.drop_mid_frame), ("crc", emu.corrupt_next_byte)):
            arm = fault if i % 2 else (lambda fault=fault: arm_at(emu, "open_receipt", fault))
            assert trial(f"{name}{i}-{uuid.uuid4().hex[:6]}", arm) == 1
    for command in ("open_receipt", "end_position", "close_receipt"):
        for i in range(3):
            def out(command: str = command) -> None:
                emu.paper_out(before=command)
            key = f"paper-{command}-{i}-{uuid.uuid4().hex[:6]}"
            trial_started = time.monotonic()
            assert trial(key, out) == 1
            assert time.monotonic() - trial_started < SETTLE
            no_copy = reasons[key] == Reasons.NO_COPY
            if command == "close_receipt":
                # Fiscalised, not printed. A driver whose copy command is not trusted (ATOL: atol
                # model.py, REPRINT_OWED_COPY) leaves the copy to the operator and nothing holds
                # the queue; otherwise the queue holds until paper is back, then the copy.
                assert answers[key]["printed"] is False
                assert no_copy or service.unsettled()
            if no_copy:
                assert not service.unsettled()
            emu.paper_in()
            assert eventually(lambda: not service.unsettled(), SETTLE, 0.02)
            if not no_copy:
                assert not emu.state.print_pending
    assert not emu.state.receipt_open
    assert_exactly_once(read_log(emu.log_file), sent, answers)
    # The drops after the receipt's own tasks (92 to 4A), the eight broken frames armed inside it
    # and the nine paper-outs: 23 when written; the order of tasks, not timing, decides them.
    hits.assert_at_least(rig.need(18), "link drops, broken frames and paper-outs")


def test_expired_shift_with_the_link_dropped_at_every_step(rig: Rig) -> None:
    """Over 24 h: Z report, new shift, receipt — with the link dropped after each task of that."""
    emu = rig.emulator()
    service = rig.service([emu])
    sent: set[str] = set()
    answers: dict[str, dict] = {}
    hits = InFlight()
    # One day per step: the drop walks through Z, the new shift and the receipt until it is
    # armed past the job's last task and no longer fires.
    for n in range(0, 81):
        key = f"day{n}-{uuid.uuid4().hex[:6]}"
        quiet(service, emu)
        emu.advance_clock(25)
        fired_before, in_flight_before = emu.faults_fired, emu.faults_in_flight
        if n:
            emu.drop_after_tasks(n)
        SUMMARY["trials"] += 1
        sent.add(key)
        job = settle(service, sell(service, key, wait=0).id)
        assert job.state == DONE, job
        answers[key] = job.result
        hits.add(emu.faults_in_flight - in_flight_before, emu.faults_fired - fired_before)
        # A drop armed past the last task of Z + open + receipt must not leak into the next day.
        emu.clear_faults()
        if n and emu.faults_fired == fired_before:
            break
    else:
        raise AssertionError("a drop after 80 tasks still fired: Z, open and receipt take far fewer")
    days = n + 1
    docs = read_log(emu.log_file)
    assert_exactly_once(docs, sent, answers)
    # Shifts alternate open/close; every receipt is in its own fresh shift (one receipt a day).
    shifts = [d["type"] for d in docs if d["type"] in ("open_shift", "close_shift")]
    assert shifts == ["open_shift"] + ["close_shift", "open_shift"] * (days - 1)
    receipts = [d for d in docs if d["type"] == "receipt"]
    assert [d["shift_number"] for d in receipts] == list(range(1, days + 1))
    # Drops right after 5A, 9A and the receipt's own tasks: 6 when written.
    hits.assert_at_least(rig.need(4), "link drops")


def test_receipt_whose_92_opened_the_shift_with_the_link_dropped_at_every_step(rig: Rig) -> None:
    """The shift is closed behind the owner's back (a Z report at the device's keyboard) just before
    its receipt: 92 opens the shift itself, an FN document of its own ([C K], atol-real-device.md
    §6), so the FD number grows by two around one receipt. Recovery must never take that
    shift-open document for the receipt, whichever task the link drops after."""
    emu = rig.emulator()
    service = rig.service([emu])
    sent: set[str] = set()
    answers: dict[str, dict] = {}
    device = emu.device

    paper_hook = emu._before_command

    def z_at_the_keyboard(name: str) -> None:
        # Runs with the device lock held, just before the named command executes.
        paper_hook(name)
        if name == "open_receipt" and armed and device.state.shift_open and device.state.receipt is None:
            armed.clear()
            s = device.state
            saved = (s.mode, s.submode, s.operator)
            s.mode = 3
            device.close_shift()
            s.mode, s.submode, s.operator = saved
            device.progress = []

    armed: list[bool] = []
    emu._before_command = z_at_the_keyboard  # type: ignore[method-assign]
    warm = f"warm-{uuid.uuid4().hex[:6]}"
    sent.add(warm)
    answers[warm] = settle(service, sell(service, warm).id).result
    def idle() -> bool:
        # Not quiet(): a document number that grew by two makes the owner forget what it
        # remembered (owner.py), so its snapshot waits for the next full read.
        snap = service.snapshot(1)
        return snap.get("link") == "ok" and not any(snap["queue"].values()) and not service.unsettled(1)

    for n in range(0, 12):
        key = f"auto{n}-{uuid.uuid4().hex[:6]}"
        assert eventually(idle, SETTLE, 0.01)
        armed.append(True)
        if n:
            emu.drop_after_tasks(n)
        SUMMARY["trials"] += 1
        sent.add(key)
        job = settle(service, sell(service, key, wait=0).id)
        assert job.state == DONE, job
        answers[key] = job.result
        emu.clear_faults()
    # A device error after 92 opened the shift (paper out at the position): a clean refusal, the
    # shift report is not taken for the receipt; the client sends the same key again.
    for i in range(3):
        key = f"autopaper{i}-{uuid.uuid4().hex[:6]}"
        assert eventually(idle, SETTLE, 0.01)
        armed.append(True)
        emu.paper_out(before="end_position")
        SUMMARY["trials"] += 1
        sent.add(key)
        job = settle(service, sell(service, key, wait=0).id)
        assert job.state == FAILED, job
        emu.paper_in()
        job = settle(service, sell(service, key, wait=0).id)
        assert job.state == DONE, job
        answers[key] = job.result
    docs = read_log(emu.log_file)
    assert_exactly_once(docs, sent, answers)
    kinds = [d["type"] for d in docs]
    assert kinds.count("close_shift") == 15 and kinds.count("open_shift") == 16
    assert all(kinds[i + 1] == "open_shift" for i, kind in enumerate(kinds) if kind == "close_shift")


def test_device_switched_off_at_random_moments(rig: Rig) -> None:
    rnd = random.Random(SEED)
    emu = rig.emulator()
    service = rig.service([emu])
    sent: set[str] = set()
    answers: dict[str, dict] = {}
    # A device that takes its time per task, as a real one does: a receipt then lasts long
    # enough for a cut to land inside it (an instant one lasts microseconds).
    emu.set_device_time(0.003)
    hits = InFlight()
    # Where a cut lands depends on the machine's speed: cut until enough landed in a receipt
    # (at least POWER_TRIALS cuts, at most five times as many).
    for i in range(POWER_TRIALS * 5):
        if i >= POWER_TRIALS and hits.count >= rig.need(POWER_IN_FLIGHT):
            break
        key = f"power{i}-{uuid.uuid4().hex[:6]}"
        sent.add(key)
        SUMMARY["trials"] += 1
        in_flight_before = emu.faults_in_flight
        cut = threading.Timer(rnd.uniform(0.0, 0.04), emu.power_off)
        cut.start()
        job = sell(service, key, wait=0)
        cut.join()
        time.sleep(rnd.uniform(0.0, 0.1))
        emu.power_on()
        # A cut outside a receipt is not a fault of this test: counted only when in flight.
        hits.add(emu.faults_in_flight - in_flight_before, 1)
        answers[key] = settle(service, job.id).result
    assert_exactly_once(read_log(emu.log_file), sent, answers)
    hits.assert_at_least(rig.need(POWER_IN_FLIGHT), "power cuts")


def test_many_clients_on_several_devices_with_link_drops(rig: Rig) -> None:
    rnd = random.Random(SEED + 1)
    emus = [rig.emulator() for _ in range(3)]
    # Two services on one journal: two processes' worth of owners competing for each device.
    services = [rig.service(emus), rig.service(emus)]
    sent: dict[int, set[str]] = {n: set() for n in (1, 2, 3)}
    answers: dict[int, dict[str, dict]] = {n: {} for n in (1, 2, 3)}
    lock = threading.Lock()
    failures: list[str] = []
    stop = threading.Event()

    def client(c: int) -> None:
        crnd = random.Random(SEED + 100 + c)
        for i in range(10):
            device = crnd.randint(1, 3)
            key = f"c{c}-{i}-{uuid.uuid4().hex[:6]}"
            with lock:
                sent[device].add(key)
            service = services[crnd.randint(0, 1)]
            try:
                job = sell(service, key, device=device, wait=SETTLE)
                if not job.finished:
                    job = settle(service, job.id)
                # A retry of the same key (the answer got lost) must get the same answer.
                again = sell(services[crnd.randint(0, 1)], key, device=device, wait=SETTLE)
                if job.state != DONE or again.id != job.id or again.result != job.result:
                    raise AssertionError(f"{key}: {job} / {again}")
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                with lock:
                    failures.append(f"{key}: {exc!r}")
                continue
            with lock:
                answers[device][key] = job.result

    aimed: set[Emulator] = set()

    def injector() -> None:
        while not stop.is_set():
            emu = rnd.choice(emus)
            if rnd.random() < 0.5 and emu not in aimed:
                # Aimed right after 4A: the document exists, its answer is lost (the drop after
                # n tasks mostly meets reads between documents). Not at a receipt's earlier
                # commands: those make it resend, and aimed drops would then meet each resend
                # until the owner gives it up (MAX_SEND_ATTEMPTS). One at a time per device.
                def drop(emu: Emulator = emu) -> None:
                    aimed.discard(emu)
                    emu.drop_after_tasks(1)

                aimed.add(emu)
                arm_at(emu, "close_receipt", drop)
            else:
                emu.drop_after_tasks(rnd.randint(1, 12))
            stop.wait(rnd.uniform(0.05, 0.2))

    threads = [threading.Thread(target=client, args=(c,)) for c in range(16)]
    chaos = threading.Thread(target=injector)
    with refusals_counted() as refusals:
        try:
            for t in threads:
                t.start()
            chaos.start()
            for t in threads:
                t.join(SETTLE * 4)
        finally:
            stop.set()
            chaos.join(10)
    assert not any(t.is_alive() for t in threads)
    SUMMARY["trials"] += sum(len(s) for s in sent.values())
    # Re-arming overwrites a drop that has not fired yet: count what happened, not what was armed.
    hits = InFlight()
    hits.add_from(emus)
    assert not failures, failures[:5]
    for n, emu in enumerate(emus, 1):
        assert_exactly_once(read_log(emu.log_file), sent[n], answers[n])
    # One link per device: the emulator never had to refuse a second connection.
    assert refusals["n"] == 0
    hits.assert_at_least(rig.need(5), "link drops")


# ---------------------------------------------------------------------- SIGKILL of the server


def owner_pid(journal: Path, device: int = 1) -> int | None:
    """The pid written by the process that holds the device's lock (may be stale)."""
    try:
        text = Path(f"{journal}.device-{device}.lock").read_text().strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


def post_receipt(url: str, key: str, device: int, timeout: float = 20.0) -> tuple[int, dict | None]:
    body = {
        "id": key, "device": device,
        "items": [{"name": item_name(key), "price": "10.00", "quantity": 1, "tax": "vat22"}],
        "payments": [{"type": "electronic", "amount": "10.00"}],
    }
    try:
        status, _, raw = e2e.request("POST", f"{url}/api/v1/receipts?wait=10", json.dumps(body),
                                     {"Content-Type": "application/json"}, timeout=timeout)
    except OSError:
        return 0, None
    except Exception:  # noqa: BLE001 - http.client errors of a killed worker
        return 0, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, None


def test_server_killed_while_clients_retry(tmp_path: Path) -> None:
    rnd = random.Random(SEED + 2)
    emus = []
    for n in (1, 2):
        # A few ms per task, as a real device: a kill can land inside a receipt (see the power test).
        emu = Emulator(log_path=tmp_path / f"fd-{n}.jsonl", serial=f"0010620200{n:04d}", device_time=0.003)
        emu.start("127.0.0.1", 0)
        emus.append(emu)
    journal = tmp_path / "journal.sqlite3"
    settings = e2e.write_settings(
        tmp_path / "site.py",
        DEVICES=[{"number": n, "name": f"Касса {n}", "url": e.url} for n, e in enumerate(emus, 1)],
        JOURNAL_PATH=str(journal), AUTH_REQUIRED=False, LOG_FILE=str(tmp_path / "kkt.log"),
        LOG_LEVEL="INFO", STATUS_REFRESH_SECONDS=2,
    )
    sent: dict[int, set[str]] = {1: set(), 2: set()}
    answers: dict[int, dict[str, dict]] = {1: {}, 2: {}}
    lock = threading.Lock()
    stop = threading.Event()
    failures: list[str] = []
    server: dict[str, e2e.ServerProcess] = {}
    #: Chosen by the first start (which retries on a taken port); restarts reuse it, so the
    #: clients' URL stays the same.
    port: list[int | None] = [None]
    restarts = [0]
    kills: Counter[str] = Counter()
    #: Set once KILLS processes have been killed, KILLS_IN_FLIGHT of them with a document in
    #: flight: the clients stop taking new keys.
    enough = threading.Event()
    hits = InFlight()

    def start_server() -> None:
        # Alternate plain and --preload (fork after create_app) starts: both must be fork-safe.
        extra = ["--preload"] if restarts[0] % 2 else []
        srv = e2e.start_gunicorn(settings, port=port[0], workers=3, threads=8, extra_args=extra,
                                 log_path=tmp_path / f"gunicorn-{restarts[0]}.log")
        restarts[0] += 1
        port[0] = int(srv.url.rsplit(":", 1)[1])
        server["srv"] = srv

    def client(c: int) -> None:
        crnd = random.Random(SEED + 200 + c)
        # New keys until enough kills have happened (bounded by a number of keys as well).
        for i in range(40):
            if enough.is_set():
                return
            device = crnd.randint(1, 2)
            key = f"k{c}-{i}-{uuid.uuid4().hex[:6]}"
            with lock:
                sent[device].add(key)
            deadline = time.monotonic() + SETTLE * 2
            while time.monotonic() < deadline:
                srv = server.get("srv")
                status, body = post_receipt(srv.url, key, device) if srv else (0, None)
                if status == 200 and body and body.get("state") == DONE:
                    with lock:
                        answers[device][key] = body["result"]
                    break
                # Killed worker, restarting server, 202 or 503: the client retries the same key.
                time.sleep(0.05)
            else:
                with lock:
                    failures.append(f"{key}: no answer in time")

    def killer() -> None:
        while not stop.is_set():
            stop.wait(rnd.uniform(0.1, 0.4))
            if stop.is_set():
                return
            srv = server.get("srv")
            if srv is None:
                continue
            if rnd.random() < 0.15:
                # The whole server dies (kill -9 of the group) and is started again.
                in_flight = any(e.document_in_flight() for e in emus)
                os.killpg(srv.proc.pid, signal.SIGKILL)
                srv.proc.wait(10)
                killed("server", in_flight)
                server.pop("srv", None)
                start_server()
                continue
            device = rnd.randint(1, 2)
            pid = owner_pid(journal, device)
            if pid and pid != srv.proc.pid:
                # Aimed while too few kills have hit a document, then half the time: a receipt
                # is in the device for a few ms of every sale; wait (briefly) for one, so that
                # enough kills test exactly-once at all. On a loaded machine restarts take most
                # of the time, and kills at random moments alone ran out of keys at 2 hits of 5.
                if hits.count < KILLS_IN_FLIGHT or rnd.random() < 0.5:
                    deadline = time.monotonic() + 1.0
                    while not emus[device - 1].document_in_flight() and time.monotonic() < deadline:
                        time.sleep(0.0005)
                in_flight = emus[device - 1].document_in_flight()
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed("owner", in_flight)

    def killed(what: str, in_flight: bool) -> None:
        with lock:
            kills[what] += 1
            hits.add(int(in_flight), 1)
            total = sum(kills.values())
            if (total >= KILLS and hits.count >= KILLS_IN_FLIGHT) or total >= KILLS * 3:
                enough.set()

    counting = refusals_counted()
    refusals = counting.__enter__()
    start_server()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(8)]
    chaos = threading.Thread(target=killer)
    try:
        for t in threads:
            t.start()
        chaos.start()
        for t in threads:
            t.join(SETTLE * 3)
        stop.set()
        chaos.join(30)
        alive = [t for t in threads if t.is_alive()]
        assert not alive, "clients still running"
        SUMMARY["trials"] += sum(len(s) for s in sent.values())
        assert not failures, failures[:5]
        for n in (1, 2):
            assert_exactly_once(read_log(tmp_path / f"fd-{n}.jsonl"), sent[n], answers[n])
        service_log = (tmp_path / "kkt.log").read_text(encoding="utf-8")
        log.info("SIGKILL: %d owners, %d whole servers, %d with a document in flight; %d jobs found in "
                 "flight, %d found fiscalised; %d second connections refused", kills["owner"], kills["server"],
                 hits.count, service_log.count("работа сервиса прервалась"),
                 service_log.count("был пробит до сбоя"), refusals["n"])
        hits.assert_at_least(KILLS_IN_FLIGHT, "SIGKILLs")
    finally:
        counting.__exit__(None, None, None)
        stop.set()
        srv = server.get("srv")
        if srv is not None:
            srv.stop()
        for emu in emus:
            emu.stop()


# ---------------------------------------------------------------------- processes sharing devices


class Proc:
    """tests/svc_proc.py in a subprocess: a FiscalService of its own on the shared journal."""

    def __init__(self, journal: Path, urls: list[str], log_path: Path) -> None:
        self.log = open(log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("svc_proc.py")), str(journal), *urls],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, start_new_session=True,
            preexec_fn=e2e._die_with_parent,
        )
        self.pid = self.proc.pid

    def ask(self, cmd: dict, timeout: float = SETTLE) -> dict:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        assert ready, f"process {self.pid} did not answer {cmd} in {timeout} s"
        return json.loads(self.proc.stdout.readline())

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()  # type: ignore[union-attr]
                self.proc.wait(20)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


def test_processes_share_one_link_and_hand_it_over_after_kill(tmp_path: Path) -> None:
    """Three processes, one journal, two devices: one connection per device, takeover after kill -9."""
    counting = refusals_counted()
    refusals = counting.__enter__()
    emus = [Emulator(log_path=tmp_path / f"fd-{n}.jsonl", serial=f"0010620300{n:04d}") for n in (1, 2)]
    for emu in emus:
        emu.start("127.0.0.1", 0)
    journal = tmp_path / "journal.sqlite3"
    procs = [Proc(journal, [e.url for e in emus], tmp_path / f"proc-{i}.log") for i in range(3)]
    sent: dict[int, set[str]] = {1: set(), 2: set()}
    answers: dict[int, dict[str, dict]] = {1: {}, 2: {}}

    def sell_via(proc: Proc, device: int, key: str) -> None:
        sent[device].add(key)
        job = proc.ask({"op": "sell", "key": key, "device": device, "wait": SETTLE})
        assert job["state"] == DONE, job
        answers[device][key] = job["result"]

    try:
        for proc in procs:
            assert proc.ask({"op": "start"})["pid"] == proc.pid
        for round_ in range(4):
            for i, proc in enumerate(procs):
                sell_via(proc, 1 + (i + round_) % 2, f"p{i}-r{round_}-{uuid.uuid4().hex[:6]}")
        SUMMARY["trials"] += 12
        alive = list(procs)
        for takeover in range(2):
            # Kill -9 the owner of device 1 (it may own device 2 too); a survivor takes over.
            pid = owner_pid(journal, 1)
            victim = next(p for p in alive if p.pid == pid)
            # Between two sales: counted only should a document be in flight after all.
            in_flight = any(e.document_in_flight() for e in emus)
            victim.kill()
            alive.remove(victim)
            InFlight().add(int(in_flight), 1)
            for device in (1, 2):
                for n in range(3):
                    sell_via(alive[n % len(alive)], device, f"t{takeover}-{device}-{n}-{uuid.uuid4().hex[:6]}")
                    SUMMARY["trials"] += 1
            assert owner_pid(journal, 1) in {p.pid for p in alive}
        owners = [p.ask({"op": "owners"}) for p in alive]
        assert sum(o["1"] for o in owners) == 1 and sum(o["2"] for o in owners) == 1
    finally:
        for proc in procs:
            proc.stop()
        for emu in emus:
            emu.stop()
        counting.__exit__(None, None, None)
    for n in (1, 2):
        assert_exactly_once(read_log(tmp_path / f"fd-{n}.jsonl"), sent[n], answers[n])
    assert refusals["n"] == 0, "a second connection was attempted while the device was owned"


# ---------------------------------------------------------------------- cash in and out, answer lost


def cash_also_put_in_at_the_keyboard(emu: Emulator, monkeypatch: pytest.MonkeyPatch, extra_cash: int) -> None:
    """Someone puts ``extra_cash`` into the drawer at the device's keyboard with every 49/4F."""
    device = emu.device
    for name in ("cash_in", "cash_out"):
        run = getattr(device, name)

        def and_keyboard(amount: int, run: Callable[..., Any] = run) -> None:
            run(amount)
            device.state.cash += extra_cash

        monkeypatch.setattr(device, name, and_keyboard)


@pytest.mark.parametrize("kind", ["cash_in", "cash_out"])
def test_cash_operation_whose_answer_is_lost_is_settled_by_the_drawer(rig: Rig, kind: str) -> None:
    """49/4F run, the link drops before their answer. The FD number does not move (no FN
    document), so it cannot tell; the cash in the drawer, kept in the journal before sending,
    does: the job is done once, never sent again."""
    emu = rig.emulator()  # 49/4F form no FN document there, as on a device
    service = rig.service([emu])
    assert settle(service, sell(service, "warm").id).state == DONE
    assert settle(service, service.submit("cash_in", {"amount": 100_000}, wait=0).id).state == DONE
    drawer = emu.state.cash
    fired = emu.faults_fired
    arm_at(emu, kind, lambda: emu.drop_after_tasks(1))  # the command runs, its answer is lost
    job = settle(service, service.submit(kind, {"amount": 12_345}, wait=0).id)
    assert emu.faults_fired == fired + 1, "the link never dropped"
    assert job.state == DONE, job
    assert emu.state.cash == drawer + (12_345 if kind == "cash_in" else -12_345)
    assert (job.result["fiscal_document_number"], job.result["fiscal_sign"], job.result["total"]) == (0, "", 12_345)
    SUMMARY["trials"] += 1
    InFlight().add(1, 1)


def test_settlement_report_whose_answer_is_lost_is_found_in_the_fn(rig: Rig) -> None:
    """The settlement-state report is an FN document: its answer lost, the job is settled by
    the FD number kept in the journal before sending, done once and never sent again."""
    emu = rig.emulator()
    service = rig.service([emu])
    assert settle(service, sell(service, "warm").id).state == DONE
    before = len(emu.documents())
    fired = emu.faults_fired
    arm_at(emu, rig.settlement_command, lambda: emu.drop_after_tasks(1))  # it runs, its answer is lost
    job = settle(service, service.submit("settlement_report", {"cashier_name": "Петрова А.А."}, key="ofd",
                                         wait=0).id)
    assert emu.faults_fired == fired + 1, "the link never dropped"
    docs = emu.documents()
    assert job.state == DONE, job
    assert [d["type"] for d in docs[before:]] == ["settlement_report"]
    assert job.fd_before == docs[before - 1]["fd_number"]
    assert (job.result["fiscal_document_number"], job.result["fiscal_sign"]) == (
        docs[-1]["fd_number"], docs[-1]["fiscal_sign"])
    again = service.submit("settlement_report", {"cashier_name": "Петрова А.А."}, key="ofd", wait=SETTLE)
    assert again.id == job.id and len(emu.documents()) == before + 1
    SUMMARY["trials"] += 1
    InFlight().add(1, 1)


def test_settlement_report_refused_by_the_device_fails_and_forms_nothing(rig: Rig) -> None:
    emu = rig.emulator()
    service = rig.service([emu])
    emu.paper_out(before=rig.settlement_command)
    job = settle(service, service.submit("settlement_report", wait=0).id)
    assert job.state == FAILED and job.error["code"] and emu.documents() == []
    assert job.attempts == 1  # a refusal is not sent again


def test_cash_operation_the_drawer_cannot_settle_is_left_to_the_operator(rig: Rig,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer to 49 is lost and the drawer moved by something besides it (cash put in at the
    device meanwhile): the device cannot tell whether 49 ran. The job stays unknown with the
    reason for the operator and is never sent again."""
    monkeypatch.setattr(owner_mod, "UNDECIDED_RECHECK", 0.05)
    emu = rig.emulator()
    service = rig.service([emu])
    assert settle(service, sell(service, "warm").id).state == DONE
    cash_also_put_in_at_the_keyboard(emu, monkeypatch, 500)
    drawer = emu.state.cash
    arm_at(emu, "cash_in", lambda: emu.drop_after_tasks(1))
    job = service.submit("cash_in", {"amount": 12_345}, wait=0)

    def waits_for_operator() -> bool:
        got = service.get_job(job.id)
        return got is not None and got.state == "unknown" and "решите сами" in got.reason

    assert eventually(waits_for_operator, SETTLE, 0.02), service.get_job(job.id)
    looks = [0]
    own = emu._before_command

    def count(name: str) -> None:
        own(name)
        looks[0] += name == "cash_in_drawer"

    emu._before_command = count  # type: ignore[method-assign]
    assert eventually(lambda: looks[0] >= 3, SETTLE, 0.02), "the owner stopped looking at the drawer"
    assert emu.state.cash == drawer + 12_345 + 500, "sent again"
    assert service.get_job(job.id).state == "unknown" and service.unsettled(1)
    SUMMARY["trials"] += 1
    InFlight().add(1, 1)


# ---------------------------------------------------------------------- a new process settles the receipt


@pytest.mark.parametrize("crash_at", ["open_receipt", "close_receipt"])
def test_process_killed_in_a_receipt_whose_92_opened_the_shift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               crash_at: str) -> None:
    """Process A sends a receipt whose 92 opens the shift itself (a Z report was made at the
    device's keyboard just before: the FN gains a shift-open report, [C K]) and is killed -9 at
    92, the link dropping right after it so that 4A never runs, or at 4A, the receipt formed and
    its answer lost. Process B (this one: a new owner and driver on the same journal, nothing of
    A's memory) settles it from the journal's number and the FN alone: exactly one receipt, and
    the answer is that receipt's document, never the shift report."""
    monkeypatch.setattr(owner_mod, "RECONNECT_MIN", 0.02)
    monkeypatch.setattr(owner_mod, "HOLD_RETRY", 0.1)
    monkeypatch.setattr(owner_mod, "ELECTION_INTERVAL", 0.1)
    emu = Emulator(log_path=tmp_path / "fd.jsonl", serial="00106203000001")
    emu.start("127.0.0.1", 0)
    journal = tmp_path / "journal.sqlite3"
    a = Proc(journal, [emu.url], tmp_path / "proc-a.log")
    b: FiscalService | None = None
    key = f"crash-{crash_at}-{uuid.uuid4().hex[:6]}"
    sent, answers = {"warm", key}, {}
    killed: list[str] = []
    own = emu._before_command

    def crash(name: str) -> None:
        # Device lock held, just before the command runs.
        own(name)
        if killed:
            return
        if name == "open_receipt":
            s = emu.device.state
            saved = (s.mode, s.submode, s.operator)
            s.mode = Mode.REPORT_Z
            emu.device.close_shift()
            s.mode, s.submode, s.operator = saved
            emu.device.progress = []
            if crash_at == "open_receipt":
                emu.drop_after_tasks(1)  # 92 runs, nothing after it
        if name == crash_at:
            killed.append(name)
            os.kill(a.pid, signal.SIGKILL)

    try:
        assert a.ask({"op": "start"})["pid"] == a.pid
        warm = a.ask({"op": "sell", "key": "warm", "wait": SETTLE})
        assert warm["state"] == DONE, warm
        answers["warm"] = warm["result"]
        emu._before_command = crash  # type: ignore[method-assign]
        assert a.proc.stdin is not None
        a.proc.stdin.write((json.dumps({"op": "sell", "key": key, "wait": SETTLE}) + "\n").encode())
        a.proc.stdin.flush()
        a.proc.wait(SETTLE)
        assert killed == [crash_at]
        emu._before_command = own  # type: ignore[method-assign]
        kinds = [d["type"] for d in read_log(tmp_path / "fd.jsonl")]
        formed = ["receipt"] if crash_at == "close_receipt" else []
        assert kinds == ["open_shift", "receipt", "close_shift", "open_shift", *formed]
        b = FiscalService(str(journal), [DeviceConfig(number=1, name="Касса 1", url=emu.url)], status_refresh=3600,
                          driver_factory=lambda cfg: AtolDriver(cfg.url, timeout=2.0))
        job = b.find_job("receipt", key)
        assert job is not None and job.state == "sending"
        job = settle(b, job.id)
        assert job.state == DONE, job
        answers[key] = job.result
    finally:
        if b is not None:
            b.stop()
            b.journal.close()
        a.stop()
        emu.stop()
    docs = read_log(tmp_path / "fd.jsonl")
    assert_exactly_once(docs, sent, answers)
    assert [d["type"] for d in docs] == ["open_shift", "receipt", "close_shift", "open_shift", "receipt"]
    SUMMARY["trials"] += 1
    InFlight().add(1, 1)


# ---------------------------------------------------------------------- the counter itself


def test_only_faults_inside_a_document_count_as_in_flight(rig: Rig) -> None:
    """The emulator's in-flight count (what the suite's figures and thresholds rest on)."""
    emu = rig.emulator()
    driver = AtolDriver(emu.url, timeout=2.0)
    driver.connect()
    try:
        # A drop after a status read between documents: fired, not in flight.
        emu.drop_after_tasks(1)
        with pytest.raises(LinkError):
            driver.status()
        assert (emu.faults_fired, emu.faults_in_flight) == (1, 0)
        driver.close()
        driver.connect()
        # Paper out at the receipt's close: inside the document.
        emu.paper_out(before="close_receipt")
        assert driver.sell(make_receipt()).printed is False
        assert (emu.faults_fired, emu.faults_in_flight) == (2, 1)
        emu.paper_in()
        # A power cut after the reads that follow the document: outside it.
        emu.power_off()
        emu.power_on()
        assert emu.faults_in_flight == 1
        # A power cut with a receipt open (92 typed at the device's keyboard): inside it.
        with emu.device.lock:
            emu.device.state.mode = Mode.REGISTRATION
            emu.device.open_receipt(1)
        emu.power_off()
        emu.power_on()
        assert (emu.faults_fired, emu.faults_in_flight) == (2, 2)
    finally:
        driver.close()
