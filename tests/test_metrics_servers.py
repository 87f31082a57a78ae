"""/metrics, /healthz and the operator page through the real servers: Apache + mod_wsgi (two daemon
processes, the shipped apache/kkt.conf) and gunicorn with two workers. Every process must answer
the same receipt count: the numbers come from the shared journal, not from process memory.
"""

from __future__ import annotations

import json
from pathlib import Path

import e2e
from prometheus_client.parser import text_string_to_metric_families
from test_deploy import ONEC_HEADERS, PASSWORD, USER, basic, emu, failure, onec_body, site_settings  # noqa: F401

from kktapp.atol.emulator import Emulator

SCRAPES = 12


def receipts_done(text: str) -> float:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "kkt_receipts_total" and s.labels == {"device": "1", "result": "done"}:
                return s.value
    return 0.0


def check_monitoring(srv: e2e.ServerProcess, prefix: str) -> None:
    status, _, body = srv.post("/kkt", onec_body("ТР00-metrics"), headers=ONEC_HEADERS)
    assert status == 200 and json.loads(body)["result_code"] == 0, failure(srv, status, body)
    # Fresh connections, so the requests spread over the server's processes.
    counts = []
    for _ in range(SCRAPES):
        status, headers, body = srv.get(f"{prefix}/metrics", headers={"Connection": "close"})
        assert status == 200, failure(srv, status, body)
        assert headers["content-type"].startswith("text/plain; version=0.0.4")
        counts.append(receipts_done(body.decode()))
    assert counts == [1.0] * SCRAPES, counts
    status, _, body = srv.get(f"{prefix}/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok", failure(srv, status, body)
    status, _, body = srv.get(f"{prefix}/operator")
    assert status == 401, failure(srv, status, body)
    status, _, body = srv.get(f"{prefix}/operator", headers=basic(USER, PASSWORD))
    assert status == 200 and "ТР00-metrics" in body.decode(), failure(srv, status, body)


def test_apache_two_processes_answer_the_same_metrics(emu: Emulator) -> None:  # noqa: F811
    with e2e.start_apache(site_settings(emu), vhost="kkt.conf") as srv:
        check_monitoring(srv, "/kkt")


def test_gunicorn_two_workers_answer_the_same_metrics(emu: Emulator, tmp_path: Path) -> None:  # noqa: F811
    settings = e2e.write_settings(tmp_path / "site.py", JOURNAL_PATH=str(tmp_path / "journal.sqlite3"),
                                  LOG_FILE=str(tmp_path / "kkt.log"), **site_settings(emu))
    with e2e.start_gunicorn(settings, workers=2, threads=4) as srv:
        check_monitoring(srv, "")
