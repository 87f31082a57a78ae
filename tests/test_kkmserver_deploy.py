"""KKM Server's /Execute through the real servers: Apache + mod_wsgi (apache/kkt.conf) and gunicorn.

What only a real server shows: the ``WSGIScriptAlias /Execute`` line reaches the application
with the full path, the Authorization header gets through (WSGIPassAuthorization), and with
two worker processes a ``GetRezult`` that lands in another process than its command still
finds the answer (the IdCommand registry and the journal are shared SQLite files).
Request bodies are alexanderfefelov/kkmserver-api's (``reference.conf`` posts to
``/Execute/sync`` with Basic User/user; ``RegisterCheckRequest.scala``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import e2e
import test_deploy
from test_deploy import PASSWORD, USER, basic, failure, site_settings

from kktapp.atol.emulator import Emulator

#: The same emulator with a state file and a document log as the 1C deployment tests.
emu = test_deploy.emu


def check(id_command: str, timeout: int = 60) -> bytes:
    return json.dumps({
        "Command": "RegisterCheck", "IdCommand": id_command, "NumDevice": 0, "Timeout": timeout,
        "IsFiscalCheck": True, "TypeCheck": 0, "NotPrint": False, "CashierName": "Казакова Н.А.",
        "CashierVATIN": "430601071197", "TaxVariant": "", "AdditionalProps": [],
        "CheckStrings": [{"Register": {"Name": "Сапоги женские", "Quantity": 1.0, "Price": 1500.0, "Amount": 1500.0,
                                       "Department": 0, "Tax": 22, "SignMethodCalculation": 4,
                                       "SignCalculationObject": 1}}],
        "Cash": 0.0, "ElectronicPayment": 1500.0, "AdvancePayment": 0.0, "Credit": 0.0, "CashProvision": 0.0,
    }, ensure_ascii=False).encode()


def execute(srv: e2e.ServerProcess, body: bytes, path: str = "/Execute/sync") -> dict[str, Any]:
    headers = {"Content-Type": "application/json; charset=UTF-8", **basic(USER, PASSWORD)}
    status, resp_headers, raw = srv.post(path, body, headers=headers)
    assert status == 200, failure(srv, status, raw)
    assert resp_headers["content-type"].startswith("application/json")
    return json.loads(raw)


def receipts(emu: Emulator) -> list[dict]:
    return [d for d in emu.documents() if d["type"] == "receipt"]


def exercise(srv: e2e.ServerProcess, emu: Emulator) -> None:
    """A receipt, its repeat, an asynchronous one polled with GetRezult, and a refusal without a password."""
    answer = execute(srv, check("deploy-1"))
    assert answer["Status"] == 0 and answer["CheckNumber"] == receipts(emu)[-1]["fd_number"], answer
    assert execute(srv, check("deploy-1"), path="/Execute") == answer
    queued = execute(srv, check("deploy-2", timeout=1))
    assert queued["Status"] in (0, 1, 4), queued
    deadline = time.monotonic() + 30
    while True:
        # Each poll may be served by either worker process.
        rez = execute(srv, json.dumps({"Command": "GetRezult", "IdCommand": "deploy-2"}).encode())
        if rez["Rezult"]["Status"] == 0:
            break
        assert rez["Rezult"]["Status"] in (1, 4) and time.monotonic() < deadline, rez
        time.sleep(0.1)
    assert len(receipts(emu)) == 2
    status, _, raw = srv.post("/Execute", b'{"Command": "List"}', headers={"Content-Type": "application/json"})
    assert status == 200 and json.loads(raw)["Status"] == 2, failure(srv, status, raw)


def test_apache_serves_execute(emu: Emulator) -> None:
    with e2e.start_apache(site_settings(emu), vhost="kkt.conf") as srv:
        exercise(srv, emu)


def test_gunicorn_serves_execute(emu: Emulator, tmp_path: Path) -> None:
    settings = e2e.write_settings(tmp_path / "site.py", JOURNAL_PATH=str(tmp_path / "journal.sqlite3"),
                                  LOG_FILE=str(tmp_path / "kkt.log"), **site_settings(emu))
    with e2e.start_gunicorn(settings, workers=2, threads=4) as srv:
        exercise(srv, emu)
