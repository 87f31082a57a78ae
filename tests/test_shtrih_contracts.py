"""The contract suites (1C, JSON API, atol-kkt-service compat) once more with Shtrih-M registers.

The tests of tests/test_kkt1c.py, tests/test_api.py and tests/test_compat.py are adopted here
unchanged; only the fixtures underneath differ: ``emulator`` and ``emulator2`` are Shtrih-M
emulators and the app builds Shtrih drivers (``DEVICE_PROTOCOL = "shtrih"``, the default of
every DEVICES entry). A test whose assertion names an ATOL-only device fact is listed in
ATOL_ONLY with the reason; the same behaviour on Shtrih is checked in test_shtrih_driver.py.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest
import test_api
import test_compat
import test_kkt1c
from _pytest.fixtures import FixtureFunctionDefinition

from kktapp.shtrih import commands
from kktapp.shtrih.emulator import Emulator

#: Tests that assert a fact only ATOL has → why.
_DISCOUNT = ("expects the 1C price in the ATOL position's price field; FF46 has no discount field and its amount "
             "must be price × quantity ± 1 kopeck (§4.5), so the price sent is the price after the discount "
             "(what tag 1079 carries)")
_REGISTRATION = "replaces the ATOL driver's registration read (A4 43); the Shtrih driver has none"
_SERIAL = "expects the ATOL emulator's 14-digit serial; Shtrih's 0x11 carries 4 bytes (fr_drv_ng #72 log)"
_RESET = "general clearing and technological reset are ATOL service commands; Shtrih refuses them (0x37)"
_ELECTRONIC = ("electronic-only receipts: no source says how a Shtrih-M skips printing; the driver sends "
               "1008 and the device prints [U]")
ATOL_ONLY: dict[str, str] = {
    "test_kkt1c__no_paper": "expects ATOL's no-paper code 0x67 (Shtrih: 0x6B, test_shtrih_driver)",
    "test_kkt1c__status_page_html": "expects the ATOL model name on the page",
    "test_kkt1c__changed_rate_and_text_are_logged": "expects ATOL's code page (CP866) to lack « » and log the "
                                                    "change; Shtrih-M's CP1251 prints them as they are",
    "test_kkt1c__seed_example_passes_as_a_line_discount_when_configured": _DISCOUNT,
    "test_kkt1c__seed_example_is_fiscalised_by_default_with_a_line_discount": _DISCOUNT,
    "test_kkt1c__optional_fields_cash_contact_electronic_only": _ELECTRONIC,
    "test_api__electronic_only_receipt": _ELECTRONIC,
    "test_api__device_status_fresh_from_each_device": _SERIAL,
    "test_compat__cash_register_inf_fields_exactly_as_the_seed": _SERIAL,
    "test_compat__two_devices_at_the_same_time": _SERIAL,
    "test_api__resets_for_admin_when_enabled": _RESET,
    "test_compat__resets_for_admin_when_enabled": _RESET,
    "test_compat__seed_reset_examples_succeed_for_admin_when_enabled": _RESET,
    "test_compat__seed_examples_replayed_verbatim_all_succeed": _RESET + " (the seeds include both)",
    "test_kkmserver__list_two_registers": _SERIAL,
    "test_kkmserver__ofd_report_sends_67_9_in_mode_2":
        "ATOL's bytes; Shtrih-M's FF38: test_shtrih_kkmserver.py, test_ofd_report_sends_ff38",
    "test_kkmserver__get_data_kkt_session_state_fn_ofd": _SERIAL,
    "test_kkmserver__routing_num_device_zero_kkt_number_inn": _SERIAL,
    "test_kkmserver__inn_from_registration_data_when_the_driver_reads_it": _REGISTRATION,
    "test_kkmserver__num_device_zero_by_tax_variant": _REGISTRATION,
    "test_kkmserver__a_tax_variant_the_register_is_not_registered_for_is_refused_naming_the_field":
        "the registration check before the receipt is the ATOL driver's (A4 43); the Shtrih driver has no "
        "registration read, and FF45 carries the system to the device, which decides",
    "test_kkt1c__paper_runs_out_after_fiscalisation":
        "expects ATOL's answer for a copy owed after paper ran out: the service prints none on ATOL "
        "(kktapp/atol/model.py, REPRINT_OWED_COPY); on Shtrih-M it prints it once paper is back "
        "(the fault suite's paper trials, test_shtrih_faults.py)",
    "test_kkmserver__depositing_and_payment_cash":
        "expects CheckNumber 0 for PaymentCash: the ATOL driver names no FN document for 4F; the Shtrih-M "
        "emulator's shared core forms one for 0x51 and its driver reports it (kktapp/shtrih/model.py, DOC_CASH)",
    "test_exchange__sales_by_code_on_two_stores_and_the_report_files":
        "expects the Z report's shift counters the exchange reconciles with, read by the ATOL driver's "
        "shift_totals (58); no source gives the Shtrih-M money registers of a shift's income and outcome, "
        "so the Shtrih driver has none and the report is written without that check [U]",
}


def adopt(module: Any, here: dict[str, Any]) -> None:
    """Bring a suite's tests (renamed after their module) and its fixtures into the namespace
    ``here`` of a test module (a fixture name already there wins)."""
    prefix = module.__name__.removeprefix("test_")
    for name, obj in vars(module).items():
        if isinstance(obj, FixtureFunctionDefinition) and name not in here:
            here[name] = obj
        elif name.startswith("test_") and callable(obj):
            new = f"test_{prefix}__{name.removeprefix('test_')}"
            if new in ATOL_ONLY:
                obj = pytest.mark.skip(reason=f"ATOL only: {ATOL_ONLY[new]}")(obj)
            here[new] = obj


for _suite in (test_kkt1c, test_api, test_compat):
    adopt(_suite, sys.modules[__name__].__dict__)


@pytest.fixture(autouse=True)
def shtrih_text(monkeypatch: pytest.MonkeyPatch) -> None:
    """The 1C suite's "name as the device stores it" in Shtrih's code page (cp1251 has «»)."""
    monkeypatch.setattr(test_kkt1c, "on_device",
                        lambda name: commands.encode_text(name).decode(commands.model.ENCODING))


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """A Shtrih-M emulator on a free loopback port."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emulator2() -> Iterator[Emulator]:
    """A second Shtrih-M emulator (another serial)."""
    with Emulator(serial="999999") as emu:
        yield emu


@pytest.fixture
def app_config(app_config: dict[str, Any]) -> dict[str, Any]:
    """The shared settings, every device on the Shtrih-M protocol."""
    app_config["DEVICE_PROTOCOL"] = "shtrih"
    return app_config
