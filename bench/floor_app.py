"""The floor the service's cost is compared with: Flask + one durable SQLite write per request.

``POST /kkt`` takes the same 1C JSON body the service takes, parses it the same way (UTF-8,
fractions as Decimal), writes one row (DocNumber, sum, body) to SQLite in WAL mode with
synchronous=FULL (one fdatasync per commit, as the service's journal) and answers a small JSON
document. Nothing else: no validation, no device, no waiting. Whatever kkt spends beyond this
per receipt is its own cost (bench/bench_service.py prints the ratio).

Served by the same gunicorn as the service (bench/common.py ``Harness.start_service`` with
``app="bench.floor_app:create_app()"``, or ``bench.floor_app:asgi_app()`` behind the service's
own asyncio wrapper when the service runs as deployed); the database path is the
``JOURNAL_PATH`` of the KKT_SETTINGS file the harness writes.
"""

from __future__ import annotations

import json
import os
import runpy
import sqlite3
import threading
import time
from decimal import Decimal

from flask import Flask, Response, request

from kktapp.asgi import DEFAULT_THREADS, BufferedWSGI

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS receipts (id INTEGER PRIMARY KEY, doc_number TEXT NOT NULL,"
    " total TEXT NOT NULL, body TEXT NOT NULL, created REAL NOT NULL)"
)


def create_app() -> Flask:
    """The floor app; the database file comes from KKT_SETTINGS' JOURNAL_PATH."""
    settings = runpy.run_path(os.environ["KKT_SETTINGS"])
    path = str(settings["JOURNAL_PATH"])
    local = threading.local()

    def conn() -> sqlite3.Connection:
        # One connection per thread, as the service's journal keeps.
        db = getattr(local, "db", None)
        if db is None:
            db = sqlite3.connect(path, timeout=30, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(SCHEMA)
            local.db = db
        return db

    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return "floor"

    @app.post("/kkt")
    def receipt() -> Response:
        raw = request.get_data(cache=False, parse_form_data=False)
        body = json.loads(raw.decode("utf-8"), parse_float=Decimal)
        doc_number = str(body["DocNumber"])
        db = conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO receipts (doc_number, total, body, created) VALUES (?, ?, ?, ?)",
                (doc_number, str(body["DocSumm"]), raw.decode("utf-8"), time.time()),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        answer = {"result_code": 0, "result_description": "ok", "doc_number": doc_number}
        return Response(json.dumps(answer, ensure_ascii=False), mimetype="application/json")

    return app


def asgi_app() -> BufferedWSGI:
    """The floor app behind kktapp.asgi's wrapper, for gunicorn's asgi worker (KKT_THREADS threads)."""
    return BufferedWSGI(create_app(), threads=int(os.environ.get("KKT_THREADS", DEFAULT_THREADS)))
