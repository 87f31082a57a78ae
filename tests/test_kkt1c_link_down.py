"""A 1C receipt for a register whose link is known to be down waits LINK_DOWN_WAIT, not the whole wait.

The flag comes from the service's ``link_down(device)`` when it has one (a single field read on
every POST) and otherwise from the status snapshot; both ways give the same wait.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
import webtest
from flask import Flask

from kktapp.errors import NotFound
from kktapp.web import kkt1c

WAIT = 20  # KKT_WAIT_TIMEOUT of the conftest app


def receipt(doc: str) -> bytes:
    goods = {"Position_1": {"Name": "Товар", "Price": 100, "Quantity": 1, "Tax": 22, "PositionSumm": 100}}
    body = {"DocNumber": doc, "DocDate": dt.date.today().strftime("%d.%m.%Y"), "DocSumm": 100, "Goods": goods}
    return json.dumps(body, ensure_ascii=False).encode()


@pytest.fixture
def waits(app: Flask, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The ``wait`` every receipt is submitted with (the receipt itself is fiscalised as usual)."""
    service = app.extensions["kkt"]
    seen: list[float] = []
    submit = service.submit_receipt

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["wait"])
        return submit(*args, **kwargs)

    monkeypatch.setattr(service, "submit_receipt", spy)
    return seen


def post(testapp: webtest.TestApp, doc: str) -> None:
    testapp.post("/kkt", params=receipt(doc), content_type="application/x-www-form-urlencoded", status="*")


def test_link_up_waits_the_whole_wait(testapp: webtest.TestApp, waits: list[float]) -> None:
    post(testapp, "up-1")
    assert waits == [WAIT]


def test_snapshot_says_down_without_the_flag() -> None:
    """A service without link_down(): the snapshot's link field decides."""

    class Service:
        def __init__(self, link: str) -> None:
            self.link = link

        def snapshot(self, device: int = 1) -> dict:
            if device != 1:
                raise NotFound(f"ККТ № {device} не настроена")
            return {"link": self.link, "queue": {}}

    assert kkt1c._link_known_down(Service("down"), 1) is True
    assert kkt1c._link_known_down(Service("ok"), 1) is False
    assert kkt1c._link_known_down(Service("down"), 2) is False


def test_link_down_flag_is_used_without_the_snapshot(app: Flask, testapp: webtest.TestApp, waits: list[float],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    service = app.extensions["kkt"]
    asked: list[int] = []

    def link_down(device: int) -> bool:
        asked.append(device)
        return True

    def no_snapshot(device: int = 1) -> dict:
        raise AssertionError("the whole snapshot was read to learn the link state")

    monkeypatch.setattr(service, "link_down", link_down, raising=False)
    monkeypatch.setattr(service, "snapshot", no_snapshot)
    post(testapp, "down-flag-1")
    assert asked == [1]
    assert waits == [kkt1c.LINK_DOWN_WAIT]


def test_unknown_device_is_not_down() -> None:
    class Service:
        def link_down(self, device: int) -> bool:
            raise NotFound(f"ККТ № {device} не настроена")

    assert kkt1c._link_known_down(Service(), 7) is False
