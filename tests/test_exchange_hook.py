"""The Z report hook: every Z report the owner forms reaches the service's observers exactly once.

Over the in-memory FakeDevice: a Z report on request, by the 24-hour rule (the owner's own check
and the device's refusal), and one whose answer was lost and that recovery finds in the FN.
"""

from __future__ import annotations

import threading

import pytest
from fakes import FakeDevice, FakeDriver, eventually, make_receipt

from kktapp.errors import LinkError
from kktapp.service import DeviceConfig, FiscalService, fingerprint


@pytest.fixture
def observed(tmp_path):
    """(device, service, calls): a service over one FakeDevice whose Z reports are recorded."""
    device = FakeDevice()
    service = FiscalService(str(tmp_path / "journal.sqlite3"), [DeviceConfig(1, "Касса 1", "fake://1")],
                            driver_factory=lambda cfg: FakeDriver(device), status_refresh=0.2)
    calls: list[tuple[int, int]] = []
    lock = threading.Lock()

    def observer(number, result, driver):
        assert driver is not None  # the owner's live driver: counters can be read at once
        with lock:
            calls.append((number, result.shift_number))

    service.shift_observers.append(observer)
    yield device, service, calls
    service.stop()
    service.journal.close()


def sell(service: FiscalService, key: str):
    receipt = make_receipt(name=f"Товар {key}")
    job = service.submit_receipt(receipt, key=key, fingerprint=fingerprint({"k": key}), wait=10)
    assert job.state == "done", job
    return job


def test_z_on_request(observed):
    device, service, calls = observed
    sell(service, "1")
    assert service.submit("close_shift", wait=10).state == "done"
    assert calls == [(1, device.shift_number)]


def test_z_by_the_24_hour_rule(observed):
    device, service, calls = observed
    first = sell(service, "1").fiscal_result().shift_number
    device.advance_clock(25)
    sell(service, "2")
    assert calls == [(1, first)]


def test_z_after_the_device_refuses_an_expired_shift(observed):
    device, service, calls = observed
    first = sell(service, "1").fiscal_result().shift_number
    device.fn_says_expired = True
    sell(service, "2")
    assert calls == [(1, first)]


def test_z_whose_answer_was_lost_is_reported_once_recovered(observed):
    device, service, calls = observed
    shift = sell(service, "1").fiscal_result().shift_number
    device.inject("close_shift", "after", LinkError())
    service.submit("close_shift", wait=0)
    assert eventually(lambda: calls == [(1, shift)])
    assert [d["type"] for d in device.documents].count("close_shift") == 1
    sell(service, "2")
    assert calls == [(1, shift)]


def test_a_failing_observer_does_not_stop_the_queue(observed):
    device, service, calls = observed

    def broken(*_):
        raise RuntimeError("observer bug")

    service.shift_observers.insert(0, broken)
    sell(service, "1")
    assert service.submit("close_shift", wait=10).state == "done"
    assert sell(service, "2").state == "done" and len(calls) == 1
