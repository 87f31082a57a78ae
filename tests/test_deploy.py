"""End to end through the real servers: Apache httpd + mod_wsgi (the shipped apache/*.conf) and
gunicorn, each in front of an in-process ATOL emulator, fiscalising the 1C receipt of the
original setup (seed 004) byte for byte as 1C:Enterprise sends it.

Nothing is skipped: `make test` installs Apache, mod_wsgi and the system-Python venv first.
Servers listen on free ports of 127.0.0.1 and are always stopped (see tests/e2e.py).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import e2e
import pytest

from kktapp.atol.emulator import Emulator

# The seed's receipt, serialised the way 1C's ЗаписьJSON with Символы.Таб does: tab-indented
# UTF-8, no BOM, sent with a form content type.
RECEIPT = {
    "DocNumber": "ТР00-003655",
    "DocDate": "06.10.2017",
    "DocSumm": 1950,
    "Goods": {
        "Position_1": {
            "Name": "Наименование товара",
            "Price": 325.12,
            "Quantity": 6,
            "Tax": 18,
            "PositionSumm": 1950,
        }
    },
}
ONEC_HEADERS = {"Content-Type": "application/x-www-form-urlencoded;charset=utf-8"}

USER, PASSWORD = "kassa1", "e2e-secret-1"


def onec_body(doc_number: str) -> bytes:
    return json.dumps(dict(RECEIPT, DocNumber=doc_number), ensure_ascii=False, indent="\t").encode("utf-8")


def failure(srv: e2e.ServerProcess, status: int, body: bytes) -> str:
    """Assertion message: the answer and the tail of the server's logs."""
    return f"HTTP {status}: {body.decode('utf-8', 'replace')[:2000]}\n{srv.log_tail()}"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[Emulator]:
    emulator = Emulator(state_path=tmp_path / "emulator-state.json", log_path=tmp_path / "emulator-documents.jsonl")
    emulator.start("127.0.0.1", 0)
    try:
        yield emulator
    finally:
        emulator.stop()


def site_settings(emu: Emulator) -> dict[str, Any]:
    """What a sysadmin puts into /etc/kkt/site.py, pointed at the emulator."""
    from werkzeug.security import generate_password_hash

    return {
        "DEVICE_URL": emu.url,
        "AUTH_REQUIRED": True,
        "ONEC_ALLOWED_ADDRESSES": ["127.0.0.1"],
        "USERS": {USER: {"password_hash": generate_password_hash(PASSWORD), "role": "admin"}},
        "KKT_WAIT_TIMEOUT": 30,
        "LOG_LEVEL": "INFO",
    }


def fiscalise_through(srv: e2e.ServerProcess, emu: Emulator, doc_number: str) -> dict[str, Any]:
    """POST /kkt as 1C does; check the answer and the fiscal document the device closed."""
    status, headers, body = srv.post("/kkt", onec_body(doc_number), headers=ONEC_HEADERS)
    assert status == 200, failure(srv, status, body)
    assert headers["content-type"].startswith("application/json")
    answer = json.loads(body)
    assert answer["result_code"] == 0, answer
    assert isinstance(answer["check_number"], int) and answer["check_number"] > 0, answer
    assert answer["result_description"], answer

    receipts = [d for d in emu.documents() if d["type"] == "receipt"]
    assert len(receipts) == 1, receipts
    doc = receipts[0]
    assert doc["receipt_type"] == "sell"
    assert doc["total"] == 195000  # kopecks
    assert doc["receipt_number"] == answer["check_number"]
    assert [item["name"] for item in doc["items"]] == ["Наименование товара"]
    assert answer["fiscal_document_number"] == doc["fd_number"]
    assert answer["fiscal_sign"] == doc["fiscal_sign"]

    # A retry of the same document (1C lost the answer) is answered, not printed again.
    status, _, body = srv.post("/kkt", onec_body(doc_number), headers=ONEC_HEADERS)
    assert status == 200, failure(srv, status, body)
    assert json.loads(body)["check_number"] == answer["check_number"]
    assert len([d for d in emu.documents() if d["type"] == "receipt"]) == 1
    return answer


def check_status_page(srv: e2e.ServerProcess) -> None:
    """GET /kkt: the page for a person, and the same as JSON."""
    status, headers, body = srv.get("/kkt")
    assert status == 200, failure(srv, status, body)
    assert headers["content-type"].startswith("text/html")
    assert "ККТ" in body.decode("utf-8")
    status, headers, body = srv.get("/kkt", headers={"Accept": "application/json"})
    assert status == 200, failure(srv, status, body)
    assert headers["content-type"].startswith("application/json")
    json.loads(body)


def check_api_auth(srv: e2e.ServerProcess) -> None:
    """The Authorization header reaches the application (WSGIPassAuthorization On under Apache)."""
    status, _, body = srv.get("/api/v1/devices")
    assert status == 401, failure(srv, status, body)
    status, _, body = srv.get("/api/v1/devices", headers=basic(USER, PASSWORD))
    assert status == 200, failure(srv, status, body)


@pytest.mark.parametrize("vhost", ["kkt.conf", "kkt-ssl.conf"])
def test_apache_mod_wsgi_fiscalises_a_1c_receipt(vhost: str, emu: Emulator) -> None:
    with e2e.start_apache(site_settings(emu), vhost=vhost) as srv:
        # The application runs in the mod_wsgi daemon as www-data, from the system-Python venv.
        _, headers, _ = srv.get("/kkt")
        assert "mod_wsgi" in headers.get("server", ""), headers
        check_status_page(srv)
        doc_number = "ТР00-apache-" + vhost.removesuffix(".conf")
        fiscalise_through(srv, emu, doc_number)
        check_api_auth(srv)
        # The journal and the service's own log went where the site settings said.
        assert (srv.data_dir / "journal.sqlite3").exists()
        log_text = (srv.log_dir / "kkt.log").read_text(encoding="utf-8")
        assert doc_number in log_text
        assert PASSWORD not in log_text


def test_gunicorn_fiscalises_a_1c_receipt(emu: Emulator, tmp_path: Path) -> None:
    settings = e2e.write_settings(
        tmp_path / "site.py",
        JOURNAL_PATH=str(tmp_path / "journal.sqlite3"),
        LOG_FILE=str(tmp_path / "kkt.log"),
        **site_settings(emu),
    )
    with e2e.start_gunicorn(settings, workers=2, threads=4) as srv:
        _, headers, _ = srv.get("/kkt")
        assert "gunicorn" in headers.get("server", ""), headers
        check_status_page(srv)
        fiscalise_through(srv, emu, "ТР00-gunicorn")
        check_api_auth(srv)
        assert "ТР00-gunicorn" in (tmp_path / "kkt.log").read_text(encoding="utf-8")
