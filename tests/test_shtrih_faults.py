"""The fault suite (tests/test_faults.py) on Shtrih-M: whatever breaks, exactly one document per key.

The in-process trials of tests/test_faults.py are adopted unchanged: the link dropped after
every command of a receipt, half an answer frame, a broken LRC, paper running out before each
printing step; the shift over 24 h with drops; 16 clients on 3 devices under two services with
drops all along (the ATOL trial's own injector: aimed at the receipt's close, ``close_receipt``
meaning FF45 here, or after 1-12 commands every 50-200 ms); the power cut at random moments.
Only the rig differs: Shtrih-M emulators and drivers. Trials of its own walk a power cut
through the commands of a receipt (0x8D, FF46, 0x89, FF45) and lose the answers of cash in/out
(0x50, 0x51), which a device forms no FN document for, so that only 0x11's operating document
number settles them.

Its own summary line (trials, faults, duplicates, lost) is printed at the end; the figures in
the closing note come from::

    .venv/bin/python -m pytest -q -p no:cacheprovider -s tests/test_shtrih_faults.py

The two trials that SIGKILL server processes stay ATOL-only: their subprocess rig builds
ATOL devices, and what they test (the journal and the owner hand-over) is protocol-free.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_faults
from fakes import eventually
from test_faults import DONE, InFlight, Rig, arm_at, assert_exactly_once, quiet, read_log, sell, settle

from kktapp.atol.model import Mode as CoreMode
from kktapp.domain import format_rub
from kktapp.journal import Job
from kktapp.owner import policy as owner_mod
from kktapp.service import DeviceConfig, FiscalService
from kktapp.shtrih.driver import CashBefore, ShtrihDriver
from kktapp.shtrih.emulator import Emulator
from kktapp.shtrih.emulator.device import CORE_RECEIPT

log = logging.getLogger(__name__)

for _name in ("test_link_drop_at_every_step_of_a_receipt", "test_expired_shift_with_the_link_dropped_at_every_step",
              "test_device_switched_off_at_random_moments", "test_many_clients_on_several_devices_with_link_drops",
              "test_settlement_report_whose_answer_is_lost_is_found_in_the_fn",
              "test_settlement_report_refused_by_the_device_fails_and_forms_nothing"):
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
    settlement_command = "settlement_report"  # FF38

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


#: The commands of one receipt in the order the driver sends them: 0x8D opens, FF46 the
#: position, 0x89 the subtotal, FF45 closes.
RECEIPT_COMMANDS = ("open_receipt", "operation", "subtotal", "close_receipt_ext")


def test_power_cut_at_every_command_of_a_receipt(rig: ShtrihRig) -> None:
    """The power goes at each command of a receipt (the command done, its answer lost with the
    power, an open receipt kept by the device): exactly one document per key. The random-moment
    trial above leaves where a cut lands to timing; this one walks the receipt, the cut made by
    the emulator itself right after the command (Emulator.power_cut_after_command)."""
    emu = rig.emulator()
    service = rig.service([emu])
    emu.set_device_time(0.003)
    sent: set[str] = set()
    answers: dict[str, dict] = {}
    hits = InFlight()
    for round_ in range(2):
        for command in RECEIPT_COMMANDS:
            key = f"cut-{command}-{round_}-{uuid.uuid4().hex[:6]}"
            quiet(service, emu)
            in_flight_before = emu.faults_in_flight
            # In the emulator's own thread, once the command has run and before its answer
            # leaves: a cut from another thread landed wherever the scheduler let it, at times
            # after the answer went out and the host had moved on to the status reads.
            off = threading.Event()
            arm_at(emu, command, lambda off=off: emu.power_cut_after_command(off.set))
            test_faults.SUMMARY["trials"] += 1
            sent.add(key)
            job = sell(service, key, wait=0)
            assert off.wait(test_faults.SETTLE), f"{command} never ran"
            emu.power_on()
            hits.add(emu.faults_in_flight - in_flight_before, 1)
            job = settle(service, job.id)
            assert job.state == DONE, job
            answers[key] = job.result
    assert_exactly_once(read_log(emu.log_file), sent, answers)
    # Every cut lands inside the receipt (open, or FF45 forming it): the recovery cancels and
    # resends after the first three, and finds FF45's document after the last.
    hits.assert_at_least(2 * len(RECEIPT_COMMANDS), "power cuts")


@pytest.mark.parametrize("documents", [True, False], ids=["fn-document", "no-fn-document"])
def test_lost_cash_in_answer_is_settled_once(rig: ShtrihRig, documents: bool) -> None:
    """The link drops right after 0x50 ran (its answer lost), or after the 0x10 that follows:
    the cash is in the drawer once and the job answers with its document. With an FN document
    per cash-in (the shared core's way) recovery finds it by FF01; without one (a device [S])
    the FD does not move, and only the driver's document counter (0x11) settles it."""
    emu = rig.emulator()
    emu.shtrih.cash_documents = documents
    service = rig.service([emu])
    hits = InFlight()
    settle(service, sell(service, f"warm-{uuid.uuid4().hex[:6]}").id)
    for n, after in enumerate((1, 2)):
        quiet(service, emu)
        drawer = emu.state.cash
        fired = emu.faults_in_flight
        # Armed as 0x50 starts: the drop comes after it, or after the 0x10 polled next.
        arm_at(emu, "cash_in", lambda after=after: emu.drop_after_tasks(after))
        test_faults.SUMMARY["trials"] += 1
        job = service.submit("cash_in", {"amount": 1000 + n}, key=f"cash-{n}-{uuid.uuid4().hex[:6]}", wait=0)
        job = settle(service, job.id)
        hits.add(emu.faults_in_flight - fired, 1)
        assert job.state == DONE, job
        assert emu.state.cash == drawer + 1000 + n
        cash_docs = [d for d in read_log(emu.log_file) if d["type"] == "cash_in"]
        if documents:
            assert len(cash_docs) == n + 1
            assert job.result["fiscal_document_number"] == cash_docs[-1]["fd_number"]
        else:
            assert not cash_docs and job.result["fiscal_document_number"] == 0
            assert job.result["receipt_number"] == emu.shtrih.document_number()
    hits.assert_at_least(1, "link drops")


def test_cash_in_refused_for_paper_is_not_repeated_or_lost(rig: ShtrihRig) -> None:
    """A device without cash FN documents answers 0x50 with a paper error: the counter did not
    move, so the job fails with the device's code and the drawer is unchanged; with paper back,
    the next cash-in goes in once (the counted path of the owner's device-error settling)."""
    emu = rig.emulator()
    emu.shtrih.cash_documents = False
    service = rig.service([emu])
    settle(service, sell(service, f"warm-{uuid.uuid4().hex[:6]}").id)
    quiet(service, emu)
    drawer = emu.state.cash
    emu.paper_out(before="cash_in")
    job = service.submit("cash_in", {"amount": 700}, key=f"paper-{uuid.uuid4().hex[:6]}", wait=0)
    job = settle(service, job.id)
    assert job.state != DONE and job.error and job.error["code"], job
    assert emu.state.cash == drawer
    emu.paper_in()
    job = settle(service, service.submit("cash_in", {"amount": 700}, key=f"paper-{uuid.uuid4().hex[:6]}",
                                         wait=0).id)
    assert job.state == DONE, job
    assert emu.state.cash == drawer + 700


def count_commands(emu: Emulator) -> Counter[str]:
    """How many times the emulator has run each command from now on (by name)."""
    seen: Counter[str] = Counter()
    own = emu._before_command

    def count(name: str) -> None:
        own(name)
        seen[name] += 1

    emu._before_command = count  # type: ignore[method-assign]
    return seen


def warmed_up(rig: ShtrihRig) -> tuple[Emulator, FiscalService, Counter[str]]:
    """One register and its service after a first receipt, the owner idle; the emulator's
    commands counted from here on (count_commands)."""
    emu = rig.emulator()
    service = rig.service([emu])
    settle(service, sell(service, f"warm-{uuid.uuid4().hex[:6]}").id)
    quiet(service, emu)
    return emu, service, count_commands(emu)


def test_lost_cash_answer_is_settled_once(rig: ShtrihRig) -> None:
    """On a device as the sources describe it (0x50/0x51 form no FN document: the emulator's
    default), the link drops right after 0x50 and right after 0x51 ran, their answers lost. The
    FD number cannot tell; 0x11's operating document number, kept in the journal before sending,
    moved by one: each job is done exactly once with FD 0 and the device's document number, the
    drawer moved once per job, and neither operation is ever sent again."""
    emu = rig.emulator()
    assert not emu.shtrih.cash_documents
    service = rig.service([emu])
    hits = InFlight()
    settle(service, sell(service, f"warm-{uuid.uuid4().hex[:6]}").id)
    ran = count_commands(emu)
    for kind, amount in (("cash_in", 5000), ("cash_out", 1200)):
        quiet(service, emu)
        drawer, fired, in_flight = emu.state.cash, emu.faults_fired, emu.faults_in_flight
        number = emu.shtrih.document_number()
        arm_at(emu, kind, lambda: emu.drop_after_tasks(1))  # it runs, its answer is lost
        test_faults.SUMMARY["trials"] += 1
        key = f"{kind}-{uuid.uuid4().hex[:6]}"
        job = settle(service, service.submit(kind, {"amount": amount}, key=key, wait=0).id)
        assert emu.faults_fired == fired + 1, "the link never dropped"
        hits.add(emu.faults_in_flight - in_flight, 1)
        assert job.state == DONE, job
        # The counted job's "before": 0x11's number and the drawer.
        assert CashBefore.decode(job.fd_before) == (number, drawer)
        assert emu.state.cash == drawer + (amount if kind == "cash_in" else -amount)
        assert emu.shtrih.document_number() == (number + 1) & 0xFFFF
        assert (job.result["fiscal_document_number"], job.result["fiscal_sign"], job.result["total"]) == (0, "", amount)
        assert job.result["receipt_number"] == emu.shtrih.document_number()
        # The same key again: the journal answers, the device is not asked.
        again = service.submit(kind, {"amount": amount}, key=key, wait=test_faults.SETTLE)
        assert again.id == job.id and again.state == DONE
        assert ran[kind] == 1, f"{kind} sent {ran[kind]} times"
    assert [d["type"] for d in emu.cash_operations()] == ["cash_in", "cash_out"]
    assert not [d for d in read_log(emu.log_file) if d["type"] in ("cash_in", "cash_out")]
    hits.assert_at_least(2, "link drops")


def cash_in_left_to_operator(service: FiscalService, emu: Emulator, ran: Counter[str], fault: Callable[[], None],
                             reason: str) -> Job:
    """Submit a cash-in of 45.00 with ``fault`` armed at its 0x50; wait until the job is unknown
    with ``reason`` in its explanation and the owner has looked at the device again a few times
    since, and check it was never sent again. The job."""
    arm_at(emu, "cash_in", fault)
    test_faults.SUMMARY["trials"] += 1
    job = service.submit("cash_in", {"amount": 4500}, key=f"undecided-{uuid.uuid4().hex[:6]}", wait=0)

    def waits_for_operator() -> bool:
        got = service.get_job(job.id)
        return got is not None and got.state == "unknown" and reason in (got.reason or "")

    assert eventually(waits_for_operator, test_faults.SETTLE, 0.02), service.get_job(job.id)
    looks = ran["full_status"]
    assert eventually(lambda: ran["full_status"] >= looks + 3, test_faults.SETTLE, 0.02), \
        "the owner stopped looking at the number"
    assert ran["cash_in"] == 1, "sent again"
    settled = service.get_job(job.id)
    assert settled is not None and settled.state == "unknown" and service.unsettled(1)
    InFlight().add(1, 1)
    return settled


def test_lost_cash_answer_the_number_cannot_settle_is_left_to_the_operator(
        rig: ShtrihRig, monkeypatch: pytest.MonkeyPatch) -> None:
    """The answer to 0x50 is lost and one more document was formed at the device meanwhile (a
    cash-in at its keyboard): 0x11's number moved by two, so nobody can tell from it whether
    0x50 ran. The job stays unknown with the reason for the operator and is never sent again."""
    monkeypatch.setattr(owner_mod, "UNDECIDED_RECHECK", 0.05)
    emu, service, ran = warmed_up(rig)
    drawer = emu.state.cash

    def keyboard_then_drop() -> None:
        # A cash-in of 3.00 at the keyboard (its own operating document), then 0x50 runs and
        # its answer is lost.
        emu.state.cash += 300
        emu.state.cash_only_documents += 1
        emu.drop_after_tasks(1)

    cash_in_left_to_operator(service, emu, ran, keyboard_then_drop, "на 2 документа вместо одного")
    assert emu.state.cash == drawer + 300 + 4500


def test_lost_cash_answer_with_someone_elses_document_is_never_taken_for_done(
        rig: ShtrihRig, monkeypatch: pytest.MonkeyPatch) -> None:
    """0x50 is taken but never runs (the link goes as it arrives), and meanwhile a cash-in of
    3.00 was made at the device's keyboard: 0x11's number moved by exactly one, as if 0x50 had
    run. The drawer, kept beside the number, moved by 3.00 instead of 45.00, so the job is left
    to the operator, not recorded as a cash-in that never happened; it is never sent again."""
    monkeypatch.setattr(owner_mod, "UNDECIDED_RECHECK", 0.05)
    emu, service, ran = warmed_up(rig)
    drawer, number = emu.state.cash, emu.shtrih.document_number()

    def keyboard_then_link_lost() -> None:
        emu.state.cash += 300  # a cash-in of 3.00 at the keyboard: its own operating document
        emu.state.cash_only_documents += 1
        raise OSError("link lost before 0x50 ran")

    job = cash_in_left_to_operator(service, emu, ran, keyboard_then_link_lost, "сдвинулся на один")
    assert emu.shtrih.document_number() == (number + 1) & 0xFFFF
    assert emu.state.cash == drawer + 300, "the cash-in ran after all"
    assert f"было {format_rub(drawer)} ₽, после неё было бы {format_rub(drawer + 4500)} ₽" in job.reason


def test_cash_in_behind_a_receipt_left_open_is_done_once(rig: ShtrihRig) -> None:
    """A receipt another program opened while the owner held the link (its memory says none):
    0x50 is refused with 0x4A. The counter did not move, so the owner reads the FN, annuls the
    stale receipt and sends the cash-in once more: the drawer moves once and the job is done,
    where it failed before (tests/test_owner_paths.py has the same on ATOL)."""
    emu, service, ran = warmed_up(rig)
    drawer = emu.state.cash
    sale = CORE_RECEIPT[0]  # 0x8D's type 0, a sale, in the shared core's numbering
    arm_at(emu, "cash_in", lambda: emu.shtrih.in_mode(CoreMode.REGISTRATION).open_receipt(sale))
    job = settle(service, service.submit("cash_in", {"amount": 2500}, key=f"open-{uuid.uuid4().hex[:6]}", wait=0).id)
    assert job.state == DONE and job.attempts == 2, job
    assert ran["cash_in"] == 2 and emu.state.cash == drawer + 2500
    assert not emu.state.receipt_open
