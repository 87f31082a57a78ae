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
        service = application.extensions["kkt"]
        service.stop()
        # Per-thread SQLite handles outlive the threads; hundreds of tests would otherwise run
        # the process past 1024 descriptors, where select() in the serial link fails.
        service.journal.close()
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


# --------------------------------------------------------------------------- API, compat, auth (issue 6)
# Two emulated devices, auth on, one cashier and one admin. Owned by the API/compat engineer.

#: login → (password, role); hashed with few pbkdf2 rounds so tests stay fast (production: scrypt).
API_USERS = {"kassa": ("kassa-secret-1", "cashier"), "admin": ("admin-secret-1", "admin")}


@pytest.fixture
def emulator2() -> Iterator[Emulator]:
    """A second emulated device (serial differs), for two-device tests."""
    emu = Emulator(serial="00106201279999")
    emu.start("127.0.0.1", 0)
    try:
        yield emu
    finally:
        emu.stop()


@pytest.fixture
def api_config(app_config: dict[str, Any], emulator: Emulator, emulator2: Emulator) -> dict[str, Any]:
    """app_config with devices 1 and 2, HTTP Basic on and the API_USERS."""
    from werkzeug.security import generate_password_hash

    app_config.update(
        DEVICES=[
            {"number": 1, "name": "Касса зала", "url": emulator.url},
            {"number": 2, "name": "Касса сайта", "url": emulator2.url},
        ],
        AUTH_REQUIRED=True,
        USERS={
            login: {"password_hash": generate_password_hash(pw, method="pbkdf2:sha256:1000"), "role": role}
            for login, (pw, role) in API_USERS.items()
        },
        API_DEFAULT_WAIT=20,
        ALLOW_DEVICE_RESET=False,
    )
    return app_config


class ApiClients:
    """WebTest clients of one app: anonymous, cashier and admin, from a non-local address."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        # One environ dict per client: TestApp.authorization writes into it.
        self.anon = webtest.TestApp(app, extra_environ={"REMOTE_ADDR": "192.0.2.10"})
        self.cashier = self.as_user("kassa", API_USERS["kassa"][0])
        self.admin = self.as_user("admin", API_USERS["admin"][0])

    def as_user(self, login: str, password: str, addr: str = "192.0.2.10") -> webtest.TestApp:
        """A client with any credentials (wrong ones too) from a given address."""
        client = webtest.TestApp(self.app, extra_environ={"REMOTE_ADDR": addr})
        client.authorization = ("Basic", (login, password))
        return client


@pytest.fixture
def api_app(api_config: dict[str, Any], request: pytest.FixtureRequest) -> Flask:
    """The shared ``app`` built from api_config (two devices, auth on)."""
    return request.getfixturevalue("app")


@pytest.fixture
def clients(api_app: Flask) -> ApiClients:
    """Anonymous, cashier and admin WebTest clients of api_app."""
    return ApiClients(api_app)
