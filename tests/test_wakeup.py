"""Wake-ups between processes sharing a journal: an owner elsewhere wakes a waiter here, and a
job queued here wakes its device's owner elsewhere.

Two service instances on one journal stand for two gunicorn workers (each instance has its own
wake-up socket, as a process would). The waiting instance's fallback poll is set far beyond the
test's wait, so only a wake-up can finish the wait with the answer in time.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest
from fakes import eventually
from test_faults import make_receipt, quiet, rig  # noqa: F401 - the rig fixture

from kktapp import service as service_mod
from kktapp.owner import policy as owner_policy
from kktapp.wakeup import Wakeups


def test_an_announced_job_reaches_the_other_listener_only(tmp_path: Path) -> None:
    got: dict[str, list[str]] = {"a": [], "b": []}
    arrived = threading.Event()

    def on(name: str):
        def wake(job_id: str) -> None:
            got[name].append(job_id)
            arrived.set()
        return wake

    journal = str(tmp_path / "journal.sqlite3")
    a, b = Wakeups(journal, on("a")), Wakeups(journal, on("b"))
    try:
        assert a.listen() and b.listen()
        a.announce("job-1")
        assert arrived.wait(10)
        time.sleep(0.1)  # anything sent to a itself would have arrived by now
        assert got == {"a": [], "b": ["job-1"]}
    finally:
        a.close()
        b.close()
    assert os.listdir(a.directory) == []


def test_an_entry_nobody_listens_on_is_removed(tmp_path: Path) -> None:
    journal = str(tmp_path / "journal.sqlite3")
    a = Wakeups(journal, lambda job_id: None)
    assert a.listen()
    try:
        stale = Path(a.directory) / "999999999-1"  # a process that was killed
        stale.touch()
        a.announce("job-1")
        assert not stale.exists()
        assert os.listdir(a.directory) == [a._name]
    finally:
        a.close()


def owner_of_one_device(rig) -> tuple:  # noqa: F811 - the fixture imported above
    """An emulated register and a service (a "process") that owns it, after one receipt."""
    emu = rig.emulator()
    owner_side = rig.service([emu])
    owner_side.start()
    assert owner_side.submit_receipt(make_receipt(name="Чай", price=1000), key="warm", wait=30).finished
    return emu, owner_side


def test_a_waiter_in_another_process_is_woken_by_the_owner(rig, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(service_mod, "WAIT_WOKEN_POLL", 120.0)
    emu, _owner_side = owner_of_one_device(rig)
    waiting_side = rig.service([emu])  # its owner of device 1 loses the election
    woken: list[str] = []
    real = waiting_side._woken
    monkeypatch.setattr(waiting_side, "_woken", lambda job_id: (woken.append(job_id), real(job_id)))
    waiting_side._wakeups._on_wake = waiting_side._woken
    emu.set_latency(0.2)  # the receipt takes a while: the waiter is asleep when it finishes
    reads: list[str] = []
    for name in ("get", "state_of"):
        original = getattr(waiting_side.journal, name)
        monkeypatch.setattr(waiting_side.journal, name,
                            lambda job_id, _original=original, _name=name: (reads.append(_name), _original(job_id))[1])
    job = waiting_side.submit_receipt(make_receipt(name="Кофе", price=2000), key=f"w-{uuid.uuid4().hex[:6]}", wait=60)
    assert job.finished and job.state == "done", job
    assert job.id in woken
    # The owner announces a job once it has finished: the woken waiter reads the row, once.
    assert reads == ["get"]


def test_a_queued_device_reaches_the_other_listener_as_a_number(tmp_path: Path) -> None:
    queued: list[int] = []
    arrived = threading.Event()

    def on_queued(device: int) -> None:
        queued.append(device)
        arrived.set()

    journal = str(tmp_path / "journal.sqlite3")
    a, b = Wakeups(journal, lambda job_id: None), Wakeups(journal, lambda job_id: None, on_queued)
    try:
        assert a.listen() and b.listen() and b.listening
        a._send("queued:nonsense")  # not a number: dropped, the receiving thread goes on
        a.announce_queued(7)
        assert arrived.wait(10)
        assert queued == [7]
    finally:
        a.close()
        b.close()
    assert not b.listening


def test_a_job_queued_in_another_process_wakes_the_idle_owner(rig, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    # The owner's idle poll is set far beyond the test's wait: only the wake-up the submitting
    # process sends can get the receipt to the device in time.
    monkeypatch.setattr(owner_policy, "WOKEN_POLL_INTERVAL", 120.0)
    emu, owner_side = owner_of_one_device(rig)
    quiet(owner_side, emu)
    owner = owner_side._owners[1]
    # The owner has published its status after the job: its next sleep is the long one.
    assert eventually(lambda: owner.worker.status.dirty_at is None, 10, 0.01)
    time.sleep(0.2)
    submitting_side = rig.service([emu])  # its owner of device 1 loses the election
    job = submitting_side.submit_receipt(make_receipt(name="Кофе", price=2000), key=f"q-{uuid.uuid4().hex[:6]}",
                                         wait=20)
    assert job.finished and job.state == "done", job
