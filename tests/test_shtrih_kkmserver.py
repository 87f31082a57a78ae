"""The KKM Server contract suite (tests/test_kkmserver.py) once more with Shtrih-M registers.

Adopted as tests/test_shtrih_contracts.py adopts the others (its own module: its ``printed``
fixture is not the compat suite's); ATOL-only tests are listed there.
"""

from __future__ import annotations

import sys

import pytest
import test_kkmserver
from test_shtrih_contracts import adopt, app_config, emulator, emulator2, shtrih_text  # noqa: F401

from kktapp.shtrih.driver import ShtrihDriver

adopt(test_kkmserver, sys.modules[__name__].__dict__)


@pytest.fixture
def printed(monkeypatch: pytest.MonkeyPatch) -> list:
    """The suite's printer spy, on the Shtrih driver (the suite's own spies on the ATOL one)."""
    seen: list = []
    real = ShtrihDriver.print_text
    monkeypatch.setattr(ShtrihDriver, "print_text", lambda self, lines: seen.append(list(lines)) or real(self, lines))
    return seen
