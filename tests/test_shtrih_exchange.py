"""The 1C file exchange suite (tests/test_exchange.py) once more with Shtrih-M registers.

Its tests are adopted unchanged, as tests/test_shtrih_contracts.py adopts the contract suites:
only the fixtures differ, ``emulator``, ``emulator2`` and the other store's ``emulator3`` being
Shtrih-M emulators and every DEVICES entry on the Shtrih-M protocol. The file formats, the
catalogue and the report come from the journal and the Z report's FN data, which both families
give alike; tests/test_exchange_files.py (no device) and tests/test_exchange_hook.py (a fake
device) have nothing protocol-specific to run again.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest
import test_exchange

# The Shtrih-M devices and settings of the contract suites (imported before adopting, so they win).
from test_shtrih_contracts import adopt, app_config, emulator, emulator2  # noqa: F401

from kktapp.shtrih.emulator import Emulator

adopt(test_exchange, sys.modules[__name__].__dict__)


@pytest.fixture
def emulator3() -> Iterator[Emulator]:
    """The other store's register, a Shtrih-M too."""
    with Emulator(serial="127003") as emu:
        yield emu
