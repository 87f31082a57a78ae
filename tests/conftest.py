"""Shared fixtures for the web tests: an in-process ATOL emulator, the app wired to it, WebTest.

Sections below belong to different test modules' owners; add your own section, keep the
shared fixtures unchanged (other modules rely on their behaviour).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import webtest
from flask import Flask

from kktapp import create_app
from kktapp.atol.emulator import Emulator

# --------------------------------------------------------------------------- shared: emulator, app


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """An ATOL 55Ф emulator listening on 127.0.0.1 (a free port); stopped after the test."""
    emu = Emulator()
    emu.start("127.0.0.1", 0)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def app_config(emulator: Emulator, tmp_path: Any) -> dict[str, Any]:
    """Settings for ``create_app``; a test may change them before ``app`` is first used."""
    return {
        "TESTING": True,
        "DEVICE_URL": emulator.url,
        "DEVICES": None,
        "JOURNAL_PATH": str(tmp_path / "journal.sqlite3"),
        "LOG_FILE": str(tmp_path / "kkt.log"),
        "LOG_LEVEL": "INFO",
        "AUTH_REQUIRED": False,
        "USERS": {},
        "TEST_MODE": False,
        "ACCEPT_LEGACY_VAT": True,
        "DEFAULT_PAYMENT": "electronic",
        "TAXATION": None,
        "CASHIER_NAME": "",
        "CASHIER_INN": "",
        # Long enough for a 100-position receipt on a loaded CI machine, short enough that a
        # broken test fails instead of hanging.
        "KKT_WAIT_TIMEOUT": 20,
        "STATUS_REFRESH_SECONDS": 1,
    }


@pytest.fixture
def app(app_config: dict[str, Any]) -> Iterator[Flask]:
    """The application against the emulator; the service's threads are stopped at teardown."""
    application = create_app(app_config)
    try:
        yield application
    finally:
        application.extensions["kkt"].stop()
        # create_app adds a file handler per LOG_FILE to the package logger; drop this test's.
        pkg = logging.getLogger("kktapp")
        for handler in list(pkg.handlers):
            if getattr(handler, "baseFilename", None) == app_config.get("LOG_FILE"):
                pkg.removeHandler(handler)
                handler.close()


@pytest.fixture
def testapp(app: Flask) -> webtest.TestApp:
    """WebTest client; requests come from 127.0.0.1 like a local 1C server."""
    return webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "127.0.0.1"})
