"""What the operator, monitoring and browser tests share: a 1C document and waiting for a condition."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable


def onec(number: str, rub: str = "756.00", **changes: object) -> bytes:
    """A one-position 1C document of ``rub`` roubles as 1C posts it; ``changes`` replace top-level fields."""
    body = {
        "DocNumber": number, "DocDate": dt.date.today().strftime("%d.%m.%Y"), "DocSumm": rub,
        "Goods": {"Position_1": {"Name": "Кофе в зёрнах, 1 кг", "Price": rub, "Quantity": 1, "Tax": 22,
                                 "PositionSumm": rub}},
    }
    body.update(changes)
    return json.dumps(body, ensure_ascii=False).encode()


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll until ``predicate()`` is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")
